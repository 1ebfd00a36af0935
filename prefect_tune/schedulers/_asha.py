"""Asynchronous successive halving (ASHA), as Ray Tune's ``AsyncHyperBandScheduler`` runs it.

Each bracket has rungs at ``grace_period * reduction_factor ** (k + s)`` units of ``time_attr``.
The first result of a trial at or past a rung's milestone is recorded in that rung and compared
with the rung's ``1 - 1 / reduction_factor`` quantile of the results recorded before it: below
it, the trial stops. A trial is recorded once per rung, so a result replayed after a restore
(or reported again past a rung it passed) is never judged at that rung twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from prefect_tune.engine._checks import fail, integer, name, positive_number
from prefect_tune.engine._control import Decision, DecisionPoints
from prefect_tune.engine._decision_state import derived_rng, result_number
from prefect_tune.schedulers._base import TrialScheduler

__all__ = ["ASHAScheduler", "AsyncHyperBandScheduler"]


class AsyncHyperBandScheduler(TrialScheduler):
    """Stops the trials that fall behind at each rung; the rest run on, up to ``max_t``.

    Args:
        time_attr: The result that measures progress; must grow with each report.
        metric: The result to optimise; TuneConfig's when None.
        mode: ``"min"`` or ``"max"``; TuneConfig's when None.
        max_t: Trials stop once ``time_attr`` reaches this.
        grace_period: No trial stops before this many units of ``time_attr``: the first rung.
        reduction_factor: Each rung keeps ``1 / reduction_factor`` of the trials it sees.
        brackets: Brackets with first rungs at ``grace_period * reduction_factor ** s``; each
            trial joins one, drawn from its id with Ray Tune's softmax weights over the
            brackets' rung counts.
        stop_last_trials: Stop trials at ``max_t`` (True, as Ray Tune) or let them run on.

    Raises:
        ConfigError: An argument is out of range; the message names it.

    Examples:
        >>> asha = ASHAScheduler(metric="acc", mode="max", grace_period=1, max_t=9,
        ...                      reduction_factor=3)
        >>> for trial, acc in [("a", 0.1), ("b", 0.8), ("c", 0.3)]:
        ...     asha.on_trial_add(trial, {})
        ...     print(trial, asha.on_trial_result(trial, {"training_iteration": 1, "acc": acc}))
        a Decision.CONTINUE
        b Decision.CONTINUE
        c Decision.STOP
    """

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        stop_last_trials: bool = True,
    ) -> None:
        cls = type(self).__name__
        super().__init__(metric, mode)
        self._time_attr = name(cls, "time_attr", time_attr, allow_none=False) or ""
        self._max_t = positive_number(cls, "max_t", max_t)
        self._grace_period = positive_number(cls, "grace_period", grace_period)
        if self._grace_period > self._max_t:
            raise fail(cls, "grace_period", f"must be <= max_t ({max_t!r}), got {grace_period!r}.")
        self._reduction_factor = positive_number(cls, "reduction_factor", reduction_factor)
        if self._reduction_factor <= 1:
            raise fail(cls, "reduction_factor", f"must be a number > 1, got {reduction_factor!r}.")
        self._brackets = integer(cls, "brackets", brackets, 1)
        if not isinstance(stop_last_trials, bool):
            raise fail(cls, "stop_last_trials", f"must be True or False, got {stop_last_trials!r}.")
        self._stop_last_trials = stop_last_trials
        self._rungs: list[list[tuple[float, dict[str, float]]]] = [
            [(milestone, {}) for milestone in self._milestones(s)] for s in range(self._brackets)
        ]
        self._bracket_of: dict[str, int] = {}
        self._num_stopped = 0

    def _milestones(self, s: int) -> list[float]:
        count = int(
            math.log(self._max_t / self._grace_period) / math.log(self._reduction_factor) - s + 1
        )
        # Highest first: a result is judged at the highest rung it reached and not yet passed.
        return [
            self._grace_period * self._reduction_factor ** (k + s) for k in reversed(range(count))
        ]

    @property
    def rungs(self) -> list[list[tuple[float, dict[str, float]]]]:
        """Per bracket, its rungs highest first: (milestone, trial id -> signed score)."""
        return [[(m, dict(recorded)) for m, recorded in bracket] for bracket in self._rungs]

    @property
    def num_stopped(self) -> int:
        """Trials this scheduler stopped."""
        return self._num_stopped

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        self._require_metric()
        self._bracket(trial_id)

    def _bracket(self, trial_id: str) -> int:
        if trial_id not in self._bracket_of:
            sizes = np.array([len(rungs) for rungs in self._rungs], dtype=float)
            weights = np.exp(sizes - sizes.max())
            draw = derived_rng("asha-bracket", trial_id).random() * float(weights.sum())
            self._bracket_of[trial_id] = int(np.searchsorted(np.cumsum(weights), draw, "right"))
            self._bracket_of[trial_id] = min(self._bracket_of[trial_id], self._brackets - 1)
        return self._bracket_of[trial_id]

    def decision_points(self, trial_id: str) -> DecisionPoints:
        """The trial's rungs (and ``max_t`` when trials stop there): its rung decisions."""
        milestones = [m for m, _ in self._rungs[self._bracket(trial_id)]]
        if self._stop_last_trials:
            milestones.append(self._max_t)
        return DecisionPoints(self._time_attr, milestones=tuple(sorted(set(milestones))))

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        metric, sign = self._require_metric()
        time, value = result_number(result, self._time_attr), result_number(result, metric)
        if time is None or value is None:
            return Decision.CONTINUE
        if time >= self._max_t and self._stop_last_trials:
            decision = Decision.STOP
        else:
            decision = self._judge(trial_id, time, sign * value)
        if decision is Decision.STOP:
            self._num_stopped += 1
        return decision

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        metric, sign = self._require_metric()
        if result is None:
            return
        time, value = result_number(result, self._time_attr), result_number(result, metric)
        if time is not None and value is not None:
            self._judge(trial_id, time, sign * value)

    def _judge(self, trial_id: str, time: float, score: float) -> Decision:
        for milestone, recorded in self._rungs[self._bracket(trial_id)]:
            if time >= milestone and trial_id in recorded and not self._stop_last_trials:
                break  # the decision to go on past this rung was taken already
            if time < milestone or trial_id in recorded:
                continue
            cutoff = self._cutoff(recorded)
            recorded[trial_id] = score
            return Decision.STOP if cutoff is not None and score < cutoff else Decision.CONTINUE
        return Decision.CONTINUE

    def _cutoff(self, recorded: Mapping[str, float]) -> float | None:
        if not recorded:
            return None
        values = np.array(list(recorded.values()), dtype=float)
        if np.isnan(values).all():
            return None
        return float(np.nanpercentile(values, (1 - 1 / self._reduction_factor) * 100))

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "time_attr": self._time_attr,
            "max_t": self._max_t,
            "grace_period": self._grace_period,
            "reduction_factor": self._reduction_factor,
            "brackets": self._brackets,
            "stop_last_trials": self._stop_last_trials,
        }

    def state(self) -> dict[str, Any]:
        return {
            "bracket_of": dict(sorted(self._bracket_of.items())),
            "rungs": [
                [{"milestone": m, "recorded": dict(recorded)} for m, recorded in bracket]
                for bracket in self._rungs
            ],
            "num_stopped": self._num_stopped,
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._bracket_of = {str(k): int(v) for k, v in data["bracket_of"].items()}
        self._rungs = [
            [(float(rung["milestone"]), dict(rung["recorded"])) for rung in bracket]
            for bracket in data["rungs"]
        ]
        self._num_stopped = int(data["num_stopped"])


#: Ray Tune's short name for the same scheduler.
ASHAScheduler = AsyncHyperBandScheduler
