"""Search-space helpers and the grid/random searcher, judged by the configs a user would get."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from prefect_tune import space
from prefect_tune.engine import (
    BasicVariantGenerator,
    describe_param_space,
    space_from_description,
    validate_param_space,
)
from prefect_tune.exceptions import ConfigError, ConfigNotSerializableError, SearchSpaceError

DRAWS = 2000


def draws(domain: space.Domain, n: int = DRAWS, seed: int = 0) -> list[Any]:
    rng = random.Random(seed)
    return [domain.sample(rng) for _ in range(n)]


def is_multiple(value: float, q: float) -> bool:
    return math.isclose(value / q, round(value / q), abs_tol=1e-9)


# -- helpers: bounds, types, distributions ---------------------------------------------------------


def test_uniform_stays_in_bounds_and_centres_on_the_middle() -> None:
    values = draws(space.uniform(-2, 4))
    assert all(isinstance(v, float) and -2 <= v <= 4 for v in values)
    assert statistics.mean(values) == pytest.approx(1.0, abs=0.2)


def test_loguniform_median_is_near_the_geometric_mean() -> None:
    values = draws(space.loguniform(1e-4, 1e-1))
    assert all(1e-4 <= v <= 1e-1 for v in values)
    assert statistics.median(values) == pytest.approx(math.sqrt(1e-4 * 1e-1), rel=0.3)
    # The same distribution whatever the base.
    values_base2 = draws(space.loguniform(1e-4, 1e-1, base=2))
    assert statistics.median(values_base2) == pytest.approx(math.sqrt(1e-5), rel=0.3)


def test_randn_has_the_requested_mean_and_sd() -> None:
    values = draws(space.randn(5, 2))
    assert statistics.mean(values) == pytest.approx(5, abs=0.2)
    assert statistics.stdev(values) == pytest.approx(2, rel=0.1)


def test_quniform_and_qloguniform_give_tidy_multiples_of_q_including_upper() -> None:
    values = draws(space.quniform(0, 1, 0.1))
    assert all(0 <= v <= 1 and is_multiple(v, 0.1) for v in values)
    assert all(len(repr(v)) <= 4 for v in values)  # 0.3, not 0.30000000000000004
    assert set(values) == {round(i / 10, 1) for i in range(11)}

    log_values = draws(space.qloguniform(1e-4, 1e-1, 5e-5))
    assert all(1e-4 <= v <= 1e-1 and is_multiple(v, 5e-5) for v in log_values)
    assert statistics.median(log_values) == pytest.approx(math.sqrt(1e-5), rel=0.3)


def test_qrandn_rounds_to_q() -> None:
    values = draws(space.qrandn(0, 1, 0.5))
    assert all(is_multiple(v, 0.5) for v in values)
    assert statistics.mean(values) == pytest.approx(0, abs=0.1)


def test_randint_excludes_upper_and_reaches_every_other_value() -> None:
    values = draws(space.randint(3, 8))
    assert all(type(v) is int for v in values)
    assert set(values) == {3, 4, 5, 6, 7}


def test_qrandint_includes_upper_like_ray() -> None:
    assert set(draws(space.qrandint(0, 100, 25))) == {0, 25, 50, 75, 100}
    assert set(draws(space.qrandint(1, 4))) == {1, 2, 3, 4}
    # Multiples of q inside the bounds only.
    assert set(draws(space.qrandint(3, 21, 5))) == {5, 10, 15, 20}


def test_lograndint_excludes_upper_and_favours_small_values() -> None:
    values = draws(space.lograndint(1, 1000))
    assert all(type(v) is int and 1 <= v < 1000 for v in values)
    assert statistics.median(values) == pytest.approx(31, rel=0.35)


def test_qlograndint_includes_upper_and_gives_multiples_of_q() -> None:
    values = draws(space.qlograndint(10, 100, 10))
    assert all(type(v) is int and 10 <= v <= 100 and v % 10 == 0 for v in values)
    assert 100 in values


def test_choice_returns_every_category_as_an_independent_copy() -> None:
    domain = space.choice([[1, 2], "b", None])
    values = draws(domain, 300)
    assert [1, 2] in values and "b" in values and None in values
    first = next(v for v in values if isinstance(v, list))
    first.append(3)
    assert domain.categories[0] == [1, 2]


def test_choice_accepts_tuples_and_numpy_arrays() -> None:
    assert set(draws(space.choice((1, 2)), 100)) == {1, 2}
    values = draws(space.choice(np.array([1, 2])), 100)
    assert set(values) == {1, 2} and all(type(v) is int for v in values)


def test_grid_search_returns_rays_plain_dict() -> None:
    assert space.grid_search([1, 2]) == {"grid_search": [1, 2]}
    assert space.grid_search(range(3)) == {"grid_search": [0, 1, 2]}


def test_integer_bounds_written_as_floats_are_accepted() -> None:
    assert space.lograndint(1, 1e3).to_json()["upper"] == 1000  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        (space.uniform(0, 1), {"type": "uniform", "lower": 0.0, "upper": 1.0}),
        (space.quniform(0, 1, 0.5), {"type": "quniform", "lower": 0.0, "upper": 1.0, "q": 0.5}),
        (
            space.loguniform(1e-4, 0.1),
            {"type": "loguniform", "lower": 1e-4, "upper": 0.1, "base": 10},
        ),
        (
            space.qloguniform(1e-4, 0.1, 1e-4, base=2),
            {"type": "qloguniform", "lower": 1e-4, "upper": 0.1, "q": 1e-4, "base": 2},
        ),
        (space.randn(), {"type": "randn", "mean": 0.0, "sd": 1.0}),
        (space.qrandn(1, 2, 0.5), {"type": "qrandn", "mean": 1.0, "sd": 2.0, "q": 0.5}),
        (space.randint(0, 5), {"type": "randint", "lower": 0, "upper": 5}),
        (space.qrandint(0, 10), {"type": "qrandint", "lower": 0, "upper": 10, "q": 1}),
        (space.lograndint(1, 10), {"type": "lograndint", "lower": 1, "upper": 10, "base": 10}),
        (
            space.qlograndint(2, 64, 2, base=2),
            {"type": "qlograndint", "lower": 2, "upper": 64, "q": 2, "base": 2},
        ),
        (space.choice(["a", 1]), {"type": "choice", "categories": ["a", 1]}),
    ],
)
def test_to_json_describes_each_domain(domain: space.Domain, expected: dict[str, Any]) -> None:
    assert domain.to_json() == expected
    json.dumps(domain.to_json())


def double_it(spec: Any) -> int:
    return int(spec.config.x * 2)


def test_sample_from_to_json_names_the_function() -> None:
    assert space.sample_from(double_it).to_json() == {
        "type": "sample_from",
        "function": f"{__name__}.double_it",
    }


# -- helpers: bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: space.uniform(1, 0), "lower must be less than upper"),
        (lambda: space.uniform(1, 1), "lower must be less than upper"),
        (lambda: space.uniform(0, math.inf), "finite number"),
        (lambda: space.uniform(math.nan, 1), "finite number"),
        (lambda: space.uniform("0", 1), "lower must be a number, got str"),  # type: ignore[arg-type]
        (lambda: space.uniform(True, 2), "lower must be a number, got bool"),
        (lambda: space.loguniform(0, 1), "greater than 0 on a log scale"),
        (lambda: space.loguniform(-1, 1), "greater than 0 on a log scale"),
        (lambda: space.loguniform(1e-3, 1, base=1), "base must be greater than 0 and not 1"),
        (lambda: space.quniform(0, 1, 0), "q must be greater than 0"),
        (lambda: space.quniform(0, 1, -0.1), "q must be greater than 0"),
        (lambda: space.quniform(0.05, 1, 0.1), "lower bound 0.05 is not a multiple of q"),
        (lambda: space.qloguniform(1e-4, 0.15, 0.1), "is not a multiple of q"),
        (lambda: space.randn(0, 0), "sd must be greater than 0"),
        (lambda: space.qrandn(0, 1, 0), "q must be greater than 0"),
        (lambda: space.randint(5, 5), "lower must be less than upper"),
        (lambda: space.randint(0.5, 3), "lower must be an integer, got float"),  # type: ignore[arg-type]
        (lambda: space.randint(0, "9"), "upper must be an integer, got str"),  # type: ignore[arg-type]
        (lambda: space.lograndint(0, 10), "at least 1 on a log scale"),
        (lambda: space.qrandint(0, 10, 0), "q must be a positive integer"),
        (lambda: space.qrandint(1, 3, 5), "no multiple of q=5"),
        (lambda: space.qlograndint(1, 100, 2.5), "q must be an integer"),  # type: ignore[arg-type]
        (lambda: space.choice([]), "at least one value"),
        (lambda: space.choice("abc"), "categories must be a list"),
        (lambda: space.choice({"a": 1}), "categories must be a list"),  # type: ignore[arg-type]
        (lambda: space.choice([1, space.uniform(0, 1)]), "category 1 holds a search-space domain"),
        (lambda: space.grid_search("abc"), "values must be a list, got str"),
        (lambda: space.grid_search({1, 2}), "values must be a list, got set"),  # type: ignore[arg-type]
        (lambda: space.grid_search([]), "at least one value"),
        (lambda: space.sample_from(5), "expected a function"),  # type: ignore[arg-type]
        (lambda: space.sample_from(lambda a, b: a), "must take one argument"),
    ],
)
def test_helpers_reject_bad_input_saying_what_is_allowed(
    build: Callable[[], Any], message: str
) -> None:
    with pytest.raises(SearchSpaceError, match=message.replace("(", r"\(")):
        build()


def test_search_space_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        space.uniform(1, 0)


# -- generator: counts, order, determinism -------------------------------------------------------


def test_grid_times_num_samples_in_rays_order() -> None:
    # Declared b first: the grid order follows sorted paths, the first varying fastest (as Ray).
    param_space = {"b": space.grid_search(["x", "y", "z"]), "a": {"grid_search": [1, 2]}}
    generator = BasicVariantGenerator(param_space, num_samples=2, seed=0)
    assert generator.num_grid_variants == 6
    assert generator.total_trials == 12
    configs = [generator.config_for(i) for i in range(12)]
    expected = [{"b": b, "a": a} for b in "xyz" for a in (1, 2)]
    assert configs == expected + expected


def test_random_values_are_drawn_afresh_for_each_trial() -> None:
    generator = BasicVariantGenerator(
        {"g": space.grid_search([1, 2]), "x": space.uniform(0, 1)}, num_samples=3, seed=1
    )
    assert len({generator.config_for(i)["x"] for i in range(6)}) == 6


def test_same_seed_gives_same_configs_whatever_the_call_order() -> None:
    def make() -> BasicVariantGenerator:
        return BasicVariantGenerator(
            {
                "lr": space.loguniform(1e-4, 1e-1),
                "opt": space.grid_search(["sgd", "adam"]),
                "layers": [space.randint(1, 100), space.choice(["relu", "tanh"])],
                "noise": space.sample_from(lambda _: float(np.random.uniform())),
            },
            num_samples=5,
            seed=42,
        )

    first, second = make(), make()
    forward = [first.config_for(i) for i in range(10)]
    backward = {i: second.config_for(i) for i in reversed(range(10))}
    assert forward == [backward[i] for i in range(10)]
    assert first.config_for(7) == forward[7]


def test_configs_do_not_depend_on_the_order_of_keys() -> None:
    a = BasicVariantGenerator({"x": space.uniform(0, 1), "y": space.randint(0, 10**6)}, seed=3)
    b = BasicVariantGenerator({"y": space.randint(0, 10**6), "x": space.uniform(0, 1)}, seed=3)
    assert a.config_for(0) == b.config_for(0)


def test_different_seeds_give_different_configs() -> None:
    param_space = {"x": space.uniform(0, 1), "n": space.randint(0, 10**6)}
    a = BasicVariantGenerator(param_space, num_samples=3, seed=1)
    b = BasicVariantGenerator(param_space, num_samples=3, seed=2)
    assert [a.config_for(i) for i in range(3)] != [b.config_for(i) for i in range(3)]


def test_a_seed_is_chosen_and_exposed_when_none_is_given() -> None:
    param_space = {"x": space.uniform(0, 1)}
    generator = BasicVariantGenerator(param_space, num_samples=2)
    assert isinstance(generator.seed, int) and 0 <= generator.seed < 2**32
    restored = BasicVariantGenerator(param_space, num_samples=2, seed=generator.seed)
    assert restored.config_for(1) == generator.config_for(1)


def test_infinite_num_samples() -> None:
    generator = BasicVariantGenerator({"x": space.uniform(0, 1)}, num_samples=-1, seed=0)
    assert generator.total_trials is None
    assert 0 <= generator.config_for(10**9)["x"] <= 1


@pytest.mark.parametrize("index", [-1, 4])
def test_index_out_of_range_raises_index_error(index: int) -> None:
    generator = BasicVariantGenerator({"a": space.grid_search([1, 2])}, num_samples=2, seed=0)
    with pytest.raises(IndexError, match=f"trial index {index}"):
        generator.config_for(index)


# -- generator: resolution ----------------------------------------------------------------------


def test_nested_dicts_lists_and_plain_values_are_resolved() -> None:
    param_space = {
        "model": {"lr": space.uniform(0, 1), "sizes": [space.qrandint(8, 64, 8), 3], "name": "m"},
        "shape": (2, 3),
        "grid": space.grid_search([{"opt": "sgd", "m": space.uniform(0.5, 1)}, {"opt": "adam"}]),
        "flag": True,
        "none": None,
    }
    generator = BasicVariantGenerator(param_space, seed=0)
    config = generator.config_for(0)
    assert 0 <= config["model"]["lr"] <= 1
    assert config["model"]["sizes"][0] % 8 == 0 and config["model"]["sizes"][1] == 3
    assert config["model"]["name"] == "m" and config["flag"] is True and config["none"] is None
    assert config["shape"] == [2, 3]  # as it would read after a JSON round trip
    assert config["grid"]["opt"] == "sgd" and 0.5 <= config["grid"]["m"] <= 1
    assert generator.config_for(1)["grid"] == {"opt": "adam"}


def test_configs_are_independent_copies() -> None:
    generator = BasicVariantGenerator({"layers": [1, 2], "opts": {"a": [1]}}, seed=0)
    config = generator.config_for(0)
    config["layers"].append(3)
    config["opts"]["a"].append(2)
    assert generator.config_for(0) == {"layers": [1, 2], "opts": {"a": [1]}}


def test_the_space_is_copied_at_construction() -> None:
    param_space: dict[str, Any] = {"x": 1}
    generator = BasicVariantGenerator(param_space, seed=0)
    param_space["x"] = 2
    assert generator.config_for(0) == {"x": 1}


def test_sample_from_reads_the_rest_of_the_config_in_rays_styles() -> None:
    param_space = {
        "model": {"width": space.grid_search([16, 32])},
        "x": space.randint(1, 10),
        "by_attribute": space.sample_from(lambda spec: spec.config.model.width * 2),
        "by_item": space.sample_from(lambda spec: spec["config"]["x"] + 1),
        "chained": space.sample_from(lambda spec: spec.config.by_attribute + 1),
        "constant": space.sample_from(lambda: "fixed"),
        "nested": {"depth": space.sample_from(lambda spec: len(spec.config.model))},
    }
    generator = BasicVariantGenerator(param_space, seed=0)
    for index, width in enumerate([16, 32]):
        config = generator.config_for(index)
        assert config["by_attribute"] == width * 2
        assert config["by_item"] == config["x"] + 1
        assert config["chained"] == width * 2 + 1
        assert config["constant"] == "fixed"
        assert config["nested"] == {"depth": 1}


def test_sample_from_using_global_random_is_reproducible_and_leaves_it_alone() -> None:
    param_space = {
        "n": space.sample_from(lambda _: int(np.random.randint(10**6))),
        "r": space.sample_from(lambda _: random.random()),
    }
    np.random.seed(123)
    random.seed(123)
    first = BasicVariantGenerator(param_space, seed=5).config_for(0)
    after = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    assert after == (np.random.random(), random.random())
    assert BasicVariantGenerator(param_space, seed=5).config_for(0) == first
    assert BasicVariantGenerator(param_space, seed=6).config_for(0) != first


def test_sample_from_cannot_change_the_config_it_reads() -> None:
    def mutate(spec: Any) -> int:
        spec.config["items"].append(4)
        return 0

    config = BasicVariantGenerator(
        {"items": [1], "f": space.sample_from(mutate)}, seed=0
    ).config_for(0)
    assert config == {"items": [1], "f": 0}


# -- generator: bad spaces -----------------------------------------------------------------------


class FakeRayDomain:
    __module__ = "ray.tune.search.sample"


@pytest.mark.parametrize(
    ("param_space", "error", "pattern"),
    [
        ([("lr", 0.1)], SearchSpaceError, "param_space must be a dict"),
        (
            {"model": {"lr": {"grid_search": 0.1}}},
            SearchSpaceError,
            re.escape('param_space["model"]["lr"]: grid_search values must be a list'),
        ),
        (
            {"a": {"grid_search": []}},
            SearchSpaceError,
            re.escape('param_space["a"]: grid_search needs at least one value'),
        ),
        (
            {"a": space.grid_search([space.grid_search([1, 2])])},
            SearchSpaceError,
            re.escape('param_space["a"]["grid_search"][0]: a grid_search value cannot hold'),
        ),
        (
            {"m": {"lr": FakeRayDomain()}},
            SearchSpaceError,
            re.escape('param_space["m"]["lr"]: FakeRayDomain comes from Ray Tune'),
        ),
        (
            {"model": {"net": object()}},
            ConfigNotSerializableError,
            re.escape('param_space["model"]["net"] is <object'),
        ),
        (
            {"a": [1, {"b": {1, 2}}]},
            ConfigNotSerializableError,
            re.escape('param_space["a"][1]["b"] is {1, 2} of type set'),
        ),
        (
            {"act": space.choice([max, min])},
            ConfigNotSerializableError,
            re.escape('param_space["act"].categories[0] is <built-in function max>'),
        ),
        (
            {"a": {(1, 2): 3}},
            ConfigNotSerializableError,
            re.escape('param_space["a"] has a key of type tuple'),
        ),
        (
            {"n": np.int64(3)},
            ConfigNotSerializableError,
            re.escape('param_space["n"]') + ".* of type numpy.int64.*with .item()",
        ),
    ],
)
def test_bad_spaces_are_rejected_up_front_naming_the_path(
    param_space: Any, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        BasicVariantGenerator(param_space)
    with pytest.raises(error, match=pattern):
        validate_param_space(param_space)


def test_non_serializable_value_from_sample_from_names_the_config_path() -> None:
    generator = BasicVariantGenerator(
        {"model": {"net": space.sample_from(lambda: object())}}, seed=0
    )
    with pytest.raises(ConfigNotSerializableError) as info:
        generator.config_for(0)
    message = str(info.value)
    assert 'config["model"]["net"]' in message and "of type object" in message
    assert "JSON-friendly value (number, string, bool, None, list, dict)" in message
    assert "inside the trainable" in message
    assert isinstance(info.value, TypeError)


def test_sample_from_that_raises_is_reported_with_its_path() -> None:
    generator = BasicVariantGenerator(
        {"m": {"x": space.sample_from(lambda spec: spec.config.typo)}}, seed=0
    )
    with pytest.raises(
        SearchSpaceError,
        match=r'param_space\["m"\]\["x"\]: .* raised AttributeError: config has no key \'typo\'',
    ):
        generator.config_for(0)


def test_sample_from_cycle_is_reported() -> None:
    generator = BasicVariantGenerator(
        {
            "a": space.sample_from(lambda spec: spec.config.b),
            "b": space.sample_from(lambda spec: spec.config.a),
        },
        seed=0,
    )
    with pytest.raises(SearchSpaceError, match=r'cycle.*param_space\["a"\] reads config\["b"\]'):
        generator.config_for(0)


@pytest.mark.parametrize("num_samples", [0, -2, True, 1.5, "3"])
def test_bad_num_samples(num_samples: Any) -> None:
    with pytest.raises(ConfigError, match="num_samples must be an integer >= 1, or -1"):
        BasicVariantGenerator({}, num_samples=num_samples)


@pytest.mark.parametrize("seed", ["1", 1.0, True])
def test_bad_seed(seed: Any) -> None:
    with pytest.raises(ConfigError, match="seed must be an integer or None"):
        BasicVariantGenerator({}, seed=seed)


# -- describing the space ------------------------------------------------------------------------


def test_describe_param_space_is_json_and_stable_across_a_round_trip() -> None:
    param_space = {
        "lr": space.loguniform(1e-4, 1e-1),
        "grid": space.grid_search([1, (2, 3)]),
        "model": {"act": space.choice(["relu", max]), "shape": (1, 2), 4: "int key"},
        "f": space.sample_from(double_it),
        "obj": object(),
    }
    description = describe_param_space(param_space)
    assert json.loads(json.dumps(description)) == description
    assert description["lr"] == {"type": "loguniform", "lower": 1e-4, "upper": 0.1, "base": 10}
    assert description["grid"] == {"grid_search": [1, [2, 3]]}
    assert description["model"]["act"]["categories"] == ["relu", repr(max)]
    assert description["f"] == {"type": "sample_from", "function": f"{__name__}.double_it"}
    assert description["obj"].startswith("<object object")


def test_equal_spaces_have_equal_descriptions() -> None:
    def build() -> dict[str, Any]:
        return {"x": space.uniform(0, 1), "g": space.grid_search(["a", "b"])}

    assert describe_param_space(build()) == describe_param_space(build())
    assert describe_param_space(build()) != describe_param_space({"x": space.uniform(0, 2)})


# -- rebuilding from storage ---------------------------------------------------------------------

EVERY_HELPER = [
    space.uniform(-1, 1),
    space.quniform(0, 1, 0.25),
    space.loguniform(1e-4, 1e-1),
    space.qloguniform(1e-4, 1e-1, 5e-5, base=2),
    space.randn(1.0, 2.0),
    space.qrandn(0, 1, 0.5),
    space.randint(0, 10),
    space.qrandint(32, 256, 32),
    space.lograndint(1, 1000, base=2),
    space.qlograndint(10, 1000, 10),
    space.choice(["relu", {"act": "tanh"}, 3]),
]


@pytest.mark.parametrize("domain", EVERY_HELPER, ids=repr)
def test_every_domain_is_rebuilt_from_its_description_and_samples_the_same(domain):
    rebuilt = space.Domain.from_json(json.loads(json.dumps(domain.to_json())))
    assert type(rebuilt) is type(domain)
    assert rebuilt.to_json() == domain.to_json()
    assert draws(rebuilt, 50, seed=3) == draws(domain, 50, seed=3)


@pytest.mark.parametrize(
    ("stored", "match"),
    [
        ({"type": "uniform", "lower": 0}, "lacks a field"),
        ({"type": "uniform", "lower": 1, "upper": 0}, "lower must be less than upper"),
        ({"type": "choice", "categories": []}, "at least one value"),
        ({"type": "randint", "lower": "a", "upper": 3}, "must be an integer"),
        ({"type": "sample_from", "function": "m.f"}, r"sample_from\(m.f\).*param_space="),
        ({"type": "gamma", "shape": 2}, "unknown type"),
    ],
)
def test_a_damaged_stored_domain_is_refused_by_name(stored, match):
    with pytest.raises(SearchSpaceError, match=match):
        space.Domain.from_json(stored)


def test_a_stored_space_is_rebuilt_with_its_plain_values_and_grids():
    param_space = {
        "lr": space.loguniform(1e-4, 1e-1),
        "model": {"layers": space.grid_search([2, 4]), "act": space.choice(["relu", "tanh"])},
        "plain": {"type": "not-a-domain"},  # a dict value that only looks like a description
        "n": 3,
    }
    description = describe_param_space(param_space)
    rebuilt = space_from_description(json.loads(json.dumps(description)))
    assert describe_param_space(rebuilt) == description
    assert rebuilt["plain"] == {"type": "not-a-domain"}
    original = BasicVariantGenerator(param_space, num_samples=2, seed=5)
    again = BasicVariantGenerator(rebuilt, num_samples=2, seed=5)
    assert [again.config_for(i) for i in range(4)] == [original.config_for(i) for i in range(4)]


def test_a_stored_space_that_cannot_be_rebuilt_exactly_is_refused():
    with pytest.raises(SearchSpaceError, match="pass param_space="):
        space_from_description({"f": {"type": "sample_from", "function": "m.f"}})
    # A description with a field no domain writes is not what it claims to be.
    with pytest.raises(SearchSpaceError, match="cannot be rebuilt exactly"):
        space_from_description({"x": {"type": "uniform", "lower": 0, "upper": 1, "log": True}})
