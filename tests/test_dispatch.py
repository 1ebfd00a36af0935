"""How trials reach a Dask cluster: prefect-tune's fast path by default, Prefect's plain
``task_runner.submit`` when ``PREFECT_TUNE_FAST_TRIAL_DISPATCH=false`` or when the installed
Prefect's internals are not the ones the fast path was written against."""

from __future__ import annotations

import logging
import sys
import uuid

import prefect
import pytest
from distributed import Client, get_task_stream
from prefect_dask import DaskTaskRunner

import prefect_tune as tune
from prefect_tune import RunConfig, TuneConfig, Tuner
from prefect_tune._settings import TuneSettings, get_settings
from prefect_tune.exceptions import ConfigError
from prefect_tune.prefect._fast import _engine, _switch, fast_dispatch
from prefect_tune.prefect._fast._engine import internals_are_known
from tests import trainables
from tests.test_experiment import experiment_task_runs

SETTING = "PREFECT_TUNE_FAST_TRIAL_DISPATCH"


@pytest.fixture
def unknown_prefect(monkeypatch: pytest.MonkeyPatch):
    """This process sees a Prefect whose internals differ from the ones the fast path knows
    (as a release other than the checked one would), and has logged nothing about it yet."""
    monkeypatch.setattr(_engine, "PREFECT_INTERNALS_DIGEST", "0" * 64)
    monkeypatch.setattr(_switch, "_LOGGED", set())
    internals_are_known.cache_clear()
    yield
    internals_are_known.cache_clear()


def run_experiment(name: str, storage_path: str, scheduler_address: str) -> tuple[list, list]:
    """Runs three one-step trials; returns their results and the keys of every Dask task the
    cluster ran meanwhile."""
    with Client(scheduler_address) as observer, get_task_stream(observer) as stream:
        results = Tuner(
            trainables.quadratic,
            param_space={"x": tune.grid_search([1.0, 2.0, 3.0]), "steps": 1},
            tune_config=TuneConfig(metric="loss", mode="min"),
            run_config=RunConfig(name=name, storage_path=storage_path),
            task_runner=DaskTaskRunner(address=scheduler_address),
        ).fit()
    return list(results), [task["key"] for task in stream.data]


def check_task_runs(name: str, trial_ids: list[str]) -> None:
    """Each trial is a completed task run of the experiment, named after it and tagged."""
    task_runs = experiment_task_runs(name, expected=len(trial_ids))
    assert len(task_runs) == len(trial_ids)
    assert all(t.state.is_completed() and name in t.tags for t in task_runs)
    assert sorted(t.name.split(" ")[0] for t in task_runs) == sorted(
        f"quadratic_{trial_id}" for trial_id in trial_ids
    )


@pytest.mark.slow
def test_trials_take_the_fast_path_by_default(prefect_api, dask_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv(SETTING, raising=False)
    name = f"fast-{uuid.uuid4().hex[:6]}"
    results, keys = run_experiment(name, str(tmp_path), dask_cluster.scheduler_address)
    trial_ids = [r.trial_id for r in results]
    assert len(trial_ids) == 3 and all(r.metrics["training_iteration"] == 1 for r in results)
    check_task_runs(name, trial_ids)
    # The fast path names each Dask task after its trial; none is prefect-dask's.
    for trial_id in trial_ids:
        assert any(str(key).startswith(f"trial-{trial_id}-") for key in keys), (trial_id, keys)
    assert not [key for key in keys if str(key).startswith("trial_task-")], keys


@pytest.mark.slow
@pytest.mark.parametrize("reason", ["setting", "unknown-prefect"])
def test_trials_take_prefects_plain_path(
    prefect_api, dask_cluster, tmp_path, monkeypatch, caplog, request, reason
):
    if reason == "setting":
        monkeypatch.setenv(SETTING, "false")
        monkeypatch.setattr(_switch, "_LOGGED", set())
        why = f"{SETTING} is false"
    else:
        monkeypatch.delenv(SETTING, raising=False)
        request.getfixturevalue("unknown_prefect")
        why = f"Prefect {prefect.__version__} is not the release"
    caplog.set_level(logging.INFO, logger="prefect_tune")
    name = f"plain-{reason}-{uuid.uuid4().hex[:6]}"
    results, keys = run_experiment(name, str(tmp_path), dask_cluster.scheduler_address)
    trial_ids = [r.trial_id for r in results]
    assert len(trial_ids) == 3 and all(r.metrics["training_iteration"] == 1 for r in results)
    check_task_runs(name, trial_ids)
    # Every trial was the Dask task prefect-dask makes of the Prefect task (named after its
    # function, `trial_task`), none the fast path's.
    assert len([key for key in keys if str(key).startswith("trial_task-")]) == 3, keys
    assert not [key for key in keys for t in trial_ids if t in str(key)], keys
    assert [r.getMessage() for r in caplog.records if why in r.getMessage()], caplog.text


def test_an_unknown_prefect_is_logged_once_per_process(unknown_prefect, caplog):
    caplog.set_level(logging.INFO, logger="prefect_tune")
    settings = TuneSettings(fast_trial_dispatch=True)
    # Decided before the client is used: None stands for a cluster that is never reached.
    assert fast_dispatch(None, settings, "a") is None
    assert fast_dispatch(None, settings, "b") is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "task_runner.submit" in warnings[0].getMessage()


def test_a_prefect_without_an_internal_the_fast_path_imports_is_the_plain_path(monkeypatch, caplog):
    monkeypatch.setattr(_switch, "_LOGGED", set())
    for name in [m for m in sys.modules if m.startswith("prefect_tune.prefect._fast._")]:
        if name != _switch.__name__:
            monkeypatch.delitem(sys.modules, name)  # imported again by the switch
    monkeypatch.setitem(sys.modules, "prefect._flow_run_suspension", None)  # as if it moved
    caplog.set_level(logging.INFO, logger="prefect_tune")
    # Decided before the client is used: None stands for a cluster that is never reached.
    assert fast_dispatch(None, TuneSettings(fast_trial_dispatch=True), "a") is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "prefect._flow_run_suspension" in warning.getMessage()
    assert "task_runner.submit" in warning.getMessage()


def test_a_setting_that_is_not_a_boolean_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(SETTING, "sometimes")
    with pytest.raises(ConfigError, match=f"{SETTING}='sometimes'"):
        get_settings()
