"""Stop a trial, or the experiment, once its metric stops moving."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from prefect_tune.engine._checks import fail, integer, name, number, positive_number
from prefect_tune.engine._decision_state import result_number
from prefect_tune.stopper._base import Stopper, _PerTrialCounter

__all__ = ["ExperimentPlateauStopper", "TrialPlateauStopper"]


class TrialPlateauStopper(Stopper):
    """Stops a trial whose last ``num_results`` values of ``metric`` have a std below ``std``.

    Args:
        metric: The result to watch.
        std: The standard deviation under which the trial has plateaued.
        num_results: How many of the latest values are compared.
        grace_period: No stop before this many results of the trial.
        metric_threshold: With ``mode``, no stop until the metric is at least this good.
        mode: ``"min"`` or ``"max"``: which side of ``metric_threshold`` is good.

    Raises:
        ConfigError: An argument is out of range, or ``metric_threshold`` lacks ``mode``.

    Examples:
        >>> stopper = TrialPlateauStopper("loss", std=0.01, num_results=3, grace_period=3)
        >>> [stopper("t", {"training_iteration": i, "loss": v})
        ...  for i, v in enumerate([0.9, 0.5, 0.5, 0.5], 1)]
        [False, False, False, True]
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.01,
        num_results: int = 4,
        grace_period: int = 4,
        metric_threshold: float | None = None,
        mode: str | None = None,
    ) -> None:
        cls = type(self).__name__
        self._metric = name(cls, "metric", metric, allow_none=False) or ""
        self._std = number(cls, "std", std, 0)
        self._num_results = integer(cls, "num_results", num_results, 1)
        self._grace_period = integer(cls, "grace_period", grace_period, 0)
        self._threshold = (
            None if metric_threshold is None else number(cls, "metric_threshold", metric_threshold)
        )
        if mode not in (None, "min", "max"):
            raise fail(cls, "mode", f"must be 'min' or 'max', got {mode!r}.")
        if self._threshold is not None and mode is None:
            raise fail(cls, "mode", "must be 'min' or 'max' when metric_threshold is given.")
        self._mode = mode
        self._counter = _PerTrialCounter()
        self._window: dict[str, list[float]] = {}

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        value = result_number(result, self._metric)
        if not self._counter.fresh(trial_id, result):
            return False  # replayed: judged already
        window = self._window.setdefault(trial_id, [])
        window.append(np.nan if value is None else value)
        del window[: -self._num_results]
        if self._counter.count[trial_id] < self._grace_period or len(window) < self._num_results:
            return False
        if self._not_good_enough(value):
            return False
        current = float(np.std(window))
        return bool(np.isfinite(current) and current <= self._std)

    def _not_good_enough(self, value: float | None) -> bool:
        if self._threshold is None or value is None:
            return False
        return value > self._threshold if self._mode == "min" else value < self._threshold

    def settings(self) -> dict[str, Any]:
        return {
            "metric": self._metric,
            "std": self._std,
            "num_results": self._num_results,
            "grace_period": self._grace_period,
            "metric_threshold": self._threshold,
            "mode": self._mode,
        }

    def state(self) -> dict[str, Any]:
        return {**self._counter.state(), "window": dict(sorted(self._window.items()))}

    def load(self, data: Mapping[str, Any]) -> None:
        self._counter.load(data)
        self._window = {str(k): [float(v) for v in w] for k, w in data["window"].items()}


class ExperimentPlateauStopper(Stopper):
    """Stops the experiment once the ``top`` best values of ``metric`` stop improving.

    After each result, the best ``top`` values reported by any trial are kept; when there are
    ``top`` of them and their std is at most ``std`` for ``patience`` results in a row (at
    once when 0), every trial stops.

    Args:
        metric: The result to watch.
        std: The standard deviation under which the experiment has plateaued.
        top: How many of the best values are compared; at least 2.
        mode: ``"min"`` or ``"max"``.
        patience: Results in a row on the plateau before the experiment stops (as Ray Tune
            counts them: 0 and 1 both stop at the first).

    Raises:
        ConfigError: An argument is out of range; the message names it.

    Examples:
        >>> stopper = ExperimentPlateauStopper("loss", top=2, mode="min")
        >>> [stopper(t, {"training_iteration": 1, "loss": 0.5}) for t in ("a", "b")]
        [False, True]
    """

    def __init__(
        self,
        metric: str,
        std: float = 0.001,
        top: int = 10,
        mode: str = "min",
        patience: int = 0,
    ) -> None:
        cls = type(self).__name__
        self._metric = name(cls, "metric", metric, allow_none=False) or ""
        self._std = positive_number(cls, "std", std)
        self._top = integer(cls, "top", top, 2)
        if mode not in ("min", "max"):
            raise fail(cls, "mode", f"must be 'min' or 'max', got {mode!r}.")
        self._mode = mode
        self._patience = integer(cls, "patience", patience, 0)
        self._counter = _PerTrialCounter()
        self._top_values: list[float] = []
        self._iterations = 0

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        value = result_number(result, self._metric)
        if value is None or not self._counter.fresh(trial_id, result):
            return self.stop_all()
        ranked = sorted([*self._top_values, value])
        self._top_values = ranked[: self._top] if self._mode == "min" else ranked[-self._top :]
        self._iterations = self._iterations + 1 if self._plateaued() else 0
        return self.stop_all()

    def _plateaued(self) -> bool:
        return len(self._top_values) == self._top and float(np.std(self._top_values)) <= self._std

    def stop_all(self) -> bool:
        return self._plateaued() and self._iterations >= self._patience

    def settings(self) -> dict[str, Any]:
        return {
            "metric": self._metric,
            "std": self._std,
            "top": self._top,
            "mode": self._mode,
            "patience": self._patience,
        }

    def state(self) -> dict[str, Any]:
        return {
            **self._counter.state(),
            "top_values": list(self._top_values),
            "iterations": self._iterations,
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._counter.load(data)
        self._top_values = [float(v) for v in data["top_values"]]
        self._iterations = int(data["iterations"])
