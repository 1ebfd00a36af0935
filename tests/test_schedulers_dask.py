"""ASHA, PBT and Stoppers through ``Tuner.fit()`` on Dask: rows travel up to the driver's
decision desk, STOP and PAUSE come down to the trial at its next report()."""

from __future__ import annotations

import json
import pathlib
import uuid

import pytest

import prefect_tune as tune
from prefect_tune import CheckpointConfig, RunConfig, TuneConfig, Tuner
from prefect_tune.exceptions import DecisionStateMismatchError
from prefect_tune.schedulers import ASHAScheduler, MedianStoppingRule, PopulationBasedTraining
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


PBT_LRS = [0.001, 0.01, 0.1, 1.0]


def _side_log(directory, trial_id):
    path = directory / f"{trial_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _pbt(**kwargs):
    settings = dict(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_mutations={"lr": PBT_LRS},
        quantile_fraction=0.25,
        seed=0,
    )
    return PopulationBasedTraining(**{**settings, **kwargs})


def test_tuner_restore_needs_the_pbt_settings_it_ran_with(prefect_api, runner, tmp_path):
    name = f"pbt-restore-{uuid.uuid4().hex[:6]}"
    Tuner(
        trainables.pbt_climb,
        param_space={"lr": tune.grid_search(PBT_LRS[:2]), "steps": 4},
        tune_config=TuneConfig(metric="score", mode="max", scheduler=_pbt()),
        run_config=RunConfig(name=name, storage_path=str(tmp_path)),
        task_runner=runner,
    ).fit()
    path = str(tmp_path / name)
    decisions = (tmp_path / name / "decisions.json").read_bytes()
    for scheduler in (None, _pbt(perturbation_interval=3), _pbt(seed=1)):
        with pytest.raises(DecisionStateMismatchError):
            Tuner.restore(path, trainables.pbt_climb, task_runner=runner, scheduler=scheduler).fit()
        assert (tmp_path / name / "decisions.json").read_bytes() == decisions
    again = Tuner.restore(path, trainables.pbt_climb, task_runner=runner, scheduler=_pbt()).fit()
    assert again.num_terminated == 2 and not again.errors


def test_pbt_on_dask_resumes_trials_from_other_trials_checkpoints(
    prefect_api, runner, tmp_path, dispatch
):
    side = tmp_path / "side"
    steps = 12
    results = Tuner(
        trainables.pbt_climb,
        param_space={
            "lr": tune.grid_search(PBT_LRS),
            "steps": steps,
            "sleep_s": 0.1,  # long enough for trials to overlap on both dispatch paths
            "side_log": str(side),
        },
        tune_config=TuneConfig(
            metric="score",
            mode="max",
            max_concurrent_trials=2,
            scheduler=PopulationBasedTraining(
                time_attr="training_iteration",
                perturbation_interval=2,
                hyperparam_mutations={"lr": PBT_LRS},
                quantile_fraction=0.25,
                seed=0,
            ),
        ),
        run_config=RunConfig(
            name=f"pbt-{uuid.uuid4().hex[:6]}",
            storage_path=str(tmp_path),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        task_runner=runner,
    ).fit()
    assert results.num_terminated == len(PBT_LRS) and not results.errors
    exploited = [r for r in results if r.exploits]
    assert exploited
    ids = {r.trial_id for r in results}
    for result in results:
        iterations = list(result.metrics_dataframe["training_iteration"])
        assert iterations == sorted(set(iterations)), iterations  # each iteration once
        # Every trial trained to the end: itself, or the donor whose final checkpoint it took
        # (then it has no iteration left to report).
        with result.checkpoint.as_directory() as d:
            assert json.loads((pathlib.Path(d) / "state.json").read_text())["step"] == steps
        assert iterations[-1] == steps or result.exploits[-1].donor_iteration == steps
    for result in exploited:
        assert result.config == result.exploits[-1].new_config  # Result.config is the final one
        restores = [e for e in _side_log(side, result.trial_id) if e["event"] == "restore"]
        for record in result.exploits:
            assert record.donor_trial_id in ids - {result.trial_id}
            assert record.old_config["lr"] in PBT_LRS and record.new_config["lr"] in PBT_LRS
            # The task run after the exploit loaded the donor's checkpoint, with the new config.
            assert any(
                e["owner"] == record.donor_trial_id
                and e["step"] == record.donor_iteration
                and e["lr"] == record.new_config["lr"]
                for e in restores
            ), (record, restores)
