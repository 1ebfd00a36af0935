"""What a running trial does after each ``report()``: the decisions and the controls that make them.

A control sees every result of the trial it is attached to, on the worker, inside ``report()``,
and answers with a :class:`Decision`. Anything other than CONTINUE unwinds the trainable from
inside ``report()`` with :class:`TrialStopped`. Stop conditions are a control today; schedulers
(ASHA, PBT) and the experiment's fence are others of the same shape.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Decision", "DecisionPoints", "StopCriteria", "TrialControl", "TrialStopped"]


class Decision(enum.Enum):
    """What a trial does after a ``report()``."""

    CONTINUE = "CONTINUE"
    STOP = "STOP"
    PAUSE = "PAUSE"
    #: The trial's driver lost the experiment to another driver: stop, and write nothing more.
    ABANDON = "ABANDON"


class TrialControl(Protocol):
    """Something that sees each result of a running trial and may stop or pause it.

    Controls run on the worker inside ``report()``, so they must be cheap and must not raise.
    """

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision: ...


@dataclass(frozen=True)
class DecisionPoints:
    """The results of one trial at which a scheduler takes a decision that changes its state
    (ASHA: the first result at or past each rung; the median rule: every result from its grace
    period on).

    A trial that reports such a result waits, inside that ``report()``, until the decision is
    stored and has come back: it never runs past a decision point whose decision a crash could
    lose (see :mod:`prefect_tune.engine._decisions`).

    Args:
        time_attr: The result that measures the trial's progress.
        milestones: Each first result with ``time_attr`` at or past one of these is a point.
        every_from: Every result with ``time_attr`` at or past this is a point.

    Examples:
        >>> points = DecisionPoints("training_iteration", milestones=(1.0, 3.0))
        >>> [points.crossed(last, now) for last, now in ((None, 1), (1, 2), (2, 4), (4, 5))]
        [True, False, True, False]
    """

    time_attr: str
    milestones: tuple[float, ...] = ()
    every_from: float | None = None

    def crossed(self, last: float | None, now: float) -> bool:
        """Whether the result whose ``time_attr`` is ``now`` is a point, the trial's previous
        one (in this task run) having been ``last`` (None: none)."""
        if self.every_from is not None and now >= self.every_from:
            return True
        return any(now >= m and (last is None or last < m) for m in self.milestones)


@dataclass(frozen=True)
class StopCriteria:
    """``RunConfig(stop=...)`` and ``TuneConfig(time_budget_s=...)`` applied to one trial.

    Examples:
        >>> StopCriteria({"training_iteration": 3}).on_result("t1", {"training_iteration": 3})
        <Decision.STOP: 'STOP'>
    """

    stop: Mapping[str, float] | Callable[[str, dict[str, Any]], bool] | None = None
    deadline: float | None = None

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        if self.deadline is not None and time.time() >= self.deadline:
            return Decision.STOP
        if self.stop is None:
            return Decision.CONTINUE
        if callable(self.stop):
            return Decision.STOP if self.stop(trial_id, dict(result)) else Decision.CONTINUE
        for key, threshold in self.stop.items():
            value = result.get(key)
            if isinstance(value, (int, float)) and value >= threshold:
                return Decision.STOP
        return Decision.CONTINUE


class TrialStopped(BaseException):
    """Raised inside ``report()`` to unwind a trainable whose trial was stopped or paused.

    A BaseException so that a trainable's ``except Exception`` cannot swallow it.
    """

    def __init__(self, decision: Decision):
        super().__init__(decision.value)
        self.decision = decision
