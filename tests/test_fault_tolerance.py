"""Trial- and experiment-level fault tolerance through a real Prefect API and Dask cluster:
errored-trial restore flags, max_failures, flow retries, resume policies, the driver lease,
fail-fast, restore from a moved directory and from S3."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Running

import prefect_tune as tune
from prefect_tune import FailureConfig, ResultGrid, RunConfig, TuneConfig, Tuner
from prefect_tune.exceptions import (
    ExperimentExistsError,
    ExperimentLockedError,
    ExperimentNotFoundError,
    TrialError,
)
from prefect_tune.prefect import experiment_tag
from prefect_tune.state import Lease, TrialStatus
from prefect_tune.storage import Storage, StorageSpec, layout
from prefect_tune.testing import flow_runs_named
from tests import trainables

pytestmark = pytest.mark.slow


@pytest.fixture
def dirs(tmp_path):
    paths = {name: tmp_path / name for name in ("store", "log", "poison")}
    for path in paths.values():
        path.mkdir()
    return paths


def steps_run(dirs, key) -> list[int]:
    log = dirs["log"] / f"{key}.log"
    return [int(line.split()[1]) for line in log.read_text().splitlines()] if log.exists() else []


def poison(dirs, *keys) -> None:
    for key in keys:
        (dirs["poison"] / str(key)).write_text("")


def flaky_tuner(dirs, runner, name, keys, *, failure_config=None, **run_kwargs) -> Tuner:
    space = {
        "key": tune.grid_search(list(keys)),
        "log_dir": str(dirs["log"]),
        "poison_dir": str(dirs["poison"]),
        "fail_at": 3,
        "steps": 6,
    }
    return Tuner(
        trainables.flaky,
        param_space=space,
        tune_config=TuneConfig(metric="loss", mode="min", max_concurrent_trials=3),
        run_config=RunConfig(
            name=name,
            storage_path=str(dirs["store"]),
            failure_config=failure_config or FailureConfig(),
            **run_kwargs,
        ),
        task_runner=runner,
    )


def test_errored_trials_and_the_restore_flags(prefect_api, runner, dirs):
    keys = ["a", "b", "c", "d", "e", "f"]
    poison(dirs, "b", "e")
    results = flaky_tuner(dirs, runner, "flags", keys).fit()
    assert results.num_errors == 2 and results.num_terminated == 4
    assert sorted(r.config["key"] for r in results if r.error) == ["b", "e"]
    assert "trial b failed after step 3" in str(
        next(r.error for r in results if r.config["key"] == "b")
    )
    (run,) = flow_runs_named("flags")
    assert run.state.is_failed()  # the UI and automations see the errored trials
    path = str(dirs["store"] / "flags")
    assert Tuner.can_restore(path) and not Tuner.can_restore(str(dirs["store"] / "nothing"))

    # The default restore skips errored trials; nothing runs.
    before = {k: steps_run(dirs, k) for k in keys}
    results = Tuner.restore(path, trainables.flaky, task_runner=runner).fit()
    assert results.num_errors == 2 and results.num_terminated == 4
    assert {k: steps_run(dirs, k) for k in keys} == before

    # resume_errored: from the checkpoint of step 3, only steps 4..6 run again.
    poison(dirs, "b")  # still poisoned: b resumes after step 3, so it never reaches the raise
    results = Tuner.restore(path, trainables.flaky, resume_errored=True, task_runner=runner).fit()
    assert results.num_errors == 0 and results.num_terminated == 6
    assert steps_run(dirs, "b") == [1, 2, 3, 4, 5, 6]
    assert steps_run(dirs, "e") == [1, 2, 3, 4, 5, 6]
    for k in ("a", "c", "d", "f"):  # finished trials never ran again
        assert steps_run(dirs, k) == [1, 2, 3, 4, 5, 6]
    for result in results:
        assert list(result.metrics_dataframe["training_iteration"]) == [1, 2, 3, 4, 5, 6]


def test_restart_errored_runs_them_from_scratch(prefect_api, runner, dirs):
    poison(dirs, "x")
    results = flaky_tuner(dirs, runner, "restart", ["x", "y"]).fit()
    assert results.num_errors == 1
    os.unlink(dirs["poison"] / "x")
    path = str(dirs["store"] / "restart")
    results = Tuner.restore(path, trainables.flaky, restart_errored=True, task_runner=runner).fit()
    assert results.num_errors == 0 and results.num_terminated == 2
    assert steps_run(dirs, "x") == [1, 2, 3, 1, 2, 3, 4, 5, 6]
    assert steps_run(dirs, "y") == [1, 2, 3, 4, 5, 6]
    (x,) = [r for r in results if r.config["key"] == "x"]
    assert list(x.metrics_dataframe["training_iteration"]) == [1, 2, 3, 4, 5, 6]


def test_max_failures_resumes_a_failed_trial_from_its_checkpoint(prefect_api, runner, dirs):
    poison(dirs, "m")
    tuner = Tuner(
        trainables.flaky,
        param_space={
            "key": "m",
            "log_dir": str(dirs["log"]),
            "poison_dir": str(dirs["poison"]),
            "fail_at": 2,
            "fail_once": True,
        },
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(
            name="retry",
            storage_path=str(dirs["store"]),
            failure_config=FailureConfig(max_failures=2),
        ),
        task_runner=runner,
    )
    results = tuner.fit()
    (result,) = list(results)
    assert result.error is None and results.num_terminated == 1 and result.num_failures == 1
    assert steps_run(dirs, "m") == [1, 2, 3, 4, 5, 6]  # resumed after the checkpoint of step 2
    trial_file = Storage.open(StorageSpec(str(dirs["store"] / "retry")))
    (trial_dir,) = trial_file.list_dir(layout.TRIALS_DIR)
    state = trial_file.read_json(layout.trial_file(trial_dir))
    assert state["num_failures"] == 1 and len(state["attempts"]) == 2
    assert state["attempts"][0]["error"] == "RuntimeError: trial m failed after step 2"
    assert state["attempts"][1]["start_iteration"] == 2


def test_flow_retry_resumes_only_errored_trials(prefect_api, runner, dirs):
    poison(dirs, "p")
    space_keys = ["p", "q", "r"]
    tuner = Tuner(
        trainables.flaky,
        param_space={
            "key": tune.grid_search(space_keys),
            "log_dir": str(dirs["log"]),
            "poison_dir": str(dirs["poison"]),
            "fail_at": 4,
            "fail_once": True,
        },
        tune_config=TuneConfig(metric="loss", mode="min", max_concurrent_trials=3),
        run_config=RunConfig(name="flow-retry", storage_path=str(dirs["store"]), flow_retries=1),
        task_runner=runner,
    )
    results = tuner.fit()
    assert results.num_errors == 0 and results.num_terminated == 3
    assert steps_run(dirs, "p") == [1, 2, 3, 4, 5, 6]
    assert steps_run(dirs, "q") == [1, 2, 3, 4, 5, 6]  # finished: not run by the retry
    (run,) = flow_runs_named("flow-retry")
    assert run.state.is_completed() and run.run_count == 2


def test_user_flow_retry_resumes_the_experiment(prefect_api, runner, dirs):
    poison(dirs, "u")

    @flow(retries=1)
    def nightly():
        results = Tuner(
            trainables.flaky,
            param_space={
                "key": tune.grid_search(["u", "v"]),
                "log_dir": str(dirs["log"]),
                "poison_dir": str(dirs["poison"]),
                "fail_at": 2,
                "fail_once": True,
            },
            tune_config=TuneConfig(metric="loss", mode="min"),
            run_config=RunConfig(name="nightly-exp", storage_path=str(dirs["store"])),
            task_runner=runner,
        ).fit()
        if results.errors:
            raise RuntimeError("some trials errored")
        return results.num_terminated

    assert nightly() == 2
    assert steps_run(dirs, "u") == [1, 2, 3, 4, 5, 6]
    assert steps_run(dirs, "v") == [1, 2, 3, 4, 5, 6]


def test_resume_policies(prefect_api, runner, dirs):
    def make(resume, keys=("k",)):
        return flaky_tuner(dirs, runner, "policy", keys, resume=resume)

    with pytest.raises(ExperimentNotFoundError, match="resume='required'"):
        make("required").fit()
    make("auto").fit()
    with pytest.raises(ExperimentExistsError, match="already stored"):
        make("never").fit()
    assert make("required").fit().num_terminated == 1
    results = make("overwrite", keys=("k", "l")).fit()
    assert results.num_terminated == 2
    assert steps_run(dirs, "k") == [1, 2, 3, 4, 5, 6] * 2  # overwritten: ran again from scratch


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lease(dirs, name, **fields) -> None:
    storage = Storage.open(StorageSpec(str(dirs["store"] / name)))
    fields.setdefault("pid", os.getpid())
    lease = Lease(owner=uuid.uuid4().hex, host=socket.gethostname(), **fields)
    storage.write_bytes(layout.LEASE_FILE, lease.model_dump_json().encode())


def test_live_lease_blocks_a_second_driver_and_expired_one_is_taken_over(prefect_api, runner, dirs):
    tuner = flaky_tuner(dirs, runner, "leased", ["z"])
    write_lease(dirs, "leased", flow_run_id=str(uuid.uuid4()), flow_run_name="other-run", ttl_s=600)
    with pytest.raises(ExperimentLockedError, match="other-run") as info:
        tuner.fit()
    assert "lease_ttl_s" in str(info.value)
    assert steps_run(dirs, "z") == []  # nothing ran, nothing lost
    # The same holder, not renewed for longer than its time to live: taken over.
    write_lease(dirs, "leased", ttl_s=5, renewed_at=time.time() - 10)
    assert flaky_tuner(dirs, runner, "leased", ["z"]).fit().num_terminated == 1


def experiment_tag_of(dirs, name) -> str:
    return experiment_tag(Storage.open(StorageSpec(str(dirs["store"] / name))).url)


async def _running_flow_run(
    name: str, *, flow_name: str = "killed-driver", tags: tuple[str, ...] = ()
) -> uuid.UUID:
    """A RUNNING flow run, as a killed driver leaves its own (with its experiment's tag)."""
    async with get_client() as client:
        created = await client.create_flow_run(
            flow=flow(name=flow_name)(lambda: None), name=name, tags=list(tags)
        )
        await client.set_flow_run_state(created.id, Running(), force=True)
        return created.id


async def _state_of(run_id):
    async with get_client() as client:
        return (await client.read_flow_run(run_id)).state


def test_takeover_marks_the_killed_run_crashed(prefect_api, runner, dirs):
    old_run_id = asyncio.run(
        _running_flow_run("killed-run", tags=(experiment_tag_of(dirs, "taken"),))
    )
    write_lease(
        dirs, "taken", flow_run_id=str(old_run_id), flow_run_name="killed-run", pid=_dead_pid()
    )
    results = flaky_tuner(dirs, runner, "taken", ["t"]).fit()
    assert results.num_terminated == 1

    state = asyncio.run(_state_of(old_run_id))
    assert state.is_crashed()
    (new_run,) = flow_runs_named("taken")
    assert str(new_run.id) in state.message
    experiment_state = Storage.open(StorageSpec(str(dirs["store"] / "taken"))).read_json(
        layout.EXPERIMENT_STATE_FILE
    )
    assert [r["flow_run_id"] for r in experiment_state["flow_runs"]] == [str(new_run.id)]


def test_a_driver_killed_before_taking_the_lease_is_marked_crashed(prefect_api, runner, dirs):
    """Its record under drivers/ is all that is left of it: the next driver marks its flow run
    CRASHED and tidies the record up; a live driver's record is left alone."""
    tags = (experiment_tag_of(dirs, "unleased"),)
    dead_id = asyncio.run(_running_flow_run("died-starting", tags=tags))
    live_id = asyncio.run(_running_flow_run("still-starting", tags=tags))
    store = Storage.open(StorageSpec(str(dirs["store"] / "unleased")))
    for run_id, name, pid in (
        (dead_id, "died-starting", _dead_pid()),
        (live_id, "still-starting", os.getpid()),
    ):
        record = Lease(
            owner=str(run_id),
            host=socket.gethostname(),
            pid=pid,
            flow_run_id=str(run_id),
            flow_run_name=name,
        )
        store.write_bytes(layout.driver_file(str(run_id)), record.model_dump_json().encode())
    assert flaky_tuner(dirs, runner, "unleased", ["u"]).fit().num_terminated == 1
    (new_run,) = flow_runs_named("unleased")
    dead = asyncio.run(_state_of(dead_id))
    assert dead.is_crashed() and str(new_run.id) in dead.message
    assert asyncio.run(_state_of(live_id)).is_running()
    assert store.list_dir(layout.DRIVERS_DIR) == [f"{live_id}.json"]  # its own record is gone too


def test_records_naming_flow_runs_of_no_experiment_leave_them_alone(
    prefect_api, runner, dirs, caplog
):
    """A planted lease.json and drivers/<id>.json name running flow runs that are not runs of
    the experiment (another flow's, and a user's flow that shares the experiment's name): the
    driver takes the experiment over but leaves both runs RUNNING, names the records in a
    warning, and removes only the record that is provably stale."""
    other = asyncio.run(_running_flow_run("someone-elses-run", flow_name="nightly-etl"))
    namesake = asyncio.run(_running_flow_run("namesake-run", flow_name="planted"))
    write_lease(
        dirs, "planted", flow_run_id=str(other), flow_run_name="someone-elses-run", pid=_dead_pid()
    )
    store = Storage.open(StorageSpec(str(dirs["store"] / "planted")))
    for file_id, run_id in ((str(namesake), namesake), ("not-a-flow-run-id", other)):
        record = Lease(
            owner=file_id,
            host=socket.gethostname(),
            pid=_dead_pid(),
            flow_run_id=str(run_id),
            flow_run_name="planted",
        )
        store.write_bytes(layout.driver_file(file_id), record.model_dump_json().encode())
    with caplog.at_level(logging.WARNING, logger="prefect_tune"):
        assert flaky_tuner(dirs, runner, "planted", ["p"]).fit().num_terminated == 1
    assert asyncio.run(_state_of(other)).is_running()
    assert asyncio.run(_state_of(namesake)).is_running()
    (new_run,) = flow_runs_named("planted")
    assert experiment_tag_of(dirs, "planted") in new_run.tags
    # The record of a dead driver goes; the one that is no record of any flow run stays.
    assert store.list_dir(layout.DRIVERS_DIR) == ["not-a-flow-run-id.json"]
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{store.uri(layout.LEASE_FILE)} names flow run someone-elses-run" in warned
    assert f"{store.uri(layout.driver_file(str(namesake)))} names flow run namesake-run" in warned
    assert f"{store.uri(layout.driver_file('not-a-flow-run-id'))} is not a driver record" in warned


def test_an_attempt_its_driver_left_running_is_closed_when_the_trial_resumes(
    prefect_api, runner, dirs
):
    """A trial whose driver was killed mid-attempt shows that attempt RUNNING in trial.json;
    the attempt that resumes it records it as interrupted, not as a failure."""
    assert flaky_tuner(dirs, runner, "left", ["l"]).fit().num_terminated == 1
    store = Storage.open(StorageSpec(str(dirs["store"] / "left")))
    (trial_dir,) = store.list_dir(layout.TRIALS_DIR)
    rel = layout.trial_file(trial_dir)
    trial = store.read_json(rel)
    trial["status"] = trial["attempts"][-1]["status"] = "RUNNING"
    trial["attempts"][-1]["ended_at"] = None
    store.write_json(rel, trial)
    snapshot = store.read_json(layout.EXPERIMENT_STATE_FILE)  # as the killed driver left it
    snapshot["finished"] = False
    snapshot["trials"][0]["status"] = "RUNNING"
    store.write_json(layout.EXPERIMENT_STATE_FILE, snapshot)
    (result,) = flaky_tuner(dirs, runner, "left", ["l"]).fit()
    assert result.status is TrialStatus.TERMINATED
    first, second = store.read_json(rel)["attempts"]
    assert first["status"] == "PAUSED" and "Interrupted" in first["error"]
    assert first["ended_at"] is not None and second["status"] == "TERMINATED"
    assert store.read_json(rel)["num_failures"] == 0
    assert steps_run(dirs, "l") == [1, 2, 3, 4, 5, 6]  # resumed from step 6: nothing re-ran


def test_fail_fast_leaves_unfinished_trials_restorable(prefect_api, runner, dirs):
    poison(dirs, "f0")
    space = {
        "key": tune.grid_search(["f0", "f1", "f2"]),
        "log_dir": str(dirs["log"]),
        "poison_dir": str(dirs["poison"]),
        "fail_at": 1,
        "steps": 40,
        "sleep": tune.sample_from(lambda spec: 0.0 if spec.config.key == "f0" else 0.2),
    }

    def make(fail_fast):
        return Tuner(
            trainables.flaky,
            param_space=space,
            tune_config=TuneConfig(metric="loss", mode="min", max_concurrent_trials=3),
            run_config=RunConfig(
                name=f"ff-{fail_fast}",
                storage_path=str(dirs["store"]),
                failure_config=FailureConfig(fail_fast=fail_fast),
            ),
            task_runner=runner,
        )

    results = make(True).fit()
    statuses = {r.config["key"]: r.status for r in results}
    assert statuses["f0"] is TrialStatus.ERROR
    assert statuses["f1"] in (TrialStatus.PAUSED, TrialStatus.PENDING)
    assert statuses["f2"] in (TrialStatus.PAUSED, TrialStatus.PENDING)
    assert len(steps_run(dirs, "f1")) < 40
    os.unlink(dirs["poison"] / "f0")
    path = str(dirs["store"] / "ff-True")
    results = Tuner.restore(
        path, trainables.flaky, resume_errored=True, param_space=space, task_runner=runner
    ).fit()
    assert results.num_terminated == 3
    for result in results:
        assert list(result.metrics_dataframe["training_iteration"]) == list(range(1, 41))

    poison(dirs, "f0")
    with pytest.raises(TrialError, match="f0"):
        make("raise").fit()


def test_restore_a_moved_experiment_and_from_s3(prefect_api, runner, dirs, s3_server):
    poison(dirs, "m1")
    flaky_tuner(dirs, runner, "moving", ["m1", "m2"]).fit()
    moved = dirs["store"].parent / "elsewhere" / "renamed"
    shutil.copytree(dirs["store"] / "moving", moved)
    os.unlink(dirs["poison"] / "m1")
    results = Tuner.restore(
        str(moved), trainables.flaky, resume_errored=True, task_runner=runner
    ).fit()
    assert results.num_terminated == 2 and results.experiment_path == str(moved)
    assert (
        ResultGrid.from_path(str(dirs["store"] / "moving")).num_errors == 1
    )  # the original is untouched

    # The same experiment uploaded to S3 and restored from its URI on "another machine".
    bucket = s3_server.new_bucket()
    remote = Storage.open(StorageSpec(f"s3://{bucket}/tune/exp", s3_server.options))
    for rel, _ in (Storage.open(StorageSpec(str(dirs["store"] / "moving"))).walk_files()).items():
        remote.write_bytes(rel, (dirs["store"] / "moving" / rel).read_bytes())
    Storage._cache.clear()
    url = f"s3://{bucket}/tune/exp"
    assert Tuner.can_restore(url, storage_options=s3_server.options)
    results = Tuner.restore(
        url,
        trainables.flaky,
        resume_errored=True,
        storage_options=s3_server.options,
        task_runner=runner,
    ).fit()
    assert results.num_terminated == 2
    assert [r.metrics["training_iteration"] for r in results] == [6, 6]
