"""ASHA and Stoppers through ``Tuner.fit()`` on Dask: rows travel up to the driver's decision
desk, STOP comes down to the trial at its next report()."""

from __future__ import annotations

import uuid

import pytest

import prefect_tune as tune
from prefect_tune import RunConfig, TuneConfig, Tuner
from prefect_tune.exceptions import DecisionStateMismatchError
from prefect_tune.schedulers import ASHAScheduler, MedianStoppingRule
from prefect_tune.stopper import MaximumIterationStopper
from tests import trainables

XS = [i / 15 for i in range(16)]  # the optimum is x = 0.3
STEPS = 27


def tuner(path, name, runner, scheduler=None, stop=None):
    return Tuner(
        trainables.bowl,
        param_space={"x": tune.grid_search(XS), "steps": STEPS},
        tune_config=TuneConfig(
            metric="loss", mode="min", scheduler=scheduler, max_concurrent_trials=2
        ),
        run_config=RunConfig(name=name, storage_path=str(path), stop=stop),
        task_runner=runner,
    )


@pytest.fixture(params=["fast", "plain"])
def dispatch(request, monkeypatch):
    if request.param == "plain":
        monkeypatch.setenv("PREFECT_TUNE_FAST_TRIAL_DISPATCH", "false")
    return request.param


def test_asha_on_dask_runs_fewer_iterations_and_keeps_the_best(
    prefect_api, runner, tmp_path, dispatch
):
    fifo = tuner(tmp_path, f"fifo-{uuid.uuid4().hex[:6]}", runner).fit()
    asha = tuner(
        tmp_path,
        f"asha-{uuid.uuid4().hex[:6]}",
        runner,
        scheduler=ASHAScheduler(max_t=STEPS, grace_period=1, reduction_factor=3),
    ).fit()
    fifo_iters = sum(len(r.metrics_dataframe) for r in fifo)
    asha_iters = sum(len(r.metrics_dataframe) for r in asha)
    assert fifo_iters == len(XS) * STEPS
    assert asha_iters < 0.6 * fifo_iters
    assert asha.num_terminated == len(XS) and not asha.errors
    early = [r for r in asha if len(r.metrics_dataframe) < STEPS]
    assert early and all(r.checkpoint is not None for r in early)
    top3 = {r.config["x"] for r in sorted(fifo, key=lambda r: r.metrics["loss"])[:3]}
    assert asha.get_best_result().config["x"] in top3


def test_a_stopper_on_dask_ends_every_trial_early(prefect_api, runner, tmp_path):
    results = tuner(
        tmp_path, f"stopper-{uuid.uuid4().hex[:6]}", runner, stop=MaximumIterationStopper(3)
    ).fit()
    # On Dask the decision travels asynchronously: it reaches the trial at a later report
    # than the one that triggered it (never earlier, never lost).
    lengths = [len(r.metrics_dataframe) for r in results]
    assert all(3 <= n < STEPS for n in lengths), lengths
    assert results.num_terminated == len(XS)


def test_a_restore_with_another_scheduler_is_refused(prefect_api, runner, tmp_path):
    name = f"swap-{uuid.uuid4().hex[:6]}"
    asha = ASHAScheduler(max_t=STEPS, grace_period=1, reduction_factor=3)
    tuner(tmp_path, name, runner, scheduler=asha).fit()
    with pytest.raises(DecisionStateMismatchError):
        tuner(
            tmp_path, name, runner, scheduler=MedianStoppingRule(time_attr="training_iteration")
        ).fit()


def test_tuner_restore_needs_the_scheduler_it_ran_with(prefect_api, runner, tmp_path):
    name = f"restore-{uuid.uuid4().hex[:6]}"
    asha = ASHAScheduler(max_t=STEPS, grace_period=1, reduction_factor=3)
    first = tuner(tmp_path, name, runner, scheduler=asha).fit()
    path = str(tmp_path / name)
    with pytest.raises(DecisionStateMismatchError):
        Tuner.restore(path, trainables.bowl, task_runner=runner).fit()
    again = Tuner.restore(
        path,
        trainables.bowl,
        task_runner=runner,
        scheduler=ASHAScheduler(max_t=STEPS, grace_period=1, reduction_factor=3),
    ).fit()
    assert sorted(len(r.metrics_dataframe) for r in again) == sorted(
        len(r.metrics_dataframe) for r in first
    )
