"""ASHA on recorded result streams: rungs, promotion, stopping, and an exact resume."""

from __future__ import annotations

import json

import pytest

from prefect_tune.engine import Decision
from prefect_tune.exceptions import (
    ConfigError,
    DecisionStateMismatchError,
    UnsupportedSchemaVersionError,
)
from prefect_tune.schedulers import (
    ASHAScheduler,
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
)
from tests.schedulers._streams import ASSETS, add_all, curves, replay, round_trip

CONTINUE, STOP = Decision.CONTINUE, Decision.STOP


def _asha(**kwargs):
    settings = dict(metric="loss", mode="min", max_t=27, grace_period=1, reduction_factor=3)
    return ASHAScheduler(**{**settings, **kwargs})


def test_alias_and_rungs_as_ray_lays_them_out():
    assert ASHAScheduler is AsyncHyperBandScheduler
    asha = AsyncHyperBandScheduler(max_t=81, grace_period=1, reduction_factor=3, brackets=3)
    assert [[m for m, _ in bracket] for bracket in asha.rungs] == [
        [81, 27, 9, 3, 1],
        [81, 27, 9, 3],
        [81, 27, 9],
    ]


def test_a_rung_keeps_those_above_its_quantile_of_earlier_arrivals():
    asha = _asha(metric="acc", mode="max")
    for trial in "abcdef":
        asha.on_trial_add(trial, {})
    stream = [("a", 0.5), ("b", 0.6), ("c", 0.4), ("d", 0.9), ("e", 0.55), ("f", 0.59)]
    decisions = [asha.on_trial_result(t, {"training_iteration": 1, "acc": a}) for t, a in stream]
    # Cutoffs, the 66.7th percentile of earlier arrivals: none; 0.5; 0.5667 (of .5 .6);
    # 0.5333 (.4 .5 .6); 0.6 (.4 .5 .6 .9); 0.5833 (.4 .5 .55 .6 .9).
    assert decisions == [CONTINUE, CONTINUE, STOP, CONTINUE, STOP, CONTINUE]
    assert set(asha.rungs[0][-1][1]) == set("abcdef")  # stopped ones are recorded too


def test_judged_once_per_rung_and_a_passed_rung_never_stops_a_trial():
    asha = _asha()
    for trial in "ab":
        asha.on_trial_add(trial, {})
    assert asha.on_trial_result("a", {"training_iteration": 1, "loss": 1.0}) is CONTINUE
    assert asha.on_trial_result("b", {"training_iteration": 1, "loss": 0.9}) is CONTINUE
    # b passed rung 1; worse results between rungs, or the same result replayed, do not stop it.
    assert asha.on_trial_result("b", {"training_iteration": 2, "loss": 50.0}) is CONTINUE
    assert asha.on_trial_result("b", {"training_iteration": 1, "loss": 0.9}) is CONTINUE
    # At rung 3 it is judged again, against those recorded there (none yet).
    assert asha.on_trial_result("b", {"training_iteration": 3, "loss": 0.8}) is CONTINUE
    assert asha.on_trial_result("a", {"training_iteration": 3, "loss": 0.85}) is STOP


def test_max_t_stops_and_results_without_the_metric_continue():
    asha = _asha()
    asha.on_trial_add("a", {})
    assert asha.on_trial_result("a", {"training_iteration": 2}) is CONTINUE
    assert asha.on_trial_result("a", {"training_iteration": 27, "loss": 0.1}) is STOP
    assert asha.num_stopped == 1
    last = _asha(stop_last_trials=False)
    last.on_trial_add("a", {})
    assert last.on_trial_result("a", {"training_iteration": 30, "loss": 0.1}) is CONTINUE


def test_on_recorded_curves_asha_runs_under_60_percent_and_keeps_the_best():
    configs, rows = curves()
    asha = _asha()
    add_all(asha, configs)
    decisions = replay(asha, rows)
    assert len(decisions) < 0.6 * len(rows)
    final = {trial: r["loss"] for trial, r in rows if r["training_iteration"] == 27}
    fifo_top3 = sorted(final, key=final.get)[:3]
    survivors = {t for t, i, _ in decisions if i == 27}
    assert survivors and survivors <= set(final)
    assert min(survivors, key=final.get) in fifo_top3
    assert FIFOScheduler().on_trial_result("x", rows[0][1]) is CONTINUE


@pytest.mark.parametrize("brackets", [1, 3])
@pytest.mark.parametrize("cut", [1, 40, 150, 300])
def test_resume_from_stored_state_decides_exactly_as_without_the_crash(brackets, cut):
    configs, rows = curves()
    straight = _asha(brackets=brackets)
    add_all(straight, configs)
    expected = replay(straight, rows)

    first = _asha(brackets=brackets)
    add_all(first, configs)
    stopped: set[str] = set()
    before = replay(first, rows[:cut], stopped)
    stored = round_trip(first.to_state())
    resumed = _asha(brackets=brackets)
    resumed.from_state(stored)
    # The restored driver replays the rows its trials report again from their checkpoints
    # (here: the last five before the crash) and then the rest.
    again = replay(resumed, rows[max(0, cut - 5) : cut], set(stopped))
    assert all(d is not STOP for _, _, d in again)  # nothing stopped twice
    after = replay(resumed, rows[cut:], stopped)
    assert before + after == expected
    assert resumed.to_state() == straight.to_state()


def test_brackets_are_drawn_from_the_trial_id_alone():
    one, two = _asha(brackets=3), _asha(brackets=3)
    ids = [f"t{i}" for i in range(300)]
    for trial in ids:
        one.on_trial_add(trial, {})
    for trial in reversed(ids):
        two.on_trial_add(trial, {})
    assert one.to_state() == two.to_state()
    counts = [list(one.state()["bracket_of"].values()).count(b) for b in range(3)]
    # softmax of rung counts [3, 2, 1] (max_t 27, rf 3): 0.67, 0.24, 0.09
    assert counts[0] > counts[1] > counts[2] > 0


def test_state_is_versioned_and_a_foreign_state_is_refused_by_name():
    state = _asha().to_state()
    assert state["kind"] == "AsyncHyperBandScheduler" and state["schema_version"] == 1
    with pytest.raises(DecisionStateMismatchError, match=r"max_t differ"):
        _asha(max_t=9).from_state(state)
    with pytest.raises(DecisionStateMismatchError, match="written by AsyncHyperBandScheduler"):
        MedianStoppingRule(metric="loss", mode="min").from_state(state)
    with pytest.raises(UnsupportedSchemaVersionError, match="schema_version 2"):
        _asha().from_state({**state, "schema_version": 2})
    with pytest.raises(DecisionStateMismatchError, match="not a state document"):
        _asha().from_state({"rungs": []})


def test_the_released_state_format_still_loads():
    stored = json.loads((ASSETS / "asha_state_v1.json").read_text())
    asha = _asha()
    asha.from_state(stored)
    assert asha.rungs[0][-1][1] == {"trial_00": -1.0, "trial_01": -0.5}
    assert asha.on_trial_result("trial_02", {"training_iteration": 1, "loss": 2.0}) is STOP


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_t": 0}, "max_t"),
        ({"grace_period": 30}, "grace_period"),
        ({"reduction_factor": 1}, "reduction_factor"),
        ({"brackets": 0}, "brackets"),
        ({"mode": "lowest"}, "mode"),
        ({"time_attr": ""}, "time_attr"),
        ({"stop_last_trials": "yes"}, "stop_last_trials"),
    ],
)
def test_constructor_arguments_are_checked_by_name(kwargs, field):
    with pytest.raises(ConfigError, match=rf"AsyncHyperBandScheduler\({field}=\.\.\.\)"):
        _asha(**kwargs)


def test_a_metric_is_required_before_trials_run():
    with pytest.raises(ConfigError, match="needs a metric and a mode"):
        ASHAScheduler().on_trial_add("t", {})
    asha = ASHAScheduler()
    assert asha.set_search_properties("loss", "min")
    assert not asha.set_search_properties("acc", "max")
    asha.on_trial_add("t", {})
