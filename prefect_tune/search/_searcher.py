"""The searcher protocol, and ``ConcurrencyLimiter``, which caps any searcher's live trials.

A searcher suggests a config for each new trial id and learns from the trials' results. Like a
scheduler it is a decision core: no I/O, answers from what it is told, its state a versioned
JSON document, so that a restore ends with exactly the trials asked for, none suggested twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from prefect_tune.engine._checks import fail, integer, metric_and_mode
from prefect_tune.engine._decision_state import Stateful

__all__ = ["ConcurrencyLimiter", "Searcher", "Suggestion"]

#: A config, None (nothing to suggest now: ask again later) or ``Searcher.FINISHED``.
Suggestion = dict[str, Any] | str | None


class Searcher(Stateful):
    """Base of the search algorithms: suggests configs and learns from their results.

    Subclass it and override :meth:`suggest` (and :meth:`on_trial_complete`, and ``settings``,
    ``state`` and ``load`` for what a restore needs). The driver calls these from one thread,
    in the order the events were stored. :meth:`suggest` with an id it answered before must
    give the same config again: a restored driver asks once more for a trial it created but
    had not stored yet.

    Attributes:
        FINISHED: What :meth:`suggest` returns once it has no more configs to give.

    Examples:
        >>> class Walk(Searcher):
        ...     def suggest(self, trial_id):
        ...         return {"x": int(trial_id[1:])}
        >>> Walk(metric="loss", mode="min").suggest("t3")
        {'x': 3}
    """

    FINISHED: ClassVar[str] = "FINISHED"

    def __init__(self, metric: str | None = None, mode: str | None = None) -> None:
        self._metric, self._mode = metric_and_mode(type(self).__name__, metric, mode)

    @property
    def metric(self) -> str | None:
        """The result to optimise, or None until the tuner sets it."""
        return self._metric

    @property
    def mode(self) -> str | None:
        """``"min"`` or ``"max"``, or None until the tuner sets it."""
        return self._mode

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: Mapping[str, Any], **spec: Any
    ) -> bool:
        """Take ``TuneConfig``'s metric and mode, and the Tuner's ``param_space``.

        Args:
            metric: ``TuneConfig(metric=...)``; ignored when the searcher has its own.
            mode: ``TuneConfig(mode=...)``; likewise.
            config: The Tuner's ``param_space``.
            **spec: ``num_samples`` and ``seed`` from TuneConfig.

        Returns:
            False when the searcher cannot take them (Ray Tune's rule: it has a space of its
            own and ``param_space`` is given too); the tuner then refuses the pair.
        """
        if not self._metric:
            self._metric = metric
        if not self._mode:
            self._mode = mode
        metric_and_mode(type(self).__name__, self._metric, self._mode)
        return True

    def suggest(self, trial_id: str) -> Suggestion:
        """The config of the new trial ``trial_id``, None for not now, or ``FINISHED``."""
        raise NotImplementedError(f"{type(self).__name__} must define suggest(trial_id).")

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """A result of a running trial; for searchers that prune or learn as trials go."""

    def on_trial_complete(
        self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False
    ) -> None:
        """The trial ended: with its last ``result``, or in ERROR when ``error``."""

    def settings(self) -> dict[str, Any]:
        return {"metric": self._metric, "mode": self._mode}


class ConcurrencyLimiter(Searcher):
    """Lets ``searcher`` have at most ``max_concurrent`` trials running at once.

    Args:
        searcher: The searcher to limit.
        max_concurrent: Live trials at most; :meth:`suggest` answers None beyond them.
        batch: Hold completed trials back until the whole batch of ``max_concurrent`` has
            completed, then tell the searcher of all of them at once.

    Raises:
        ConfigError: ``searcher`` is not a Searcher, or ``max_concurrent`` is below 1.

    Examples:
        >>> from prefect_tune.search import BasicVariantGenerator
        >>> from prefect_tune import space
        >>> limited = ConcurrencyLimiter(BasicVariantGenerator(random_state=0), max_concurrent=1)
        >>> limited.set_search_properties(None, None, {"x": space.uniform(0, 1)}, num_samples=3)
        True
        >>> limited.suggest("a") is not None, limited.suggest("b")
        (True, None)
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False) -> None:
        cls = type(self).__name__
        if not isinstance(searcher, Searcher):
            raise fail(cls, "searcher", f"must be a Searcher, got {type(searcher).__name__}.")
        self._max_concurrent = integer(cls, "max_concurrent", max_concurrent, 1)
        if not isinstance(batch, bool):
            raise fail(cls, "batch", f"must be True or False, got {batch!r}.")
        super().__init__(searcher.metric, searcher.mode)
        self._searcher = searcher
        self._batch = batch
        self._live: set[str] = set()
        self._held: dict[str, tuple[dict[str, Any] | None, bool]] = {}

    @property
    def searcher(self) -> Searcher:
        """The searcher this one limits."""
        return self._searcher

    @property
    def live_trials(self) -> frozenset[str]:
        """The trials suggested and not yet complete."""
        return frozenset(self._live)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: Mapping[str, Any], **spec: Any
    ) -> bool:
        accepted = self._searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self._searcher.metric, self._searcher.mode
        return accepted

    def suggest(self, trial_id: str) -> Suggestion:
        if trial_id not in self._live and len(self._live) >= self._max_concurrent:
            return None
        suggestion = self._searcher.suggest(trial_id)
        if isinstance(suggestion, dict):
            self._live.add(trial_id)
        return suggestion

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if trial_id in self._live:
            self._searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._live or trial_id in self._held:
            return  # never suggested by this limiter, or told once already
        if not self._batch:
            self._searcher.on_trial_complete(trial_id, result=result, error=error)
            self._live.discard(trial_id)
            return
        self._held[trial_id] = (None if result is None else dict(result), error)
        if len(self._held) >= self._max_concurrent:
            for held_id, (held_result, held_error) in self._held.items():
                self._searcher.on_trial_complete(held_id, result=held_result, error=held_error)
                self._live.discard(held_id)
            self._held = {}

    def settings(self) -> dict[str, Any]:
        return {
            "max_concurrent": self._max_concurrent,
            "batch": self._batch,
            "searcher": [type(self._searcher).__name__, self._searcher.settings()],
        }

    def state(self) -> dict[str, Any]:
        return {
            "live": sorted(self._live),
            "held": [[k, r, e] for k, (r, e) in self._held.items()],
            "searcher": self._searcher.to_state(),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._searcher.from_state(data["searcher"])
        self._live = {str(k) for k in data["live"]}
        self._held = {str(k): (r, bool(e)) for k, r, e in data["held"]}
