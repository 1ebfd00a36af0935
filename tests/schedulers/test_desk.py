"""The driver's decision desk: stopper and scheduler together, and a stop that stays a stop."""

from __future__ import annotations

import pytest

from prefect_tune.engine import Decision
from prefect_tune.engine._decisions import DecisionDesk
from prefect_tune.exceptions import DecisionStateMismatchError
from prefect_tune.schedulers import ASHAScheduler
from prefect_tune.stopper import CombinedStopper, MaximumIterationStopper, TimeoutStopper
from tests.schedulers._streams import add_all, curves, round_trip


def _desk():
    return DecisionDesk(
        scheduler=ASHAScheduler(metric="loss", mode="min", max_t=27, reduction_factor=3),
        stopper=CombinedStopper(MaximumIterationStopper(20), TimeoutStopper(3600)),
    )


def _feed(desk, rows, stopped):
    out = []
    for trial, row in rows:
        if trial in stopped:
            continue
        decision = desk.on_result(trial, row)
        out.append((trial, row["training_iteration"], decision))
        if decision is Decision.STOP:
            stopped.add(trial)
    return out


@pytest.mark.parametrize("cut", [0, 60, 200])
def test_resume_decides_exactly_and_a_stopped_trial_stays_stopped(cut):
    configs, rows = curves()
    straight = _desk()
    add_all(straight, configs)
    expected = _feed(straight, rows, set())
    by_stopper = [t for t, i, d in expected if d is Decision.STOP and i == 20]
    assert by_stopper and any(d is Decision.STOP and i < 20 for _, i, d in expected)
    first = _desk()
    add_all(first, configs)
    stopped: set[str] = set()
    before = _feed(first, rows[:cut], stopped)
    resumed = _desk()
    resumed.from_state(round_trip(first.to_state()))
    for trial in stopped:  # a row sent before the stop reached the trial: STOP again
        assert resumed.on_result(trial, {"training_iteration": 99, "loss": 0.0}) is Decision.STOP
    assert before + _feed(resumed, rows[cut:], stopped) == expected


def test_stop_all_stops_every_trial_and_the_state_names_its_cores():
    timeout = TimeoutStopper(5)
    ticks = iter([0.0, 6.0])
    timeout.clock = lambda: next(ticks)
    desk = DecisionDesk(stopper=timeout)
    assert desk.on_result("a", {"training_iteration": 1}) is Decision.CONTINUE
    assert desk.on_result("b", {"training_iteration": 1}) is Decision.STOP
    assert desk.stopped_all and desk.on_result("c", {}) is Decision.STOP
    with pytest.raises(DecisionStateMismatchError, match="scheduler"):
        _desk().from_state(desk.to_state())


def test_the_desk_drops_an_exploit_whose_donor_never_reported_a_checkpoint():
    import warnings

    from prefect_tune.exceptions import NoCheckpointToExploitWarning
    from prefect_tune.schedulers import PopulationBasedTraining

    def make():
        pbt = PopulationBasedTraining(
            metric="loss",
            mode="min",
            time_attr="training_iteration",
            perturbation_interval=3,
            hyperparam_mutations={"lr": [0.001, 0.01, 0.1]},
            seed=14,
        )
        desk = DecisionDesk(scheduler=pbt)
        for trial in "abcd":
            desk.on_trial_add(trial, {"lr": 0.01})
        return desk

    def rows(checkpoint_of_a):
        for t, loss in zip("abcd", (0.1, 0.2, 0.3, 0.9), strict=True):
            yield t, {"training_iteration": 3, "loss": loss, "checkpoint_dir_name": None}
        yield "a", {"training_iteration": 6, "loss": 0.05, "checkpoint_dir_name": checkpoint_of_a}
        yield "d", {"training_iteration": 6, "loss": 0.8, "checkpoint_dir_name": None}

    with_checkpoint = make()
    decisions = [with_checkpoint.on_result(t, row) for t, row in rows("checkpoint_000005")]
    assert decisions[-1] is Decision.PAUSE
    assert with_checkpoint.scheduler.pending_exploit("d").source_trial_id == "a"

    without = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decisions = [without.on_result(t, row) for t, row in rows(None)]
    assert decisions[-1] is Decision.CONTINUE
    assert without.scheduler.pending_exploit("d") is None
    assert [w.category for w in caught] == [NoCheckpointToExploitWarning]
    # Which trials reported a checkpoint is part of the stored state.
    again = make()
    again.from_state(with_checkpoint.to_state())
    assert again.state()["checkpointed"] == ["a"]


def test_the_released_pbt_desk_format_still_loads():
    """decisions.json at version 3 with PBT: one exploit committed (trial_03), one pending."""
    import json

    from prefect_tune.schedulers import PopulationBasedTraining
    from tests.schedulers._streams import ASSETS

    stored = json.loads((ASSETS / "decisions_pbt_v3.json").read_text())
    pbt = PopulationBasedTraining(
        metric="loss",
        mode="min",
        time_attr="training_iteration",
        perturbation_interval=3,
        hyperparam_mutations={"lr": [0.001, 0.01, 0.1]},
        seed=14,
    )
    desk = DecisionDesk(scheduler=pbt)
    desk.from_state(stored)
    assert [e["source_trial_id"] for e in pbt.lineage("trial_03")] == ["trial_00"]
    pending = pbt.pending_exploit("trial_01")
    assert (pending.source_trial_id, pending.time, pending.config) == ("trial_00", 9.0, {"lr": 0.1})
    row = {"training_iteration": 10, "loss": 0.99, "checkpoint_dir_name": None}
    assert desk.on_result("trial_01", row) is Decision.PAUSE  # still pending: same answer
    assert desk.judged("trial_03") == 6.0
    assert pbt.exploit_committed("trial_01") == pending
