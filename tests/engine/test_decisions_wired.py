"""Schedulers and Stoppers wired into the controller (trials in threads of the driver's process):
results reach the driver's decision desk, STOP reaches the trial at its next report(), and the
desk's state is stored with the experiment and checked on restore."""

from __future__ import annotations

import json

import pytest

import prefect_tune as tune
from prefect_tune.engine._decisions import DECISIONS_FILE
from prefect_tune.exceptions import ConfigError, DecisionStateMismatchError
from prefect_tune.schedulers import ASHAScheduler, MedianStoppingRule
from prefect_tune.state import ExperimentStore, PackedSummary, TrialState, TrialStatus
from prefect_tune.stopper import MaximumIterationStopper
from tests import trainables
from tests._experiment_store import make_controller

STEPS = trainables.BOWL_STEPS
XS = [i / 15 for i in range(16)]  # the optimum is x = 0.3
bowl = trainables.bowl


def whole(store: ExperimentStore, rows: list[PackedSummary]) -> list[TrialState]:
    trials = store.read_trials(r.dir_name for r in rows)
    return [t for t in trials.values() if t is not None]


def asha() -> ASHAScheduler:
    return ASHAScheduler(max_t=STEPS, grace_period=1, reduction_factor=3)


def run(url, scheduler=None, stop=None):
    store, controller = make_controller(
        url, bowl, {"x": tune.grid_search(XS)}, scheduler=scheduler, stop=stop
    )
    return store, whole(store, controller.run())


def iterations(store, trials):
    return {t.config["x"]: len(store.read_history(t)) for t in trials}


def test_asha_runs_fewer_iterations_than_fifo_and_keeps_the_best(tmp_path):
    fifo_store, fifo = run(str(tmp_path / "fifo"))
    asha_store, stopped = run(str(tmp_path / "asha"), scheduler=asha())
    fifo_iters = iterations(fifo_store, fifo)
    asha_iters = iterations(asha_store, stopped)
    assert sum(fifo_iters.values()) == len(XS) * STEPS
    assert sum(asha_iters.values()) < 0.6 * sum(fifo_iters.values())
    # Stopped early, yet TERMINATED with their checkpoints kept.
    early = [t for t in stopped if asha_iters[t.config["x"]] < STEPS]
    assert early
    for trial in early:
        assert trial.status is TrialStatus.TERMINATED
        assert trial.checkpoints
    best_fifo = sorted(fifo, key=lambda t: t.last_result["loss"])[:3]
    best_asha = min(stopped, key=lambda t: t.last_result["loss"])
    assert best_asha.config["x"] in {t.config["x"] for t in best_fifo}
    stored = json.loads((tmp_path / "asha" / DECISIONS_FILE).read_text())
    # Every early stop was stored (so were the stops at max_t, ASHA's end of a trial).
    assert {t.trial_id for t in early} <= set(stored["data"]["stopped"])


def test_a_stopper_ends_trials_at_their_next_report(tmp_path):
    store, trials = run(str(tmp_path / "exp"), stop=MaximumIterationStopper(4))
    assert {len(store.read_history(t)) for t in trials} == {4}
    assert {t.status for t in trials} == {TrialStatus.TERMINATED}


def test_median_stopping_rule_stops_the_worse_trials(tmp_path):
    store, trials = run(
        str(tmp_path / "exp"),
        scheduler=MedianStoppingRule(
            time_attr="training_iteration", grace_period=3, min_samples_required=3
        ),
    )
    counts = iterations(store, trials)
    assert sum(counts.values()) < len(XS) * STEPS
    assert counts[XS[4]] == STEPS  # nearest to the optimum: never below the median


def test_a_restore_with_another_scheduler_or_settings_is_refused(tmp_path):
    url = str(tmp_path / "exp")
    store, first = run(url, scheduler=asha())
    before = (tmp_path / "exp" / DECISIONS_FILE).read_bytes()
    for other in (MedianStoppingRule(), ASHAScheduler(max_t=STEPS, reduction_factor=2), None):
        _, controller = make_controller(
            url,
            bowl,
            {"x": tune.grid_search(XS)},
            scheduler=other,
            stop=MaximumIterationStopper(3) if other is None else None,
        )
        with pytest.raises(DecisionStateMismatchError):
            controller.run()
    # Nor without any: its stopped trials would run on (the silent fallback to FIFO).
    _, controller = make_controller(url, bowl, {"x": tune.grid_search(XS)})
    with pytest.raises(DecisionStateMismatchError, match="same one"):
        controller.run()
    assert (tmp_path / "exp" / DECISIONS_FILE).read_bytes() == before
    # The same scheduler restores: nothing runs again.
    store, again = run(url, scheduler=asha())
    assert iterations(store, again) == iterations(store, first)


def test_a_trial_stopped_before_its_driver_died_stays_stopped(tmp_path):
    url = str(tmp_path / "exp")
    store, trials = run(url, scheduler=asha())
    stopped = json.loads((tmp_path / "exp" / DECISIONS_FILE).read_text())["data"]["stopped"]
    victim = next(t for t in trials if t.trial_id in stopped)
    rows = len(store.read_history(victim))
    # The driver was killed after it stored the decision, before the trial's end was recorded.
    victim.status = TrialStatus.RUNNING
    store.write_trial(victim)
    state = store.read_state()
    state.trials = []
    store.write_state(state, [PackedSummary.of(t) for t in sorted(trials, key=lambda t: t.index)])
    store, again = run(url, scheduler=asha())
    back = next(t for t in again if t.trial_id == victim.trial_id)
    assert back.status is TrialStatus.TERMINATED
    assert len(store.read_history(back)) == rows


def test_damaged_stored_decisions_are_refused_by_name(tmp_path):
    url = str(tmp_path / "exp")
    run(url, scheduler=asha())
    (tmp_path / "exp" / DECISIONS_FILE).write_text('{"kind": "DecisionDesk", "data": [1]}')
    _, controller = make_controller(url, bowl, {"x": tune.grid_search(XS)}, scheduler=asha())
    with pytest.raises(DecisionStateMismatchError):
        controller.run()


def test_a_scheduler_on_an_executor_in_other_processes_is_refused():
    from prefect_tune.engine import TuneController

    with pytest.raises(ConfigError, match="ThreadTrialExecutor"):
        TuneController._desk(None, asha(), object(), None)
