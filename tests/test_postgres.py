"""The experiment, fault-tolerance and tag-limit tests that need a Prefect API, run once more
against ``prefect server start`` on PostgreSQL (Prefect's production setup; the rest of the
suite runs on ``prefect_test_harness``'s SQLite). A representative few, to stay within CI's
time: an experiment end to end with its flow and task runs in the API, a failed trial resumed
from its checkpoint, and a tag concurrency limit."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL

from tests import test_experiment, test_fault_tolerance, test_tag_limits

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_runner(postgres_dask_cluster):
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=postgres_dask_cluster.scheduler_address)


@pytest.fixture
def dirs(tmp_path):
    for name in ("store", "log", "poison"):
        (tmp_path / name).mkdir()
    return {name: tmp_path / name for name in ("store", "log", "poison")}


def test_the_api_is_the_postgresql_backed_server(postgres_prefect_api):
    from prefect.client.orchestration import get_client

    assert PREFECT_API_URL.value() == postgres_prefect_api
    with get_client(sync_client=True) as client:
        assert client.api_healthcheck() is None  # None: healthy


def _rows(database_url: str, query: str) -> list[tuple]:
    import asyncio

    import asyncpg

    async def fetch() -> list[tuple]:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            return [tuple(row) for row in await connection.fetch(query)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def test_local_experiment_end_to_end(postgres_prefect_api, postgres_database, pg_runner, tmp_path):
    test_experiment.test_local_experiment_end_to_end(postgres_prefect_api, pg_runner, tmp_path)
    # What the API answered is what PostgreSQL holds.
    (flow_run_id,) = _rows(postgres_database, "select id from flow_run where name = 'local-exp'")
    states = _rows(
        postgres_database,
        f"select state_type from task_run where flow_run_id = '{flow_run_id[0]}'",
    )
    assert [state for (state,) in states] == ["COMPLETED"] * 4


def test_max_failures_resumes_a_failed_trial_from_its_checkpoint(
    postgres_prefect_api, pg_runner, dirs
):
    test_fault_tolerance.test_max_failures_resumes_a_failed_trial_from_its_checkpoint(
        postgres_prefect_api, pg_runner, dirs
    )


def test_a_tag_concurrency_limit_caps_an_experiments_trials(
    postgres_prefect_api, postgres_dask_cluster, tmp_path
):
    test_tag_limits.test_a_tag_concurrency_limit_caps_an_experiments_trials(
        postgres_prefect_api, postgres_dask_cluster, tmp_path
    )
