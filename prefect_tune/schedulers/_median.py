"""The median stopping rule of Google Vizier, as Ray Tune's ``MedianStoppingRule`` applies it.

At time ``t`` (past ``grace_period``) a trial stops if its best result so far is worse than the
median, over the other trials that reached ``t``, of their mean result between
``grace_period`` and ``t``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from prefect_tune.engine._checks import fail, integer, name, number
from prefect_tune.engine._control import Decision, DecisionPoints
from prefect_tune.engine._decision_state import result_number
from prefect_tune.schedulers._base import TrialScheduler

__all__ = ["MedianStoppingRule"]


class MedianStoppingRule(TrialScheduler):
    """Stops a trial whose best result is worse than the median of the others' running means.

    Args:
        time_attr: The result that measures progress; must grow with each report.
        metric: The result to optimise; TuneConfig's when None.
        mode: ``"min"`` or ``"max"``; TuneConfig's when None.
        grace_period: No trial stops before this many units of ``time_attr``, and means count
            results from there on.
        min_samples_required: Other trials that must have reached ``t`` before a trial is
            judged at ``t``.
        min_time_slice: With too few samples to judge and other trials waiting to run, a trial
            yields (PAUSE) at most once per this many units of ``time_attr``.
        hard_stop: Stop a trial that falls behind (True) or pause it (False); a paused one then
            runs on, never judged again.

    Raises:
        ConfigError: An argument is out of range; the message names it.

    Examples:
        >>> rule = MedianStoppingRule(metric="loss", mode="min", time_attr="training_iteration",
        ...                           grace_period=1, min_samples_required=2)
        >>> for trial, loss in [("a", 1.0), ("b", 2.0), ("c", 9.0)]:
        ...     rule.on_trial_add(trial, {})
        ...     decision = rule.on_trial_result(trial, {"training_iteration": 1, "loss": loss})
        >>> decision
        <Decision.STOP: 'STOP'>
    """

    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        grace_period: float = 60.0,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ) -> None:
        cls = type(self).__name__
        super().__init__(metric, mode)
        self._time_attr = name(cls, "time_attr", time_attr, allow_none=False) or ""
        self._grace_period = number(cls, "grace_period", grace_period, 0)
        self._min_samples_required = integer(cls, "min_samples_required", min_samples_required, 1)
        self._min_time_slice = number(cls, "min_time_slice", min_time_slice, 0)
        if not isinstance(hard_stop, bool):
            raise fail(cls, "hard_stop", f"must be True or False, got {hard_stop!r}.")
        self._hard_stop = hard_stop
        self._results: dict[str, list[tuple[float, float]]] = {}
        self._stopped: set[str] = set()
        self._last_pause: dict[str, float] = {}

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        self._require_metric()

    def decision_points(self, trial_id: str) -> DecisionPoints:
        """Every result from ``grace_period`` on: each is judged against the others."""
        return DecisionPoints(self._time_attr, every_from=self._grace_period)

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        metric, sign = self._require_metric()
        time, value = result_number(result, self._time_attr), result_number(result, metric)
        if time is None or value is None:
            return Decision.CONTINUE
        if trial_id in self._stopped:
            return Decision.CONTINUE  # paused once for falling behind: runs on, first in first out
        history = self._results.setdefault(trial_id, [])
        if history and time <= history[-1][0]:
            return Decision.CONTINUE  # a result replayed after a restore: judged already
        history.append((time, sign * value))
        if time < self._grace_period:
            return Decision.CONTINUE
        others = [
            other
            for other, rows in self._results.items()
            if other != trial_id and rows[-1][0] >= time
        ]
        if len(others) < self._min_samples_required:
            last = self._last_pause.get(trial_id)
            if self.waiting_trials > 0 and (last is None or time - last > self._min_time_slice):
                self._last_pause[trial_id] = time
                return Decision.PAUSE
            return Decision.CONTINUE
        median = float(np.median([self._running_mean(other, time) for other in others]))
        best = max(score for _, score in history)
        if best < median:
            self._stopped.add(trial_id)
            return Decision.STOP if self._hard_stop else Decision.PAUSE
        return Decision.CONTINUE

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        metric, sign = self._require_metric()
        if result is None:
            return
        time, value = result_number(result, self._time_attr), result_number(result, metric)
        history = self._results.setdefault(trial_id, [])
        if time is not None and value is not None and (not history or time > history[-1][0]):
            history.append((time, sign * value))

    def _running_mean(self, trial_id: str, time: float) -> float:
        scores = [s for t, s in self._results[trial_id] if self._grace_period <= t <= time]
        return float(np.mean(scores))

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "time_attr": self._time_attr,
            "grace_period": self._grace_period,
            "min_samples_required": self._min_samples_required,
            "min_time_slice": self._min_time_slice,
            "hard_stop": self._hard_stop,
        }

    def state(self) -> dict[str, Any]:
        return {
            "results": {k: [list(row) for row in v] for k, v in sorted(self._results.items())},
            "stopped": sorted(self._stopped),
            "last_pause": dict(sorted(self._last_pause.items())),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._results = {
            str(k): [(float(t), float(s)) for t, s in rows] for k, rows in data["results"].items()
        }
        self._stopped = {str(k) for k in data["stopped"]}
        self._last_pause = {str(k): float(v) for k, v in data["last_pause"].items()}
