"""Searchers as decision cores: suggestions, limits, and an exact resume from stored state."""

from __future__ import annotations

import pytest

from prefect_tune import space
from prefect_tune.exceptions import ConfigError, DecisionStateMismatchError
from prefect_tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from tests.schedulers._streams import round_trip

SPACE = {"lr": space.loguniform(1e-4, 1e-1), "opt": space.grid_search(["sgd", "adam"])}


def _bound(searcher, num_samples=3, seed=None, config=SPACE):
    assert searcher.set_search_properties("loss", "min", config, num_samples=num_samples, seed=seed)
    return searcher


def test_basic_variant_points_come_first_over_the_grid_and_count_as_samples():
    search = _bound(BasicVariantGenerator([{"lr": 0.5}], random_state=1), num_samples=2)
    configs = [search.suggest(f"t{i}") for i in range(5)]
    assert configs[:2] == [{"lr": 0.5, "opt": "sgd"}, {"lr": 0.5, "opt": "adam"}]
    assert all(c["lr"] != 0.5 for c in configs[2:4]) and configs[4] == Searcher.FINISHED
    more = _bound(BasicVariantGenerator([{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}]), num_samples=1)
    assert [more.suggest(f"t{i}")["lr"] for i in range(6)] == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3]


def test_basic_variant_is_the_engines_generator_with_the_same_seed():
    from prefect_tune.engine import BasicVariantGenerator as EngineGenerator

    search = _bound(BasicVariantGenerator(random_state=7), num_samples=3)
    engine = EngineGenerator(SPACE, num_samples=3, seed=7)
    assert [search.suggest(f"t{i}") for i in range(6)] == [engine.config_for(i) for i in range(6)]
    seeded = _bound(BasicVariantGenerator(), seed=7)  # TuneConfig's seed when random_state=None
    assert seeded.suggest("a") == engine.config_for(0)


def test_basic_variant_resume_neither_repeats_nor_loses_a_suggestion():
    straight = _bound(BasicVariantGenerator(random_state=3), num_samples=4)
    expected = [straight.suggest(f"t{i}") for i in range(9)]
    first = _bound(BasicVariantGenerator(random_state=3), num_samples=4)
    before = [first.suggest(f"t{i}") for i in range(3)]
    resumed = _bound(BasicVariantGenerator(random_state=3), num_samples=4)
    resumed.from_state(round_trip(first.to_state()))
    # The restored driver asks again for t2 (created, maybe not stored) and then goes on.
    assert resumed.suggest("t2") == before[2]
    assert before + [resumed.suggest(f"t{i}") for i in range(3, 9)] == expected
    assert expected[-1] == Searcher.FINISHED
    with pytest.raises(DecisionStateMismatchError, match="seed"):
        _bound(BasicVariantGenerator(random_state=4), num_samples=4).from_state(first.to_state())
    with pytest.raises(DecisionStateMismatchError, match="param_space"):
        _bound(BasicVariantGenerator(random_state=3), 4, config={"lr": 0.1}).from_state(
            first.to_state()
        )


def test_concurrency_limiter_caps_live_trials_and_resumes():
    limiter = ConcurrencyLimiter(_bound(BasicVariantGenerator(random_state=0), 6), 2)
    assert limiter.suggest("a") and limiter.suggest("b")
    assert limiter.suggest("c") is None
    assert limiter.suggest("a") == limiter.searcher.config_for(0)  # asked again: same answer
    limiter.on_trial_complete("a", {"loss": 1.0})
    limiter.on_trial_complete("a", {"loss": 1.0})  # told twice: once
    assert limiter.live_trials == {"b"}
    assert limiter.suggest("c") == limiter.searcher.config_for(2)
    restored = ConcurrencyLimiter(_bound(BasicVariantGenerator(random_state=0), 6), 2)
    restored.from_state(round_trip(limiter.to_state()))
    assert restored.live_trials == {"b", "c"} and restored.suggest("d") is None
    restored.on_trial_complete("b")
    assert restored.suggest("d") == limiter.searcher.config_for(3)
    with pytest.raises(DecisionStateMismatchError, match="max_concurrent"):
        ConcurrencyLimiter(_bound(BasicVariantGenerator(random_state=0), 6), 3).from_state(
            limiter.to_state()
        )


class _Recorder(Searcher):
    def __init__(self):
        super().__init__()
        self.completed: list[str] = []

    def suggest(self, trial_id):
        return {"id": trial_id}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append(trial_id)


def test_concurrency_limiter_batch_tells_the_searcher_once_the_batch_is_done():
    inner = _Recorder()
    limiter = ConcurrencyLimiter(inner, max_concurrent=2, batch=True)
    limiter.suggest("a"), limiter.suggest("b")
    limiter.on_trial_complete("a", {"loss": 1})
    assert inner.completed == [] and limiter.suggest("c") is None
    limiter.on_trial_complete("b", {"loss": 2})
    assert inner.completed == ["a", "b"] and limiter.suggest("c") == {"id": "c"}


def test_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"ConcurrencyLimiter\(max_concurrent=...\)"):
        ConcurrencyLimiter(_Recorder(), 0)
    with pytest.raises(ConfigError, match=r"ConcurrencyLimiter\(searcher=...\)"):
        ConcurrencyLimiter(object(), 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"BasicVariantGenerator\(points_to_evaluate=...\)"):
        BasicVariantGenerator({"lr": 0.1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"BasicVariantGenerator\(random_state=...\)"):
        BasicVariantGenerator(random_state=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"BasicVariantGenerator\(param_space=...\)"):
        BasicVariantGenerator().suggest("t")
    with pytest.raises(NotImplementedError, match="must define suggest"):
        Searcher().suggest("t")
