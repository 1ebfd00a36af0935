"""Search algorithms through ``Tuner.fit()`` on Dask: OptunaSearch against random search on
Branin, ConcurrencyLimiter's cap seen from the trials' own log, restores with the same and
with another search algorithm."""

from __future__ import annotations

import json
import uuid

import pytest

import prefect_tune as tune
from prefect_tune import RunConfig, TuneConfig, Tuner
from prefect_tune.engine import SEARCH_FILE
from prefect_tune.exceptions import DecisionStateMismatchError
from prefect_tune.search import ConcurrencyLimiter
from prefect_tune.search.optuna import OptunaSearch
from tests import trainables

BRANIN = {"x1": tune.uniform(-5, 10), "x2": tune.uniform(0, 15)}
BRANIN_MIN = 0.397887
SEEDS = (0, 1, 2)
BUDGET = 30


def branin_tuner(path, runner, seed, search_alg=None, space=None, num_samples=BUDGET, name=None):
    return Tuner(
        trainables.branin,
        param_space=space or BRANIN,
        tune_config=TuneConfig(
            metric="loss", mode="min", num_samples=num_samples, seed=seed, search_alg=search_alg
        ),
        run_config=RunConfig(
            name=name or f"branin-{uuid.uuid4().hex[:6]}", storage_path=str(path), verbose=0
        ),
        task_runner=runner,
    )


def test_optuna_finds_a_better_branin_minimum_than_random_search(prefect_api, runner, tmp_path):
    optuna_best, random_best = [], []
    for seed in SEEDS:
        found = branin_tuner(tmp_path, runner, seed, OptunaSearch(seed=seed)).fit()
        assert len(found) == BUDGET and not found.errors
        optuna_best.append(found.get_best_result().metrics["loss"])
        drawn = branin_tuner(tmp_path, runner, seed).fit()
        assert len(drawn) == BUDGET
        random_best.append(drawn.get_best_result().metrics["loss"])
    assert min(optuna_best + random_best) >= BRANIN_MIN - 1e-6
    # Over the seeds (each seed alone is noisy: TPE's first 10 trials are random draws too).
    assert sum(optuna_best) / len(SEEDS) < sum(random_best) / len(SEEDS), (
        optuna_best,
        random_best,
    )


def test_concurrency_limiter_caps_trials_running_at_once(prefect_api, runner, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    space = {**BRANIN, "side_log": str(log), "hold_s": 0.3}
    limited = ConcurrencyLimiter(OptunaSearch(seed=0), max_concurrent=2)
    results = branin_tuner(tmp_path, runner, 0, limited, space=space, num_samples=6).fit()
    assert len(results) == 6 and not results.errors
    spans = [json.loads(p.read_text()) for p in log.glob("*.json")]
    assert len(spans) == 6
    # The cluster has 4 worker threads: without the limiter 4 trials would overlap.
    most = max(sum(1 for o in spans if o["start"] <= s["start"] < o["end"]) for s in spans)
    assert most == 2, most


def test_a_restore_takes_the_search_again_and_refuses_another(prefect_api, runner, tmp_path):
    name = f"restore-{uuid.uuid4().hex[:6]}"
    first = branin_tuner(tmp_path, runner, 5, OptunaSearch(seed=5), num_samples=4, name=name)
    first.fit()
    path = str(tmp_path / name)
    with pytest.raises(DecisionStateMismatchError, match="OptunaSearch"):
        Tuner.restore(path, trainables.branin, task_runner=runner).fit()
    with pytest.raises(DecisionStateMismatchError, match="seed"):
        Tuner.restore(
            path, trainables.branin, search_alg=OptunaSearch(seed=6), task_runner=runner
        ).fit()
    with pytest.raises(DecisionStateMismatchError):
        branin_tuner(tmp_path, runner, 5, OptunaSearch(seed=7), num_samples=4, name=name).fit()
    record = json.loads((tmp_path / name / SEARCH_FILE).read_text())
    restored = Tuner.restore(
        path, trainables.branin, search_alg=OptunaSearch(seed=5), task_runner=runner
    ).fit()
    assert len(restored) == 4 and restored.num_terminated == 4
    # Nothing ran again and nothing new was suggested.
    assert (
        json.loads((tmp_path / name / SEARCH_FILE).read_text())["suggested"]
        == (record["suggested"])
    )
