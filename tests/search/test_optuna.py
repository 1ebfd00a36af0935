"""OptunaSearch as a decision core: space conversion, TPE beats random, exact resume."""

from __future__ import annotations

import math

import pytest

optuna = pytest.importorskip("optuna")

from prefect_tune import space  # noqa: E402
from prefect_tune.exceptions import (  # noqa: E402
    ConfigError,
    DecisionStateMismatchError,
    SearchSpaceError,
)
from prefect_tune.search import BasicVariantGenerator  # noqa: E402
from prefect_tune.search.optuna import OptunaSearch, to_optuna_distributions  # noqa: E402
from tests.schedulers._streams import round_trip  # noqa: E402

BRANIN_SPACE = {"x1": space.uniform(-5, 10), "x2": space.uniform(0, 15)}
BRANIN_MIN = 0.397887


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def test_space_converts_to_optuna_distributions():
    dists, constants = to_optuna_distributions(
        {
            "lr": space.loguniform(1e-4, 1e-1),
            "drop": space.quniform(0.0, 0.5, 0.1),
            "layers": space.randint(1, 5),
            "width": space.qrandint(8, 64, 8),
            "units": space.lograndint(1, 1000),
            "act": space.choice(["relu", "tanh"]),
            "net": {"depth": space.randint(2, 4), "name": "mlp"},
            "epochs": 3,
        }
    )
    d = optuna.distributions
    assert dists == {
        "lr": d.FloatDistribution(1e-4, 1e-1, log=True),
        "drop": d.FloatDistribution(0.0, 0.5, step=0.1),
        "layers": d.IntDistribution(1, 4),  # Ray's upper bound is exclusive
        "width": d.IntDistribution(8, 64, step=8),  # q makes it inclusive
        "units": d.IntDistribution(1, 999, log=True),
        "act": d.CategoricalDistribution(["relu", "tanh"]),
        "net/depth": d.IntDistribution(2, 3),
    }
    assert constants == {"net/name": "mlp", "epochs": 3}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (space.grid_search([1, 2]), "cannot run a grid_search"),
        (space.randn(), "no normal distribution"),
        (space.qloguniform(1e-3, 1.0, 1e-3), "quantize a log scale"),
        (space.qlograndint(1, 100, 2), "log scale"),
        (space.choice([[1], [2]]), "None, bools, numbers or strings"),
        (space.sample_from(lambda: 1), "sample_from"),
        ([space.uniform(0, 1)], "not in lists"),
    ],
)
def test_what_optuna_cannot_sample_is_refused_by_path(value, match):
    with pytest.raises(SearchSpaceError, match=rf'param_space\["a"\]\["b"\]: .*{match}'):
        OptunaSearch({"a": {"b": value}}, metric="y", mode="min")


def test_suggestions_unflatten_and_points_come_first():
    search = OptunaSearch(
        {"net": {"lr": space.uniform(0, 1), "act": "relu"}, "n": space.randint(1, 9)},
        metric="y",
        mode="max",
        points_to_evaluate=[{"net": {"lr": 0.25}, "n": 3}],
        seed=1,
    )
    assert search.suggest("a") == {"net": {"lr": 0.25, "act": "relu"}, "n": 3}
    assert search.suggest("a") == {"net": {"lr": 0.25, "act": "relu"}, "n": 3}  # same id again
    second = search.suggest("b")
    assert 0 <= second["net"]["lr"] <= 1 and second["net"]["act"] == "relu"
    search.on_trial_result("a", {"training_iteration": 1, "y": 0.5})
    search.on_trial_result("a", {"training_iteration": 1, "y": 0.5})  # replayed: once
    search.on_trial_complete("a", {"y": 0.7})
    search.on_trial_complete("b", error=True)
    states = [t.state.name for t in search.study.trials]
    assert states == ["COMPLETE", "FAIL"] and search.study.trials[0].intermediate_values == {1: 0.5}
    assert search.study.direction == optuna.study.StudyDirection.MAXIMIZE


def _run(search, n, start=0):
    """Suggest and complete trials with two running at a time, as a driver would."""
    out = []
    for i in range(start, n):
        config = search.suggest(f"t{i}")
        out.append(config)
        if i >= 1:
            done = out[i - 1 - start] if i - 1 >= start else search.suggest(f"t{i - 1}")
            search.on_trial_complete(f"t{i - 1}", {"y": branin(**done)})
    return out


def test_tpe_beats_random_search_on_branin_over_seeds():
    budget, gaps = 40, {"tpe": [], "random": []}
    for seed in range(3):
        tpe = OptunaSearch(BRANIN_SPACE, metric="y", mode="min", seed=seed)
        configs = _run(tpe, budget)
        gaps["tpe"].append(min(branin(**c) for c in configs) - BRANIN_MIN)
        random = BasicVariantGenerator(random_state=seed)
        random.set_search_properties("y", "min", BRANIN_SPACE, num_samples=budget)
        gaps["random"].append(
            min(branin(**random.suggest(f"t{i}")) for i in range(budget)) - BRANIN_MIN
        )
    assert sum(gaps["tpe"]) < sum(gaps["random"]), gaps


@pytest.mark.parametrize("crash_at", [3, 12, 20])
def test_resume_replays_the_study_and_suggests_exactly_what_it_would_have(crash_at):
    points = [{"x1": 1.0, "x2": 2.0}, {"x1": 3.0}]
    straight = OptunaSearch(BRANIN_SPACE, "y", "min", points_to_evaluate=points, seed=5)
    expected = _run(straight, 25)
    first = OptunaSearch(BRANIN_SPACE, "y", "min", points_to_evaluate=points, seed=5)
    before = _run(first, crash_at)  # t{crash_at - 1} is still running
    stored = round_trip(first.to_state())
    resumed = OptunaSearch(BRANIN_SPACE, "y", "min", points_to_evaluate=points, seed=5)
    resumed.from_state(stored)
    assert resumed.suggest(f"t{crash_at - 1}") == before[-1]  # asked again: not a new one
    after = _run(resumed, 25, start=crash_at)
    assert before + after == expected
    assert [t.params for t in resumed.study.trials] == [t.params for t in straight.study.trials]
    with pytest.raises(DecisionStateMismatchError, match="seed"):
        OptunaSearch(BRANIN_SPACE, "y", "min", points_to_evaluate=points, seed=6).from_state(stored)


def test_a_points_queue_left_at_the_crash_is_evaluated_once():
    points = [{"x1": float(i), "x2": 1.0} for i in range(4)]
    first = OptunaSearch(BRANIN_SPACE, "y", "min", points_to_evaluate=points, seed=0)
    _run(first, 2)
    resumed = OptunaSearch(BRANIN_SPACE, "y", "min", points_to_evaluate=points, seed=0)
    resumed.from_state(round_trip(first.to_state()))
    assert [resumed.suggest(f"t{i}")["x1"] for i in range(2, 5)][:2] == [2.0, 3.0]
    assert [t.params["x1"] for t in resumed.study.trials][:4] == [0.0, 1.0, 2.0, 3.0]


def test_arguments_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"OptunaSearch\(seed=...\)"):
        OptunaSearch(BRANIN_SPACE, sampler=optuna.samplers.RandomSampler(), seed=1)
    with pytest.raises(ConfigError, match=r"OptunaSearch\(sampler=...\)"):
        OptunaSearch(BRANIN_SPACE, sampler="tpe")
    with pytest.raises(ConfigError, match=r"OptunaSearch\(metric=...\)"):
        OptunaSearch(BRANIN_SPACE, metric=["a", "b"], mode="min")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"OptunaSearch\(points_to_evaluate=...\)"):
        OptunaSearch(BRANIN_SPACE, points_to_evaluate=[1])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"OptunaSearch\(metric=...\)"):
        OptunaSearch(BRANIN_SPACE).suggest("t")
    search = OptunaSearch(metric="y", mode="min")
    assert search.set_search_properties(None, None, BRANIN_SPACE)
    assert not OptunaSearch(BRANIN_SPACE).set_search_properties("y", "min", BRANIN_SPACE)
    assert search.suggest("t").keys() == {"x1", "x2"}
