"""Crash injection: drivers and workers SIGKILLed, storage writes failing half-way; after the
resume, every promise of DESIGN.md (1-5) is checked against a reference run without faults.

Each experiment is 8 trials x 12 iterations of :func:`tests.crash.trainables.crash_trainable`,
a checkpoint after every iteration, driven by ``python -m tests.crash.driver`` processes that
report to the session's Prefect API. ``CRASH_POINTS=200`` runs 200 random kill points (default:
one on local storage and one on S3).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from tests.crash.checks import check_experiment
from tests.crash.harness import (
    AfterDelay,
    DefinitionWritten,
    Kill,
    MidCheckpoint,
    StateSave,
    StateSavedBeforeTrials,
    TrialFinished,
    TrialStarted,
    group_members,
)
from tests.crash.trainables import read_side_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CRASH_POINTS = int(os.environ.get("CRASH_POINTS", "2"))
# Checkpoints big enough (4 files of 256 KiB) that an upload is caught half-way.
BIG_PAYLOAD = ["--payload-files", "4", "--payload-kib", "256"]


def test_reference_run(reference):
    assert sorted(reference.final) == [float(x) for x in range(8)]


# The chosen points, one driver run each, in this order: every run resumes the one before it.
CHOSEN = {
    "local": [
        (DefinitionWritten, "group"),
        (TrialStarted, "driver"),
        (MidCheckpoint, "group"),
        (TrialFinished, "driver"),
        (StateSave, "group"),
    ],
    "s3": [
        (StateSavedBeforeTrials, "group"),
        (MidCheckpoint, "group"),
        (TrialFinished, "group"),
        (StateSave, "driver"),
    ],
}


def test_driver_killed_at_chosen_points(backend, reference, make_experiment):
    exp = make_experiment(backend, BIG_PAYLOAD)
    for point_class, mode in CHOSEN[backend.name]:
        kill = exp.run_to_kill(point_class(), mode)
        assert kill is not None, f"the experiment finished before {point_class.name}"
        if point_class is MidCheckpoint:
            assert kill.partials, "the kill missed the upload: no partial checkpoint was left"
    exp.run_to_end()
    check_experiment(exp, reference)


def random_point(seed: int, duration_s: float) -> tuple[str, str, float, bool]:
    """Backend, kill mode, delay and payload of random point ``seed``."""
    rng = random.Random(seed)
    backend = "local" if seed % 2 == 0 else "s3"
    mode = "driver" if rng.random() < 0.3 else "group"
    delay = rng.uniform(0.0, duration_s)
    big = rng.random() < 0.3
    return backend, mode, delay, big


@pytest.mark.parametrize("seed", range(CRASH_POINTS), ids=lambda s: f"seed{s}")
def test_driver_killed_at_a_random_point(seed, reference, make_experiment, tmp_path, request):
    backend_name, mode, delay, big = random_point(seed, reference.duration_s)
    from tests.crash.conftest import local_backend, s3_backend

    backend = (
        local_backend(tmp_path / "store")
        if backend_name == "local"
        else s3_backend(request.getfixturevalue("s3_server"))
    )
    exp = make_experiment(backend, BIG_PAYLOAD if big else [])
    if exp.run_to_kill(AfterDelay(delay), mode) is not None:
        exp.run_to_end()
    check_experiment(exp, reference)


def test_worker_killed_and_storage_write_failing_mid_trial(backend, reference, make_experiment):
    """One driver run with three trial-level faults: the uploads of the checkpoint of
    iteration 4 of trials x=1 and x=5 fail half-way (once), and the Dask worker running
    another trial is SIGKILLed at its iteration 5. Each trial runs again from its last committed
    checkpoint (``FailureConfig(max_failures=2)``) and ends as in the reference run."""
    fault = {"x": [1.0, 5.0], "iteration": 4, "after_files": 2}
    exp = make_experiment(
        backend, [*BIG_PAYLOAD, "--max-failures", "2", "--fail-upload", json.dumps(fault)]
    )
    with exp.driver() as driver:
        victim = None
        while victim is None:
            assert driver.running() and driver.elapsed < 240, driver.tail()
            time.sleep(0.01)
            for trial in exp.observe().trials().values():
                runs = [
                    e for e in read_side_log(exp.side_log, trial["trial_id"]) if e["event"] == "run"
                ]
                if (
                    trial["config"]["x"] not in fault["x"]
                    and runs
                    and runs[-1]["iteration"] >= 5
                    and runs[-1]["attempt"] == 1
                ):
                    victim = {**runs[-1], "x": trial["config"]["x"], "dir_name": trial["dir_name"]}
                    break
        pid = victim["pid"]
        assert pid != driver.proc.pid and pid in group_members(driver.pgid), victim
        os.kill(pid, signal.SIGKILL)
        seen = exp.observe()
        exp.kills.append(
            Kill(
                point=f"dask-worker-{pid}",
                mode="worker",
                at_s=driver.elapsed,
                trials={victim["dir_name"]: seen.trial(victim["dir_name"])},
                side_log_lengths={
                    victim["trial_id"]: len(read_side_log(exp.side_log, victim["trial_id"]))
                },
                lease=None,
                lineage=[],
                partials=[],
                whole_experiment=False,
            )
        )
        exp.summary = driver.finish(timeout=240)
    check_experiment(
        exp, reference, failed_trials=frozenset(fault["x"]), unchecked=frozenset({victim["x"]})
    )
    for trial in exp.observe().trials().values():
        if trial["config"]["x"] in fault["x"]:
            first, second = trial["attempts"][:2]
            assert first["status"] == "ERROR" and "injected fault" in first["error"]
            assert second["start_iteration"] == 3  # the last committed checkpoint
