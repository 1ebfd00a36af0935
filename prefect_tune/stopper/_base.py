"""The stopper protocol, and the stoppers that combine or wrap others.

A stopper is asked, at each result of each trial, whether that trial stops (``__call__``) and
whether the whole experiment does (``stop_all``). Like a scheduler it is a decision core: it
decides from what it is told, its state is a versioned JSON document, and a result replayed
after a restore (a ``training_iteration`` it has seen) is not counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prefect_tune.engine._checks import fail
from prefect_tune.engine._decision_state import Stateful, result_number

__all__ = ["CombinedStopper", "FunctionStopper", "Stopper"]


class Stopper(Stateful):
    """Base of the stoppers: says when a trial, or the whole experiment, stops.

    Subclass it and override ``__call__`` (and ``stop_all``); a subclass with state a restore
    needs overrides ``settings``, ``state`` and ``load`` too.

    Examples:
        >>> class LossBelow(Stopper):
        ...     def __call__(self, trial_id, result):
        ...         return result["loss"] < 0.1
        >>> LossBelow()("t1", {"loss": 0.05}), LossBelow().stop_all()
        (True, False)
    """

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        """Whether the trial that reported ``result`` stops now."""
        raise NotImplementedError(f"{type(self).__name__} must define __call__(trial_id, result).")

    def stop_all(self) -> bool:
        """Whether the whole experiment stops now; asked after each result."""
        return False


class _PerTrialCounter:
    """Counts each trial's results once, whatever a restore replays."""

    def __init__(self) -> None:
        self.last_iteration: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def fresh(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        """True for a result not seen before; counts it. Without a training_iteration, True."""
        iteration = result_number(result, "training_iteration")
        if iteration is not None:
            last = self.last_iteration.get(trial_id)
            if last is not None and iteration <= last:
                return False
            self.last_iteration[trial_id] = iteration
        self.count[trial_id] = self.count.get(trial_id, 0) + 1
        return True

    def state(self) -> dict[str, Any]:
        return {
            "last_iteration": dict(sorted(self.last_iteration.items())),
            "count": dict(sorted(self.count.items())),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self.last_iteration = {str(k): float(v) for k, v in data["last_iteration"].items()}
        self.count = {str(k): int(v) for k, v in data["count"].items()}


class FunctionStopper(Stopper):
    """A function ``(trial_id, result) -> bool`` as a stopper; it keeps no state of its own.

    Examples:
        >>> FunctionStopper(lambda trial_id, result: result["loss"] < 0.1)("t", {"loss": 0.0})
        True
    """

    def __init__(self, function: Callable[[str, dict[str, Any]], bool]) -> None:
        if not callable(function):
            raise fail(type(self).__name__, "function", f"must be callable, got {function!r}.")
        self._function = function

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        return bool(self._function(trial_id, dict(result)))


class CombinedStopper(Stopper):
    """Stops when any of its stoppers would; every one of them sees every result.

    Args:
        *stoppers: The stoppers to combine.

    Raises:
        ConfigError: One of them is not a :class:`Stopper`.

    Examples:
        >>> from prefect_tune.stopper import MaximumIterationStopper, TimeoutStopper
        >>> stopper = CombinedStopper(MaximumIterationStopper(2), TimeoutStopper(3600))
        >>> [stopper("t", {"training_iteration": i}) for i in (1, 2)]
        [False, True]
    """

    def __init__(self, *stoppers: Stopper) -> None:
        for i, stopper in enumerate(stoppers):
            if not isinstance(stopper, Stopper):
                raise fail(
                    type(self).__name__,
                    "stoppers",
                    f"argument {i} must be a Stopper, got {type(stopper).__name__}; wrap a "
                    f"function in FunctionStopper.",
                )
        self._stoppers = tuple(stoppers)

    @property
    def stoppers(self) -> tuple[Stopper, ...]:
        return self._stoppers

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        # A list, not any(): every stopper must see the result, stateful ones count it.
        return any([stopper(trial_id, result) for stopper in self._stoppers])

    def stop_all(self) -> bool:
        return any([stopper.stop_all() for stopper in self._stoppers])

    def settings(self) -> dict[str, Any]:
        return {"stoppers": [[type(s).__name__, s.settings()] for s in self._stoppers]}

    def state(self) -> dict[str, Any]:
        return {"stoppers": [s.to_state() for s in self._stoppers]}

    def load(self, data: Mapping[str, Any]) -> None:
        for stopper, document in zip(self._stoppers, data["stoppers"], strict=True):
            stopper.from_state(document)
