"""Tag concurrency limits on trial task runs: Prefect's limits hold on trials, and trials only
ask the API for a slot when a limit exists for their tags."""

from __future__ import annotations

import uuid
from itertools import combinations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect_dask import DaskTaskRunner

import prefect_tune as tune
from prefect_tune import RunConfig, TuneConfig, Tuner
from prefect_tune.prefect._fast._engine import TagLimits, internals_are_known
from tests import trainables

pytestmark = pytest.mark.slow


def sleepy_tuner(name, storage_path, scheduler_address):
    return Tuner(
        trainables.timed_sleep,
        param_space={"x": tune.grid_search([1, 2, 3, 4]), "sleep_s": 0.6},
        tune_config=TuneConfig(metric="loss", mode="min", max_concurrent_trials=4),
        run_config=RunConfig(name=name, storage_path=storage_path),
        task_runner=DaskTaskRunner(address=scheduler_address),
    )


def overlapping_pairs(results) -> int:
    spans = [(r.metrics["started"], r.metrics["ended"]) for r in results]
    return sum(1 for a, b in combinations(spans, 2) if a[0] < b[1] and b[0] < a[1])


def test_a_tag_concurrency_limit_caps_an_experiments_trials(prefect_api, dask_cluster, tmp_path):
    free = f"free-{uuid.uuid4().hex[:6]}"
    results = sleepy_tuner(free, str(tmp_path), dask_cluster.scheduler_address).fit()
    assert results.num_terminated == 4
    assert overlapping_pairs(results) >= 1  # four worker threads: without a limit, they overlap

    capped = f"capped-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        # what `prefect concurrency-limit create <experiment name> 1` makes
        client.create_concurrency_limit(tag=capped, concurrency_limit=1)
    results = sleepy_tuner(capped, str(tmp_path), dask_cluster.scheduler_address).fit()
    assert results.num_terminated == 4
    assert overlapping_pairs(results) == 0


def test_tag_limits_are_read_from_the_api_and_cached(prefect_api):
    tag = f"later-{uuid.uuid4().hex[:6]}"
    fresh = TagLimits((tag, "other"), ttl_s=0.0)
    cached = TagLimits((tag,), ttl_s=3600.0)
    with get_client(sync_client=True) as client:
        assert not fresh.limited(client) and not cached.limited(client)
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=f"tag:{tag}", limit=2)
        )
        assert fresh.limited(client)  # read again: the new limit is seen
        assert not cached.limited(client)  # within its time to live, the last answer holds
        assert not TagLimits(()).limited(client)


def test_the_installed_prefect_engine_is_the_one_trials_skip_slot_requests_with():
    # With another Prefect release the fast path is not used (trials go through Prefect's
    # task_runner.submit and every tagged trial asks for a slot, which is slow on a
    # SQLite-backed server): re-check the copy in `_fast/_engine.py` and the rest of
    # `RELIED_ON` against the new Prefect and update PREFECT_INTERNALS_DIGEST.
    assert internals_are_known()
