"""Stop each trial after a number of results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_tune.engine._checks import integer
from prefect_tune.stopper._base import Stopper, _PerTrialCounter

__all__ = ["MaximumIterationStopper"]


class MaximumIterationStopper(Stopper):
    """Stops a trial once it has reported ``max_iter`` results.

    A result replayed after a restore (a ``training_iteration`` already counted) is not
    counted again.

    Args:
        max_iter: Results per trial.

    Raises:
        ConfigError: ``max_iter`` is not an integer >= 1.

    Examples:
        >>> stopper = MaximumIterationStopper(max_iter=2)
        >>> [stopper("t", {"training_iteration": i}) for i in (1, 1, 2)]
        [False, False, True]
    """

    def __init__(self, max_iter: int) -> None:
        self._max_iter = integer(type(self).__name__, "max_iter", max_iter, 1)
        self._counter = _PerTrialCounter()

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        self._counter.fresh(trial_id, result)
        return self._counter.count.get(trial_id, 0) >= self._max_iter

    def settings(self) -> dict[str, Any]:
        return {"max_iter": self._max_iter}

    def state(self) -> dict[str, Any]:
        return self._counter.state()

    def load(self, data: Mapping[str, Any]) -> None:
        self._counter.load(data)
