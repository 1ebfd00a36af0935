"""ASHA, the median rule, PBT, Stoppers and search algorithms are accepted (wired into the
Tuner); PBT's mutations must name keys of the param_space."""

from __future__ import annotations

import pytest

import prefect_tune as tune
from prefect_tune import ConfigError, RunConfig, TuneConfig, Tuner
from prefect_tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from prefect_tune.search import BasicVariantGenerator, ConcurrencyLimiter
from prefect_tune.stopper import CombinedStopper, MaximumIterationStopper, TimeoutStopper


def test_the_defaults_are_accepted():
    config = TuneConfig(scheduler=FIFOScheduler(), search_alg=BasicVariantGenerator())
    assert isinstance(config.scheduler, FIFOScheduler)
    assert "scheduler" not in repr(config)  # the repr users and doctests see is unchanged


@pytest.mark.parametrize(
    "scheduler", [ASHAScheduler(metric="loss", mode="min"), MedianStoppingRule()]
)
def test_wired_schedulers_are_accepted(scheduler):
    assert TuneConfig(scheduler=scheduler).scheduler is scheduler


def test_pbt_is_accepted():
    pbt = PopulationBasedTraining(hyperparam_mutations={"lr": [0.1, 0.2]})
    assert TuneConfig(scheduler=pbt).scheduler is pbt


def _pbt(mutations):
    return PopulationBasedTraining(
        metric="loss", mode="min", time_attr="training_iteration", hyperparam_mutations=mutations
    )


@pytest.mark.parametrize(
    ("mutations", "named"),
    [
        ({"learning_rate": [0.1, 0.2]}, "'learning_rate'"),
        ({"opt": {"momentum": [0.9, 0.99]}}, "'opt.momentum'"),
    ],
)
def test_pbt_mutating_a_key_not_in_the_param_space_is_refused_by_name(mutations, named):
    with pytest.raises(ConfigError, match=rf"hyperparam_mutations=\.\.\.\): mutates {named}"):
        Tuner(
            lambda config: None,
            param_space={"lr": 0.1, "opt": {"beta": 0.5}},
            tune_config=TuneConfig(scheduler=_pbt(mutations)),
        )


def test_pbt_mutating_keys_of_the_param_space_is_accepted():
    Tuner(
        lambda config: None,
        param_space={"lr": tune.grid_search([0.1, 0.2]), "opt": {"beta": 0.5}},
        tune_config=TuneConfig(scheduler=_pbt({"lr": [0.1, 0.2], "opt": {"beta": [0.5, 0.9]}})),
    )


@pytest.mark.parametrize(
    "search_alg",
    [
        BasicVariantGenerator(random_state=1),
        BasicVariantGenerator(points_to_evaluate=[{"lr": 0.1}]),
        ConcurrencyLimiter(BasicVariantGenerator(), 2),
    ],
)
def test_wired_search_algorithms_are_accepted(search_alg):
    assert TuneConfig(search_alg=search_alg).search_alg is search_alg


def test_other_objects_are_refused_as_such():
    with pytest.raises(ConfigError, match=r"TuneConfig\(scheduler=...\): must be a scheduler"):
        TuneConfig(scheduler="asha")
    with pytest.raises(ConfigError, match=r"TuneConfig\(search_alg=...\): must be a search"):
        TuneConfig(search_alg=object())


@pytest.mark.parametrize(
    "stopper",
    [MaximumIterationStopper(3), TimeoutStopper(60), CombinedStopper(TimeoutStopper(60))],
)
def test_a_stopper_is_accepted_and_dicts_and_functions_still_work(stopper):
    assert RunConfig(stop=stopper).stop is stopper
    assert RunConfig(stop={"training_iteration": 3}).stop == {"training_iteration": 3}
    assert callable(RunConfig(stop=lambda trial_id, result: False).stop)
