"""Crash injection: drivers and workers SIGKILLed, storage writes failing half-way; after the
resume, every promise of DESIGN.md (1-5) is checked against a reference run without faults.

Each experiment is 8 trials x 12 iterations of :func:`tests.crash.trainables.crash_trainable`,
a checkpoint after every iteration, driven by ``python -m tests.crash.driver`` processes that
report to the session's Prefect API. ``CRASH_POINTS=200`` runs 200 random kill points (default:
two chosen seeds, one on local storage and one on S3).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from typing import Any

import pytest

from prefect_tune.testing.side_log import read_side_log
from tests.crash.checks import Reference, check_experiment
from tests.crash.harness import (
    TIMINGS,
    AfterDelay,
    Backend,
    CrashExperiment,
    DefinitionWritten,
    FlowRunStarted,
    Kill,
    MidCheckpoint,
    StateSave,
    TrialFinished,
    TrialStarted,
    group_members,
    local_backend,
    s3_backend,
    unique_name,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# CRASH_POINTS=N runs random points 0..N-1. By default CI runs two whose delay falls while
# trials run (0.43 and 0.54 of the reference duration), a process-group kill on local storage
# and a driver-only kill on S3: a delay early in a run kills it while it starts, one late may
# come after it ended.
SEEDS = range(int(os.environ["CRASH_POINTS"])) if "CRASH_POINTS" in os.environ else (10, 3)


def payload_args(backend: str) -> list[str]:
    """Checkpoints big enough for an upload to be caught half-way: on the local disk 4 payload
    files of 256 KiB; on S3, where each file is a request of its own, 2 of 32 KiB."""
    if backend == "local":
        return ["--payload-files", "4", "--payload-kib", "256"]
    return ["--payload-files", "2", "--payload-kib", "32"]


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
        (MidCheckpoint, "group"),
        (TrialFinished, "group"),
        (StateSave, "driver"),
    ],
}


def test_driver_killed_at_chosen_points(backend, reference, make_experiment):
    exp = make_experiment(backend, payload_args(backend.name))
    for point_class, mode in CHOSEN[backend.name]:
        kill = exp.run_to_kill(point_class(), mode)
        assert kill is not None, f"the experiment finished before {point_class.name}"
        if point_class is MidCheckpoint:
            assert kill.partials, "the kill missed the upload: no partial checkpoint was left"
    exp.run_to_end()
    check_experiment(exp, reference)


def test_driver_killed_before_taking_the_lease(tmp_path, reference, make_experiment):
    """Killed after its flow run started and it announced itself under drivers/, before it
    held the lease (a window of milliseconds, widened here by the test driver): the next run
    marks its flow run CRASHED."""
    exp = make_experiment(local_backend(tmp_path / "store"), ["--delay-lease", "3"])
    assert exp.run_to_kill(FlowRunStarted(), "group") is not None
    exp.run_to_end()
    check_experiment(exp, reference)


def random_point(seed: int, duration_s: float) -> dict[str, Any]:
    """Random point ``seed``: backend (alternating), kill mode, delay, checkpoint size."""
    rng = random.Random(seed)
    return {
        "backend": "local" if seed % 2 == 0 else "s3",
        "mode": "driver" if rng.random() < 0.3 else "group",
        "delay": rng.uniform(0.0, duration_s),
        "big": rng.random() < 0.3,
    }


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed{s}")
def test_driver_killed_at_a_random_point(seed, reference, make_experiment, tmp_path, request):
    point = random_point(seed, reference.duration_s)
    backend = (
        local_backend(tmp_path / "store")
        if point["backend"] == "local"
        else s3_backend(request.getfixturevalue("s3_server"))
    )
    exp = make_experiment(backend, payload_args(backend.name) if point["big"] else [])
    if exp.run_to_kill(AfterDelay(point["delay"]), point["mode"]) is not None:
        exp.run_to_end()
    check_experiment(exp, reference)


# -- trial-level faults ----------------------------------------------------------------------

UPLOAD_FAULT = {"x": [1.0, 5.0], "iteration": 4, "after_files": 2}


def kill_a_worker_mid_trial(exp: CrashExperiment) -> dict[str, Any]:
    """Runs the experiment to its end, SIGKILLing on the way the Dask worker process that runs
    a trial (one without an upload fault) at its iteration 5; returns that trial's last
    side-log event before the kill, with its ``x`` and trial directory."""
    with exp.driver() as driver:
        victim = None
        while victim is None:
            assert driver.running() and driver.elapsed < 240, driver.tail()
            time.sleep(0.01)
            for path in exp.side_log.iterdir():
                runs = [e for e in read_side_log(exp.side_log, path.stem) if e["event"] == "run"]
                last = runs[-1] if runs else None
                if (
                    last
                    and last["x"] not in UPLOAD_FAULT["x"]
                    and 5 <= last["iteration"] <= 8
                    and time.time() - last["time"] < 0.5  # its worker is still on it
                ):
                    victim = last
                    break
        pid = victim["pid"]
        assert pid != driver.proc.pid and pid in group_members(driver.pgid), victim
        os.kill(pid, signal.SIGKILL)
        at = driver.elapsed
        seen = exp.observe()
        (dir_name,) = [d for d, t in seen.trials().items() if t["trial_id"] == victim["trial_id"]]
        victim["dir_name"] = dir_name
        exp.kills.append(
            Kill(
                point=f"dask-worker-{pid}",
                mode="worker",
                at_s=at,
                trials={dir_name: seen.trial(dir_name)},
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
    return victim


@pytest.fixture(scope="module", params=["local", "s3"])
def trial_faults(request, crash_env, tmp_path_factory) -> tuple[CrashExperiment, dict[str, Any]]:
    """One driver run with three trial-level faults: the uploads of the checkpoint of
    iteration 4 of trials x=1 and x=5 fail half-way (once each), and the Dask worker running
    another trial is SIGKILLed at its iteration 5; ``FailureConfig(max_failures=2)``."""
    workdir = tmp_path_factory.mktemp(f"trial-faults-{request.param}")
    backend: Backend = (
        local_backend(workdir / "store")
        if request.param == "local"
        else s3_backend(request.getfixturevalue("s3_server"))
    )
    args = [
        *payload_args(backend.name),
        "--max-failures",
        "2",
        "--fail-upload",
        json.dumps(UPLOAD_FAULT),
    ]
    exp = CrashExperiment(unique_name("trial-faults"), backend, workdir, crash_env, extra_args=args)
    started = time.monotonic()
    victim = kill_a_worker_mid_trial(exp)
    TIMINGS.append((f"trial faults run [{request.param}]", time.monotonic() - started, "1 run"))
    return exp, victim


def test_trials_rerun_from_their_last_committed_checkpoint(trial_faults, reference: Reference):
    """Each faulted trial ran again from its last committed checkpoint (the half-written one
    was never restored) and every trial ended as in the reference run."""
    exp, victim = trial_faults
    check_experiment(
        exp,
        reference,
        failed_trials=frozenset(UPLOAD_FAULT["x"]),
        unchecked=frozenset({victim["x"]}),
    )
    for trial in exp.observe().trials().values():
        if trial["config"]["x"] in UPLOAD_FAULT["x"]:
            first, second = trial["attempts"][:2]
            assert first["status"] == "ERROR" and "injected fault" in first["error"]
            assert second["start_iteration"] == UPLOAD_FAULT["iteration"] - 1


def test_a_dead_worker_is_a_counted_failure_and_a_new_task_run(trial_faults):
    exp, victim = trial_faults
    trial = exp.observe().trial(victim["dir_name"])
    assert trial is not None and trial["status"] == "TERMINATED"
    first, second = trial["attempts"][:2]
    assert trial["num_failures"] == 1, trial["num_failures"]
    assert first["status"] == "ERROR" and first["error"], first
    assert first["task_run_id"] != second["task_run_id"], (first, second)
    # The task run that died with its worker does not show RUNNING forever.
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        lost = client.read_task_run(uuid.UUID(first["task_run_id"]))
    assert lost.state is not None and lost.state.is_crashed(), lost.state
