"""How far an experiment has come, for whatever shows it: a console line, UI artifacts, events.

The controller keeps a :class:`ProgressTracker` up to date as trials start and end (cheap: no
pass over the trial table), and every ``interval_s`` of its slowest-due observer hands each
:class:`ExperimentObserver` a :class:`Progress` snapshot; it always hands one at the start and
one at the end. An observer decides for itself what to show and how often; it must be quick,
and what it raises is logged and otherwise ignored (showing progress never stops a run).

The best trial is the best among *finished* trials by their last result: running trials
report straight to storage, not to the driver.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefect_tune.state import PackedSummary, TrialState, TrialStatus

__all__ = ["ExperimentObserver", "Progress", "ProgressTracker"]


@dataclass(frozen=True)
class Progress:
    """A snapshot of an experiment's progress.

    Attributes:
        experiment: The experiment's name.
        total: Trials the experiment will have, or None for an open-ended one.
        counts: Trials by status (every trial created so far).
        elapsed_s: Seconds since this driver started running trials.
        metric: The experiment's metric, or None.
        mode: ``"min"`` or ``"max"``, or None.
        best_trial_id: The finished trial whose last result is best, or None.
        best_value: That trial's last value of ``metric``.
        best_config: That trial's config.
        finished_here: Trials this driver saw finish (the rate the estimate of time left uses).
        done: Whether this is the snapshot of the end of the run.
    """

    experiment: str
    total: int | None
    counts: Mapping[TrialStatus, int]
    elapsed_s: float
    metric: str | None = None
    mode: str | None = None
    best_trial_id: str | None = None
    best_value: float | None = None
    best_config: Mapping[str, Any] | None = None
    finished_here: int = 0
    done: bool = False

    @property
    def finished(self) -> int:
        """TERMINATED and ERROR trials."""
        return self.counts.get(TrialStatus.TERMINATED, 0) + self.counts.get(TrialStatus.ERROR, 0)

    @property
    def remaining_s(self) -> float | None:
        """Estimated seconds left, from this run's rate of finishing trials; None when unknown."""
        if self.total is None or self.finished_here == 0 or self.done:
            return None
        left = self.total - self.finished
        return max(0.0, self.elapsed_s / self.finished_here * left)

    def line(self) -> str:
        """One line for a console, such as ``exp: 5/8 finished (1 errored), 2 running, 1
        pending | best loss=0.0123 (trial abcde_00003) | 1m12s elapsed, ~40s left``.

        Examples:
            >>> Progress("exp", 8, {TrialStatus.TERMINATED: 4, TrialStatus.ERROR: 1,
            ...          TrialStatus.RUNNING: 2, TrialStatus.PENDING: 1}, 72.0, "loss", "min",
            ...          "abcde_00003", 0.0123, {"lr": 0.1}, 5).line()
            'exp: 5/8 finished (1 errored), 2 running, 1 pending | best loss=0.0123 (trial abcde_00003) | 1m12s elapsed, ~43s left'
        """
        total = "?" if self.total is None else str(self.total)
        parts = [f"{self.finished}/{total} finished"]
        errored = self.counts.get(TrialStatus.ERROR, 0)
        if errored:
            parts[0] += f" ({errored} errored)"
        for status in (TrialStatus.RUNNING, TrialStatus.PAUSED, TrialStatus.PENDING):
            if self.counts.get(status):
                parts.append(f"{self.counts[status]} {status.value.lower()}")
        text = f"{self.experiment}: {', '.join(parts)}"
        if self.best_trial_id is not None and self.metric is not None:
            text += f" | best {self.metric}={self.best_value:.4g} (trial {self.best_trial_id})"
        text += f" | {_duration(self.elapsed_s)} elapsed"
        remaining = self.remaining_s
        if remaining is not None:
            text += f", ~{_duration(remaining)} left"
        return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ExperimentObserver(Protocol):
    """Shows an experiment's progress somewhere (the console, the Prefect UI, events).

    Attributes:
        interval_s: The least time between two snapshots it wants while trials run.
    """

    interval_s: float

    def on_progress(
        self, progress: Progress, trials: Callable[[], Sequence[PackedSummary]]
    ) -> None:
        """Called with a snapshot; ``trials()`` gives every trial's summary (a pass over the
        trial table: call it only when needed). The last call of a run has ``progress.done``."""
        ...


@dataclass
class ProgressTracker:
    """Keeps an experiment's best finished trial and how many trials this driver saw finish,
    updated as trials finish (see :meth:`finished`), never by a pass over every trial but the
    first (:meth:`load`).

    Args:
        experiment: The experiment's name.
        total: Trials the experiment will have, or None.
        metric: The metric that ranks trials (None: no best trial).
        mode: ``"min"`` or ``"max"``.
    """

    experiment: str
    total: int | None
    metric: str | None = None
    mode: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished_here: int = 0
    _best: tuple[float, str, Mapping[str, Any]] | None = None

    def load(self, trials: Sequence[PackedSummary]) -> None:
        """Starts from the stored trials: the best of those finished."""
        for trial in trials:
            if trial.status.is_finished():
                summary = trial.unpack()
                self._consider(summary.trial_id, summary.last_result, summary.config)

    def finished(self, trial: TrialState) -> None:
        """A trial this driver ran has finished (TERMINATED or ERROR)."""
        self.finished_here += 1
        self._consider(trial.trial_id, trial.last_result, trial.config)

    def _consider(
        self, trial_id: str, result: Mapping[str, Any] | None, config: Mapping[str, Any]
    ) -> None:
        if self.metric is None or not result:
            return
        value = result.get(self.metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return
        score = float(value) if self.mode == "max" else -float(value)
        if self._best is None or score > self._best[0]:
            self._best = (score, trial_id, dict(config))

    def snapshot(self, counts: Mapping[TrialStatus, int], done: bool = False) -> Progress:
        """The progress now, given the trials' counts by status."""
        best = self._best
        return Progress(
            experiment=self.experiment,
            total=self.total,
            counts={status: n for status, n in counts.items() if n},
            elapsed_s=time.monotonic() - self.started,
            metric=self.metric,
            mode=self.mode,
            best_trial_id=best[1] if best else None,
            best_value=(best[0] if self.mode == "max" else -best[0]) if best else None,
            best_config=best[2] if best else None,
            finished_here=self.finished_here,
            done=done,
        )
