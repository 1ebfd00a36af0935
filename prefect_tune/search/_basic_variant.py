"""Ray Tune's default search algorithm as a :class:`Searcher`: grid and random search.

Configs come from the engine's generator, a pure function of ``(seed, index)``; this searcher
adds ``points_to_evaluate`` (run first, each over the whole grid, each one of ``num_samples``,
as in Ray Tune) and the record of which trial got which index, so a restore suggests each
index exactly once.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from prefect_tune.engine._checks import fail
from prefect_tune.engine._decision_state import json_copy
from prefect_tune.engine._search import BasicVariantGenerator as _Generator
from prefect_tune.engine._search import describe_param_space
from prefect_tune.search._searcher import Searcher, Suggestion

__all__ = ["BasicVariantGenerator"]


class BasicVariantGenerator(Searcher):
    """Every grid combination, ``num_samples`` times, random values drawn afresh each time.

    Args:
        points_to_evaluate: Configs (whole or partial) to run first; values they leave out
            are sampled from ``param_space``. Each one is one of ``num_samples``, run over
            every grid combination; more points than samples run them all.
        random_state: Seed of every random draw (an integer); TuneConfig's ``seed`` when None.

    Raises:
        ConfigError: ``points_to_evaluate`` is not a list of dicts, or ``random_state`` not an
            integer.

    Examples:
        >>> from prefect_tune import space
        >>> search = BasicVariantGenerator(points_to_evaluate=[{"lr": 0.5}], random_state=0)
        >>> search.set_search_properties(None, None, {"lr": space.uniform(0, 1)}, num_samples=2)
        True
        >>> search.suggest("a"), search.suggest("b")["lr"] != 0.5, search.suggest("c")
        ({'lr': 0.5}, True, 'FINISHED')
    """

    def __init__(
        self,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        random_state: int | None = None,
    ) -> None:
        super().__init__()
        cls = type(self).__name__
        points = [] if points_to_evaluate is None else points_to_evaluate
        if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
            raise fail(cls, "points_to_evaluate", f"must be a list of dicts, got {points!r}.")
        for i, point in enumerate(points):
            if not isinstance(point, Mapping):
                raise fail(cls, "points_to_evaluate", f"item {i} must be a dict, got {point!r}.")
        self._points: list[dict[str, Any]] = [copy.deepcopy(dict(p)) for p in points]
        if random_state is not None and (
            isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)
        ):
            raise fail(
                cls,
                "random_state",
                f"must be an integer seed or None, got {type(random_state).__name__}; a numpy "
                f"generator cannot be stored with the experiment.",
            )
        self._random_state = None if random_state is None else int(random_state)
        self._generator: _Generator | None = None
        self._space: dict[str, Any] = {}
        self._assigned: dict[str, int] = {}
        self._next = 0

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: Mapping[str, Any], **spec: Any
    ) -> bool:
        super().set_search_properties(metric, mode, config)
        num_samples = spec.get("num_samples", 1)
        seed = self._random_state if self._random_state is not None else spec.get("seed")
        if self._points and num_samples != -1:
            num_samples = max(num_samples, len(self._points))
        self._generator = _Generator(config, num_samples=num_samples, seed=seed)
        self._space = describe_param_space(config)
        return True

    @property
    def total_trials(self) -> int | None:
        """How many configs it gives in all; None for no end (``num_samples=-1``)."""
        return None if self._generator is None else self._generator.total_trials

    def config_for(self, index: int) -> dict[str, Any]:
        """The config of suggestion ``index``, the same whenever asked.

        Raises:
            ConfigError: ``set_search_properties`` was not called first.
        """
        generator = self._bound()
        config = generator.config_for(index)
        point = index // generator.num_grid_variants
        if point < len(self._points):
            _overlay(config, self._points[point])
        result: dict[str, Any] = json_copy(config)
        return result

    def suggest(self, trial_id: str) -> Suggestion:
        generator = self._bound()
        if trial_id in self._assigned:
            return self.config_for(self._assigned[trial_id])
        total = generator.total_trials
        if total is not None and self._next >= total:
            return Searcher.FINISHED
        self._assigned[trial_id] = self._next
        self._next += 1
        return self.config_for(self._assigned[trial_id])

    def _bound(self) -> _Generator:
        if self._generator is None:
            raise fail(
                type(self).__name__,
                "param_space",
                "is not set: the Tuner passes its param_space through set_search_properties() "
                "before the first suggestion.",
            )
        return self._generator

    def settings(self) -> dict[str, Any]:
        generator = self._generator
        return {
            "points_to_evaluate": json_copy(self._points),
            "random_state": self._random_state,
            "seed": None if generator is None else generator.seed,
            "num_samples": None if generator is None else generator.num_samples,
            "param_space": self._space,
        }

    def state(self) -> dict[str, Any]:
        return {"assigned": dict(self._assigned), "next": self._next}

    def load(self, data: Mapping[str, Any]) -> None:
        self._assigned = {str(k): int(v) for k, v in data["assigned"].items()}
        self._next = int(data["next"])


def _overlay(config: dict[str, Any], point: Mapping[str, Any]) -> None:
    for key, value in point.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _overlay(config[key], value)
        else:
            config[key] = copy.deepcopy(value)
