"""A trial's ``print`` and ``logging`` output reaches the Prefect logs of its task run, on both
dispatch paths, from trials in Dask worker processes (two at once on one worker), read back
through the API by task run id."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from prefect_tune import RunConfig, TuneConfig, Tuner, grid_search, testing
from prefect_tune.state import ExperimentStore
from prefect_tune.storage import Storage, StorageSpec
from tests import trainables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def info_cluster(prefect_api: str) -> Iterator[Any]:
    """One worker process of two threads whose Prefect logging level is INFO (the suite runs
    at WARNING, at which Prefect sends no print to the API)."""
    with testing.local_cluster(
        n_workers=1,
        threads_per_worker=2,
        api_url=prefect_api,
        env={"PREFECT_LOGGING_LEVEL": "INFO"},
    ) as cluster:
        yield cluster


@pytest.fixture(params=["fast", "plain"])
def dispatch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "plain":
        monkeypatch.setenv("PREFECT_TUNE_FAST_TRIAL_DISPATCH", "false")
    return str(request.param)


def _task_run_logs(client: Any, task_run_id: str, wanted: int) -> list[Any]:
    """The task run's logs once ``wanted`` of them have reached the API (they are sent in
    batches, after the task run may have ended)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    deadline = time.monotonic() + 60
    while True:
        logs = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[uuid.UUID(task_run_id)]))
        )
        mine = [log for log in logs if "from trial" in log.message]
        if len(mine) >= wanted or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


def test_prints_and_log_records_reach_the_trials_task_run(
    prefect_api: str, info_cluster: Any, tmp_path: Any, dispatch: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect_dask import DaskTaskRunner

    name = f"talks-{dispatch}-{uuid.uuid4().hex[:6]}"
    grid = Tuner(
        trainables.talks,
        param_space={"x": grid_search([1.0, 2.0])},
        tune_config=TuneConfig(metric="loss", mode="min", max_concurrent_trials=2),
        run_config=RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
        task_runner=DaskTaskRunner(address=info_cluster.scheduler_address),
    ).fit()
    assert grid.num_terminated == 2, [r.error for r in grid]
    store = ExperimentStore(Storage.open(StorageSpec(str(tmp_path / name))))
    with get_client(sync_client=True) as client:
        for result in grid:
            trial = store.read_trial(result.path.rpartition("/")[2])
            assert trial is not None and trial.attempts[-1].task_run_id
            logs = _task_run_logs(client, trial.attempts[-1].task_run_id, wanted=4)
            messages = sorted(log.message for log in logs)
            assert [m.split(" from ")[0] for m in messages] == [
                "first print",
                "info",
                "second print",
                "warning",
            ], messages
            assert all(f"trial {result.trial_id} in process " in m for m in messages), messages
            pids = {int(m.rsplit(" ", 1)[1]) for m in messages}
            assert len(pids) == 1 and os.getpid() not in pids  # a Dask worker process
            by_name = {log.message.split(" from ")[0]: log for log in logs}
            assert by_name["info"].name == "tests.trainables.talks"
            assert by_name["warning"].level == 30 and by_name["info"].level == 20
            assert by_name["first print"].level == 20
    from distributed import Client

    with Client(info_cluster) as dask:  # the swap of print ended with the last trial
        assert set(dask.run(trainables.print_is_builtin).values()) == {True}
