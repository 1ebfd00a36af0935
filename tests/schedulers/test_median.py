"""The median stopping rule on recorded result streams."""

from __future__ import annotations

import pytest

from prefect_tune.engine import Decision
from prefect_tune.exceptions import ConfigError
from prefect_tune.schedulers import MedianStoppingRule
from tests.schedulers._streams import add_all, curves, replay, round_trip

CONTINUE, PAUSE, STOP = Decision.CONTINUE, Decision.PAUSE, Decision.STOP


def _rule(**kwargs):
    settings = dict(
        metric="loss",
        mode="min",
        time_attr="training_iteration",
        grace_period=2,
        min_samples_required=2,
    )
    return MedianStoppingRule(**{**settings, **kwargs})


def _report(rule, trial, t, loss):
    return rule.on_trial_result(trial, {"training_iteration": t, "loss": loss})


def test_stops_a_trial_whose_best_is_worse_than_the_median_of_running_means():
    rule = _rule()
    for trial in "abc":
        rule.on_trial_add(trial, {})
    for t, losses in [(1, (9.0, 9.0, 9.0)), (2, (1.0, 3.0, 2.0)), (3, (1.0, 1.0, None))]:
        for trial, loss in zip("abc", losses, strict=True):
            if loss is not None:
                assert _report(rule, trial, t, loss) is CONTINUE, (trial, t)
    # At t=2, c's 2.0 ties the median of a's and b's means (1.0, 3.0): not worse, it goes on.
    # At t=3: c's best is 2.0; the means of a and b from the grace period to t=3 are 1.0 and
    # 2.0, their median 1.5: c stops.
    assert _report(rule, "c", 3, 4.0) is STOP
    assert _report(rule, "b", 4, 1.0) is CONTINUE  # no other trial reached t=4


def test_grace_period_and_too_few_samples_continue_unless_others_wait():
    rule = _rule(min_samples_required=3)
    for trial in "ab":
        rule.on_trial_add(trial, {})
    assert _report(rule, "a", 1, 5.0) is CONTINUE  # grace period
    assert _report(rule, "a", 2, 5.0) is CONTINUE  # no other trial at t=2
    rule.waiting_trials = 1
    assert _report(rule, "a", 3, 5.0) is PAUSE  # yields to a waiting trial
    rule = _rule(min_samples_required=3, min_time_slice=2)
    rule.on_trial_add("a", {})
    rule.waiting_trials = 1
    assert [_report(rule, "a", t, 1.0) for t in range(2, 7)] == [
        PAUSE,
        CONTINUE,
        CONTINUE,
        PAUSE,
        CONTINUE,
    ]


def test_soft_stop_pauses_once_then_the_trial_runs_on():
    rule = _rule(hard_stop=False, min_samples_required=1)
    for trial in "ab":
        rule.on_trial_add(trial, {})
    assert _report(rule, "a", 2, 1.0) is CONTINUE
    assert _report(rule, "b", 2, 3.0) is PAUSE
    assert _report(rule, "b", 3, 9.0) is CONTINUE


def test_resume_decides_exactly_and_replayed_results_are_not_counted_twice():
    configs, rows = curves()
    straight = _rule(min_samples_required=3)
    add_all(straight, configs)
    expected = replay(straight, rows)
    assert any(d is STOP for _, _, d in expected)
    first = _rule(min_samples_required=3)
    add_all(first, configs)
    stopped: set[str] = set()
    before = replay(first, rows[:100], stopped)
    resumed = _rule(min_samples_required=3)
    resumed.from_state(round_trip(first.to_state()))
    assert [d for _, _, d in replay(resumed, rows[90:100], set(stopped))] == [CONTINUE] * sum(
        1 for t, _ in rows[90:100] if t not in stopped
    )
    assert before + replay(resumed, rows[100:], stopped) == expected
    assert resumed.to_state() == straight.to_state()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"grace_period": -1}, "grace_period"),
        ({"min_samples_required": 0}, "min_samples_required"),
        ({"min_time_slice": "1"}, "min_time_slice"),
        ({"hard_stop": 1}, "hard_stop"),
        ({"metric": ""}, "metric"),
    ],
)
def test_constructor_arguments_are_checked_by_name(kwargs, field):
    with pytest.raises(ConfigError, match=rf"MedianStoppingRule\({field}=\.\.\.\)"):
        _rule(**kwargs)
