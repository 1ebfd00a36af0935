"""Constructor checks shared by searchers, schedulers and stoppers: each names its field.

>>> positive_number("ASHAScheduler", "max_t", 0)
Traceback (most recent call last):
...
prefect_tune.exceptions.ConfigError: ASHAScheduler(max_t=...): must be a number > 0, got 0.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from prefect_tune.exceptions import ConfigError

__all__ = [
    "fail",
    "fraction",
    "integer",
    "metric_and_mode",
    "name",
    "number",
    "positive_number",
]


def fail(cls: str, field: str, message: str) -> ConfigError:
    """A ConfigError naming the class and the field: ``Cls(field=...): message``."""
    return ConfigError(f"{cls}({field}=...): {message}")


def number(cls: str, field: str, value: Any, minimum: float = -math.inf) -> float:
    """``value`` as a float, refused unless it is a finite real number >= ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < minimum
    ):
        bound = "" if minimum == -math.inf else f" >= {minimum:g}"
        raise fail(cls, field, f"must be a finite number{bound}, got {value!r}.")
    return float(value)


def positive_number(cls: str, field: str, value: Any) -> float:
    """``value`` as a float, refused unless it is a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise fail(cls, field, f"must be a number > 0, got {value!r}.")
    return float(value)


def integer(cls: str, field: str, value: Any, minimum: int) -> int:
    """``value`` as an int, refused unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise fail(cls, field, f"must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def fraction(cls: str, field: str, value: Any, upper: float = 1.0) -> float:
    """``value`` as a float, refused unless it lies in ``[0, upper]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= float(value) <= upper
    ):
        raise fail(cls, field, f"must be a number between 0 and {upper:g}, got {value!r}.")
    return float(value)


def name(cls: str, field: str, value: Any, allow_none: bool = True) -> str | None:
    """``value`` unless it is neither a non-empty string nor (when allowed) None."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise fail(cls, field, f"must be a non-empty result name, got {value!r}.")
    return value


def metric_and_mode(cls: str, metric: Any, mode: Any) -> tuple[str | None, str | None]:
    """``metric`` and ``mode``, checked; either may be None until the tuner sets both."""
    name(cls, "metric", metric)
    if mode not in (None, "min", "max"):
        raise fail(cls, "mode", f"must be 'min' or 'max', got {mode!r}.")
    return metric, mode
