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


def _desk(tmp_path):
    return json.loads((tmp_path / "exp" / DECISIONS_FILE).read_text())


def test_a_stopped_trial_stops_at_the_rung_that_stopped_it(tmp_path):
    # With trials in the driver's process the decision is at the report itself; the stored
    # desk says where, and the rows stored end there.
    store, trials = run(str(tmp_path / "exp"), scheduler=asha())
    data = _desk(tmp_path)["data"]
    for trial in trials:
        assert data["stopped_at"][trial.trial_id] == len(store.read_history(trial))
        assert data["judged"][trial.trial_id] == len(store.read_history(trial))


def test_a_restore_judges_the_stored_results_the_stored_decisions_lost(tmp_path):
    """The driver died after its trials had reported rows it had judged in memory only: the
    restore judges them from storage (nothing runs again) and stores the state."""
    url = str(tmp_path / "exp")
    store, trials = run(url, scheduler=asha())
    before = {t.trial_id: len(store.read_history(t)) for t in trials}
    (tmp_path / "exp" / DECISIONS_FILE).unlink()  # every judgment lost, say
    store, again = run(url, scheduler=asha())
    assert {t.trial_id: len(store.read_history(t)) for t in again} == before
    data = _desk(tmp_path)["data"]
    assert data["judged"] == {t: float(n) for t, n in before.items()}
    recorded = {
        trial
        for bracket in data["scheduler"]["data"]["rungs"]
        for rung in bracket
        for trial in rung["recorded"]
    }
    assert recorded == set(before)  # every trial is in its first rung again


def test_a_restore_catches_up_to_the_checkpoint_of_an_unfinished_trial(tmp_path):
    """An unfinished trial's rows up to its latest checkpoint are judged on restore; it then
    resumes from that checkpoint and is not judged twice at a rung it passed."""
    url = str(tmp_path / "exp")
    store, trials = run(url, scheduler=asha())
    survivor = max(trials, key=lambda t: len(store.read_history(t)))
    assert len(store.read_history(survivor)) == STEPS
    document = _desk(tmp_path)
    # As if the driver died with the survivor at iteration 10: its rung decisions (1, 3, 9)
    # stored, as the trial waited for each; its row 10 judged in memory only.
    data = document["data"]
    data["stopped"].remove(survivor.trial_id)
    del data["stopped_at"][survivor.trial_id]
    data["judged"][survivor.trial_id] = 9
    rungs_before = data["scheduler"]["data"]["rungs"]
    (tmp_path / "exp" / DECISIONS_FILE).write_text(json.dumps(document))
    survivor.status = TrialStatus.RUNNING
    survivor.checkpoints = [c for c in survivor.checkpoints if c.training_iteration <= 10]
    assert survivor.checkpoints[-1].training_iteration == 10  # every checkpoint is kept
    store.write_trial(survivor)
    state = store.read_state()
    state.trials = []
    store.write_state(state, [PackedSummary.of(t) for t in sorted(trials, key=lambda t: t.index)])
    store, again = run(url, scheduler=asha())
    back = next(t for t in again if t.trial_id == survivor.trial_id)
    assert back.status is TrialStatus.TERMINATED
    assert [r["training_iteration"] for r in store.read_history(back)] == list(range(1, STEPS + 1))
    data = _desk(tmp_path)["data"]
    assert data["stopped_at"][survivor.trial_id] == STEPS
    assert data["judged"][survivor.trial_id] == STEPS
    # Not judged again at the rungs it had passed: the rungs are as they were.
    assert data["scheduler"]["data"]["rungs"] == rungs_before


@pytest.mark.parametrize(
    "judged", [{"t": "many"}, {"t": float("inf")}, ["t"], {"t": None}], ids=repr
)
def test_a_damaged_judged_table_is_refused_and_left_as_it_was(tmp_path, judged):
    url = str(tmp_path / "exp")
    run(url, scheduler=asha())
    path = tmp_path / "exp" / DECISIONS_FILE
    document = json.loads(path.read_text())
    document["data"]["judged"] = judged
    path.write_text(json.dumps(document))
    before = path.read_bytes()
    _, controller = make_controller(url, bowl, {"x": tune.grid_search(XS)}, scheduler=asha())
    with pytest.raises(DecisionStateMismatchError, match="damaged"):
        controller.run()
    assert path.read_bytes() == before


def test_decisions_stored_by_the_previous_version_still_load(tmp_path):
    """Version 1 of the desk's state had no judged / stopped_at tables."""
    url = str(tmp_path / "exp")
    store, first = run(url, scheduler=asha())
    path = tmp_path / "exp" / DECISIONS_FILE
    document = json.loads(path.read_text())
    document["schema_version"] = 1
    del document["data"]["judged"], document["data"]["stopped_at"]
    path.write_text(json.dumps(document))
    store, again = run(url, scheduler=asha())
    assert iterations(store, again) == iterations(store, first)
    assert _desk(tmp_path)["schema_version"] == 3


def test_decisions_stored_at_version_2_still_load(tmp_path):
    """Version 2 of the desk's state had no table of the trials that reported a checkpoint."""
    url = str(tmp_path / "exp")
    store, first = run(url, scheduler=asha())
    path = tmp_path / "exp" / DECISIONS_FILE
    document = json.loads(path.read_text())
    document["schema_version"] = 2
    del document["data"]["checkpointed"]
    path.write_text(json.dumps(document))
    store, again = run(url, scheduler=asha())
    assert iterations(store, again) == iterations(store, first)
    assert _desk(tmp_path)["schema_version"] == 3


def test_rows_travel_packed_and_big_ints_fall_back_to_json():
    from prefect_tune.engine._channel import pack_rows, unpack_rows

    rows = [{"loss": 0.5, "nested": {"a": [1, None, True]}, "s": "x"}, {"big": 2**70}]
    fmt, data = pack_rows(rows[:1])
    assert fmt == "msgpack" and unpack_rows(fmt, data) == rows[:1]
    fmt, data = pack_rows(rows)
    assert fmt == "json" and unpack_rows(fmt, data) == rows
    with pytest.raises(ValueError):
        unpack_rows("json", b'{"not": "rows"}')


def test_decision_points_of_asha_and_the_median_rule():
    scheduler = ASHAScheduler(metric="loss", mode="min", max_t=27, grace_period=1)
    scheduler.on_trial_add("t", {})
    points = scheduler.decision_points("t")
    assert points.milestones == (1.0, 4.0, 16.0, 27.0)
    assert [points.crossed(a, b) for a, b in [(None, 1), (1, 3), (3, 5), (5, 6), (26, 27)]] == [
        True,
        False,
        True,
        False,
        True,
    ]
    rule = MedianStoppingRule(time_attr="training_iteration", grace_period=3)
    assert [rule.decision_points("t").crossed(i - 1, i) for i in (1, 2, 3, 4)] == [
        False,
        False,
        True,
        True,
    ]


def test_a_stop_dict_still_applies_with_a_scheduler(tmp_path):
    store, trials = run(str(tmp_path / "exp"), scheduler=asha(), stop={"training_iteration": 2})
    assert {len(store.read_history(t)) for t in trials} <= {1, 2}
    assert max(len(store.read_history(t)) for t in trials) == 2
