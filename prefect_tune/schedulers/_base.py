"""The scheduler protocol: what a scheduler sees of each trial and what it answers.

A scheduler is a pure decision core: it is told of trials added, of every reported result and
of trials that ended, and answers each result with a :class:`~prefect_tune.engine.Decision`. It
does no I/O and reads no clock, so it is tested on recorded result streams, and its state is a
versioned JSON document (:meth:`TrialScheduler.to_state`) stored with the experiment, so that a
restore resumes it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from prefect_tune.engine._checks import fail, metric_and_mode
from prefect_tune.engine._control import Decision, DecisionPoints
from prefect_tune.engine._decision_state import Stateful

__all__ = ["FIFOScheduler", "TrialScheduler"]


class TrialScheduler(Stateful):
    """Base of the schedulers: decides, at each result of a trial, whether it goes on.

    Subclass it and override :meth:`on_trial_result` (and ``settings``, ``state`` and
    ``load`` if the subclass keeps state a restore needs: ``to_state()`` and ``from_state()``
    store them as a versioned document). The methods are called by
    one thread of the driver, one event at a time, in the order the events were stored; they
    must not raise on a result they cannot use (answer CONTINUE instead).

    Unlike Ray Tune, whose methods also take the controller and a ``Trial`` object, these take
    the trial's id: the decision depends on the recorded results only, which is what makes it
    replay exactly after a crash.

    Attributes:
        CONTINUE: The trial goes on.
        PAUSE: The trial's task run ends; it resumes later as a new task run.
        STOP: The trial ends TERMINATED, its checkpoints kept.
        waiting_trials: How many trials are waiting to run, set by the driver before each call;
            a scheduler that pauses trials to share the cluster (the median rule) reads it.

    Examples:
        >>> class StopAtFive(TrialScheduler):
        ...     def on_trial_result(self, trial_id, result):
        ...         return self.STOP if result["training_iteration"] >= 5 else self.CONTINUE
        >>> StopAtFive().on_trial_result("t1", {"training_iteration": 5})
        <Decision.STOP: 'STOP'>
    """

    #: Whether the driver calls :meth:`on_trial_complete` and :meth:`on_trial_error` when a
    #: trial ends (PBT: the trial leaves the population). False keeps a scheduler's state a
    #: function of the results alone, which is what ASHA's and the median rule's stored state
    #: and its catch-up on restore assume.
    hears_trial_ends: ClassVar[bool] = False

    CONTINUE: ClassVar[Decision] = Decision.CONTINUE
    PAUSE: ClassVar[Decision] = Decision.PAUSE
    STOP: ClassVar[Decision] = Decision.STOP

    def __init__(self, metric: str | None = None, mode: str | None = None) -> None:
        self._metric, self._mode = metric_and_mode(type(self).__name__, metric, mode)
        self.waiting_trials = 0

    @property
    def metric(self) -> str | None:
        """The result that ranks trials, or None until the tuner sets it."""
        return self._metric

    @property
    def mode(self) -> str | None:
        """``"min"`` or ``"max"``, or None until the tuner sets it."""
        return self._mode

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take ``TuneConfig``'s metric and mode where the scheduler was given none.

        Returns:
            False when the scheduler already has a metric or a mode of its own and one is
            given again (Ray Tune's rule: the tuner then refuses the pair).

        Raises:
            ConfigError: ``mode`` is not ``"min"`` or ``"max"``.
        """
        if (self._metric and metric) or (self._mode and mode):
            return False
        metric, mode = metric_and_mode(type(self).__name__, metric, mode)
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """A trial was created with ``config``; called once per trial, before its results."""

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        """A running trial reported ``result``; the answer reaches it at its next ``report()``."""
        return Decision.CONTINUE

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        """The trial ended TERMINATED; ``result`` is its last result, if any."""

    def decision_points(self, trial_id: str) -> DecisionPoints | None:
        """The results of ``trial_id`` whose decision changes this scheduler's state; the
        trial waits at each until its decision is stored (None: it never waits).

        Override it in a scheduler whose decisions depend on earlier ones (rungs, a
        population): a decision a crash could lose is then never acted on. Called after
        :meth:`on_trial_add`.
        """
        return None

    def on_trial_error(self, trial_id: str) -> None:
        """The trial ended in ERROR."""

    def on_trial_remove(self, trial_id: str) -> None:
        """The trial was stopped by a decision (this scheduler's or a stopper's)."""

    def settings(self) -> dict[str, Any]:
        return {"metric": self._metric, "mode": self._mode}

    def _require_metric(self) -> tuple[str, float]:
        """The metric and the sign that makes higher better, or a ConfigError."""
        if not self._metric or not self._mode:
            raise fail(
                type(self).__name__,
                "metric",
                "needs a metric and a mode: pass metric= and mode= to the scheduler or to "
                "TuneConfig.",
            )
        return self._metric, 1.0 if self._mode == "max" else -1.0


class FIFOScheduler(TrialScheduler):
    """The default: every trial runs until it ends or a stop condition ends it.

    Examples:
        >>> FIFOScheduler().on_trial_result("t1", {"loss": 1.0})
        <Decision.CONTINUE: 'CONTINUE'>
    """

    def __init__(self) -> None:
        super().__init__()
