"""Stoppers on recorded result streams, and their resume from stored state."""

from __future__ import annotations

import datetime

import pytest

from prefect_tune.exceptions import ConfigError, DecisionStateMismatchError
from prefect_tune.stopper import (
    CombinedStopper,
    ExperimentPlateauStopper,
    FunctionStopper,
    MaximumIterationStopper,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
)
from tests.schedulers._streams import curves, round_trip


def _feed(stopper, rows, stopped=None):
    """Feed rows as the driver does; a stopped trial reports no more."""
    stopped = set() if stopped is None else stopped
    out = []
    for trial, result in rows:
        if trial in stopped:
            continue
        stop, stop_all = stopper(trial, result), stopper.stop_all()
        out.append((trial, result["training_iteration"], stop, stop_all))
        if stop:
            stopped.add(trial)
        if stop_all:
            break
    return out


def test_maximum_iteration_counts_each_result_once():
    stopper = MaximumIterationStopper(max_iter=3)
    assert [stopper("a", {"training_iteration": i}) for i in (1, 2, 2, 1, 3)] == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert [stopper("b", {}) for _ in range(3)] == [False, False, True]  # no iteration: counted
    assert not stopper.stop_all()


def test_trial_plateau_window_grace_and_threshold():
    stopper = TrialPlateauStopper("loss", std=0.01, num_results=3, grace_period=4)
    values = [0.9, 0.5, 0.5, 0.5, 0.5]
    decisions = [
        stopper("a", {"training_iteration": i, "loss": v}) for i, v in enumerate(values, 1)
    ]
    assert decisions == [False, False, False, True, True]  # flat window of 3 once 4 results in
    gated = TrialPlateauStopper(
        "loss", num_results=2, grace_period=0, metric_threshold=0.2, mode="min"
    )
    assert [gated("a", {"training_iteration": i, "loss": 0.5}) for i in (1, 2, 3)] == [
        False,
        False,
        False,  # flat, but not yet good enough
    ]
    assert [gated("b", {"training_iteration": i, "loss": 0.1}) for i in (1, 2)] == [False, True]
    missing = TrialPlateauStopper("loss", num_results=2, grace_period=0)
    assert not missing("a", {"training_iteration": 1}) and not missing(
        "a", {"training_iteration": 2}
    )


def test_experiment_plateau_with_patience():
    stopper = ExperimentPlateauStopper("acc", std=0.01, top=2, mode="max", patience=2)
    stream = [("a", 0.5), ("b", 0.9), ("c", 0.9), ("d", 0.1), ("e", 0.2)]
    out = [stopper(t, {"training_iteration": 1, "acc": v}) for t, v in stream]
    # top two: [.5] [.5 .9] [.9 .9] plateau 1, [.9 .9] plateau 2 -> stop
    assert out == [False, False, False, True, True]
    assert stopper.stop_all()


def test_timeout_counts_only_time_the_driver_ran(monkeypatch):
    clock = iter([0.0, 4.0, 9.0, 100.0, 101.0, 102.0])
    stopper = TimeoutStopper(datetime.timedelta(seconds=10.5))
    stopper.clock = lambda: next(clock)
    assert [stopper.stop_all() for _ in range(3)] == [False, False, False]
    assert stopper.remaining_s == 1.5
    restored = TimeoutStopper(10.5)
    restored.clock = stopper.clock
    restored.from_state(round_trip(stopper.to_state()))
    # 91 s passed while no driver ran: not spent; the next two seconds are.
    assert [restored.stop_all(), restored.stop_all(), restored.stop_all()] == [False, False, True]
    assert not stopper("t", {})


def test_combined_lets_every_stopper_see_every_result():
    counts = MaximumIterationStopper(2)
    combined = CombinedStopper(FunctionStopper(lambda t, r: r["loss"] < 0.1), counts)
    assert combined("a", {"training_iteration": 1, "loss": 0.0})
    assert counts.state()["count"] == {"a": 1}  # counted although the first one stopped it
    assert combined("b", {"training_iteration": 1, "loss": 1.0}) is False
    assert combined("b", {"training_iteration": 2, "loss": 1.0}) is True


def _all_stoppers():
    return CombinedStopper(
        MaximumIterationStopper(16),
        TrialPlateauStopper("loss", std=0.01, num_results=4, grace_period=4),
        ExperimentPlateauStopper("loss", std=0.005, top=4),
    )


@pytest.mark.parametrize("cut", [0, 50, 120, 150])
def test_resume_from_stored_state_decides_exactly(cut):
    _, rows = curves()
    expected = _feed(_all_stoppers(), rows)
    # Trials stop on a plateau before the experiment does, after row 150.
    assert sum(stop for *_, stop, _ in expected[:-1]) >= 2 and expected[-1][-1]
    assert len(expected) > 150
    assert not any(stop_all for *_, stop_all in expected[:-1])
    first = _all_stoppers()
    stopped: set[str] = set()
    before = _feed(first, rows[:cut], stopped)
    resumed = _all_stoppers()
    resumed.from_state(round_trip(first.to_state()))
    replayed = _feed(resumed, rows[max(0, cut - 12) : cut], set(stopped))
    assert all(not stop for _, _, stop, _ in replayed)
    assert before + _feed(resumed, rows[cut:], stopped) == expected


def test_a_restore_with_other_stoppers_is_refused():
    stored = _all_stoppers().to_state()
    with pytest.raises(DecisionStateMismatchError, match="stoppers differ"):
        CombinedStopper(MaximumIterationStopper(20)).from_state(stored)
    with pytest.raises(DecisionStateMismatchError, match="max_iter differ"):
        MaximumIterationStopper(5).from_state(MaximumIterationStopper(6).to_state())


def test_base_requires_call():
    class Nothing(Stopper):
        pass

    with pytest.raises(NotImplementedError, match="Nothing must define __call__"):
        Nothing()("t", {})


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: MaximumIterationStopper(0), r"MaximumIterationStopper\(max_iter=...\)"),
        (lambda: TrialPlateauStopper(""), r"TrialPlateauStopper\(metric=...\)"),
        (lambda: TrialPlateauStopper("x", std=-1), r"TrialPlateauStopper\(std=...\)"),
        (lambda: TrialPlateauStopper("x", num_results=0), r"\(num_results=...\)"),
        (lambda: TrialPlateauStopper("x", metric_threshold=1), r"TrialPlateauStopper\(mode=...\)"),
        (lambda: ExperimentPlateauStopper("x", top=1), r"ExperimentPlateauStopper\(top=...\)"),
        (lambda: ExperimentPlateauStopper("x", mode=None), r"ExperimentPlateauStopper\(mode="),
        (lambda: ExperimentPlateauStopper("x", patience=-1), r"\(patience=...\)"),
        (lambda: TimeoutStopper(0), r"TimeoutStopper\(timeout=...\)"),
        (lambda: TimeoutStopper("1h"), r"TimeoutStopper\(timeout=...\)"),
        (lambda: CombinedStopper(lambda t, r: True), r"CombinedStopper\(stoppers=...\)"),
        (lambda: FunctionStopper(3), r"FunctionStopper\(function=...\)"),
    ],
)
def test_constructor_arguments_are_checked_by_name(build, match):
    with pytest.raises(ConfigError, match=match):
        build()
