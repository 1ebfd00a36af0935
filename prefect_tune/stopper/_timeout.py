"""Stop the experiment after a wall-clock budget."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from typing import Any

from prefect_tune.engine._checks import fail, positive_number
from prefect_tune.stopper._base import Stopper

__all__ = ["TimeoutStopper"]


class TimeoutStopper(Stopper):
    """Stops every trial once the experiment has run for ``timeout``.

    The budget counts the time between the first check and the last: stored with the
    experiment, it carries across a restore, and the time the driver was down is not spent
    (as Ray Tune, whose restored ``TimeoutStopper`` keeps its remaining budget).

    Args:
        timeout: Seconds, or a ``datetime.timedelta``.

    Raises:
        ConfigError: ``timeout`` is not a positive duration.

    Examples:
        >>> TimeoutStopper(datetime.timedelta(minutes=5)).stop_all()
        False
    """

    def __init__(self, timeout: float | datetime.timedelta) -> None:
        cls = type(self).__name__
        if isinstance(timeout, datetime.timedelta):
            timeout = timeout.total_seconds()
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise fail(cls, "timeout", f"must be seconds or a datetime.timedelta, got {timeout!r}.")
        self._timeout = positive_number(cls, "timeout", timeout)
        self._spent = 0.0
        self._last_check: float | None = None
        #: The clock read; a test may replace it.
        self.clock: Callable[[], float] = time.monotonic

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        return False  # stop_all stops every trial at once

    def stop_all(self) -> bool:
        now = self.clock()
        if self._last_check is not None:
            self._spent += max(0.0, now - self._last_check)
        self._last_check = now
        return self._spent >= self._timeout

    @property
    def remaining_s(self) -> float:
        """Seconds of the budget left, as of the last check."""
        return max(0.0, self._timeout - self._spent)

    def settings(self) -> dict[str, Any]:
        return {"timeout": self._timeout}

    def state(self) -> dict[str, Any]:
        return {"spent_s": self._spent}

    def load(self, data: Mapping[str, Any]) -> None:
        self._spent = float(data["spent_s"])
        self._last_check = None  # the time the driver was down is not spent
