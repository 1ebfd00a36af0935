"""`ResultGrid` and `Result`: what ``Tuner.fit()`` returns, rebuilt from storage alone.

A grid reads only small state files. Building one reads the experiment's snapshot (each trial's
summary: config, last result, status, latest checkpoint) and the ``trial.json`` of trials the
snapshot does not show finished. It keeps each summary as its JSON and parses it when asked. It
reads a trial's ``trial.json`` only for its kept checkpoints' records or its history
(``Result.best_checkpoints``), the history of reported results only when asked for it
(``Result.metrics_dataframe``, a ``get_best_result`` scope other than ``"last"``,
``get_dataframe(filter_metric=...)``), and never a checkpoint's payload.

Examples:
    Analyse an experiment from any machine that can reach its storage::

        from prefect_tune import ResultGrid

        grid = ResultGrid.from_path("s3://bucket/tune/exp", storage_options={"anon": False})
        best = grid.get_best_result(metric="loss", mode="min")
        print(best.config, best.metrics["loss"])
        best.checkpoint.to_directory("/tmp/best-model")
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import fsspec
import pandas as pd

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.engine import AUTO_FIELDS
from prefect_tune.exceptions import ConfigError, MetricNotReportedError, TrialError
from prefect_tune.state import (
    ExperimentDefinition,
    ExperimentStore,
    ExploitRecord,
    PackedSummary,
    TrialState,
    TrialStatus,
    TrialSummary,
)
from prefect_tune.storage import Storage, TuneStorage, layout, resolve_spec

__all__ = ["Result", "ResultGrid"]

_MODES = ("min", "max")
_SCOPES = ("last", "avg", "all", "last-5-avg", "last-10-avg")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``, as Ray flattens results into columns."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _lookup(row: Mapping[str, Any] | None, metric: str) -> Any:
    """The value of ``metric`` in a result row; ``"a/b"`` also reaches into nested dicts."""
    if not row:
        return None
    if metric in row:
        return row[metric]
    value: Any = row
    for part in metric.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _better(score: float, than: float, mode: str) -> bool:
    """Whether ``score`` beats ``than``; NaN (kept only without filtering) never wins."""
    if math.isnan(score):
        return False
    if math.isnan(than):
        return True
    return score > than if mode == "max" else score < than


def _check_mode(mode: str | None, where: str) -> None:
    if mode is not None and mode not in _MODES:
        raise ConfigError(f"{where}: mode must be 'min' or 'max', got {mode!r}.")


class _StoredTrialError(TrialError):
    """A trial's stored error. Its ``traceback`` (``error.txt``) is read on first access."""

    def __init__(
        self,
        message: str,
        store: ExperimentStore | None = None,
        dir_name: str = "",
        traceback: str | None = None,
    ):
        super().__init__(message)
        self._store = store
        self._dir_name = dir_name
        self._traceback = traceback

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of the trainable's exception, or None if none was stored."""
        if self._traceback is None and self._store is not None:
            self._traceback = self._store.read_trial_text(self._dir_name, layout.ERROR_FILE)
            self._store = None
        return self._traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), None, self._dir_name, self.traceback))

    def __repr__(self) -> str:
        return f"TrialError({str(self)!r})"


class Result:
    """The outcome of one trial: its config, last metrics, checkpoints, history and error.

    A :class:`ResultGrid` builds these; there is no need to construct one. Attributes are
    read-only; treat the dicts they return as read-only too.

    Attributes:
        trial_id: The trial's id, unique within the experiment.
        status: The trial's :class:`~prefect_tune.state.TrialStatus`.
        config: The trial's hyperparameters.
        metrics: The last reported result (with auto-filled fields such as
            ``training_iteration``), or ``{}`` if the trial reported nothing.
        checkpoint: The trial's latest committed :class:`~prefect_tune.Checkpoint`, or None.
        best_checkpoints: ``(checkpoint, metrics reported with it)`` for every kept checkpoint,
            oldest first.
        metrics_dataframe: Every reported result, one row per ``training_iteration``.
        path: URI of the trial's directory in storage.
        filesystem: The fsspec filesystem that holds ``path``.
        error: None, or a :class:`~prefect_tune.exceptions.TrialError` whose message is the
            stored error and whose ``traceback`` attribute holds the stored traceback.
        exploits: Population based training's exploits of the trial, oldest first: each time
            it resumed from a copy of another trial's checkpoint with a new config
            (:class:`~prefect_tune.state.ExploitRecord`: donor trial and checkpoint, the
            checkpoint copied into this trial, old and new config, at which ``time_attr``).
            ``config`` is the config after the last of them.

    Examples:
        >>> best = result_grid.get_best_result(metric="loss", mode="min")  # doctest: +SKIP
        >>> best.config, best.metrics["loss"]  # doctest: +SKIP
        ({'lr': 0.01}, 0.12)
        >>> with best.checkpoint.as_directory() as path:  # doctest: +SKIP
        ...     model = load_model(path)
        >>> best.metrics_dataframe[["training_iteration", "loss"]]  # doctest: +SKIP
    """

    __slots__ = ("_store", "_summary", "_state", "_history", "_error", "_checkpoints")

    def __init__(self, store: ExperimentStore, trial: TrialState | PackedSummary):
        self._store = store
        self._state: TrialState | None
        if isinstance(trial, PackedSummary):
            self._summary = trial
            self._state = None  # read from trial.json when details are asked for
        else:
            # A copy: the caller may go on updating its own TrialState.
            self._state = trial.model_copy(deep=True)
            self._summary = PackedSummary.of(self._state)
        self._history: list[dict[str, Any]] | None = None
        self._error: TrialError | None = None
        self._checkpoints: list[tuple[Checkpoint, dict[str, Any]]] | None = None

    def _unpacked(self) -> TrialSummary:
        return self._summary.unpack()

    @property
    def _trial(self) -> TrialState:
        """The trial's whole state (its ``trial.json``, read once)."""
        if self._state is None:
            stored = self._store.read_trial(self._unpacked().dir_name)
            self._state = self._summary.whole(stored)
        return self._state

    @property
    def trial_id(self) -> str:
        return self._unpacked().trial_id

    @property
    def status(self) -> TrialStatus:
        return self._summary.status

    @property
    def config(self) -> dict[str, Any]:
        return self._unpacked().config

    @property
    def num_failures(self) -> int:
        """How many times the trial failed (its trainable raised or its worker died)."""
        return self._summary.num_failures

    @property
    def metrics(self) -> dict[str, Any]:
        return self._unpacked().last_result or {}

    @property
    def path(self) -> str:
        return self._path(self._unpacked())

    def _path(self, summary: TrialSummary) -> str:
        return self._store.storage.uri(layout.trial_dir(summary.dir_name))

    @property
    def filesystem(self) -> fsspec.AbstractFileSystem:
        return self._store.storage.fs

    @property
    def best_checkpoints(self) -> list[tuple[Checkpoint, dict[str, Any]]]:
        if self._checkpoints is None:
            trial = self._trial
            self._checkpoints = [
                (self._checkpoint_at(trial.dir_name, record.dir_name, record.files), record.metrics)
                for record in trial.checkpoints
            ]
        return list(self._checkpoints)

    @property
    def checkpoint(self) -> Checkpoint | None:
        if self._checkpoints is not None:
            return self._checkpoints[-1][0] if self._checkpoints else None
        summary = self._unpacked()  # names the latest: no trial.json to read
        if summary.checkpoint is None:
            return None
        return self._checkpoint_at(summary.dir_name, summary.checkpoint)

    @property
    def error(self) -> TrialError | None:
        if self._error is None:
            summary = self._unpacked()
            failed = summary.status is TrialStatus.ERROR or (
                summary.error is not None and summary.status is not TrialStatus.TERMINATED
            )
            if not failed:
                return None
            message = summary.error or f"Trial {summary.trial_id} errored."
            self._error = _StoredTrialError(message, self._store, summary.dir_name)
        return self._error

    @property
    def exploits(self) -> list[ExploitRecord]:
        return list(self._trial.exploits)

    @property
    def metrics_dataframe(self) -> pd.DataFrame:
        """Every reported result, one row per ``training_iteration`` (read on first access).

        Raises:
            DamagedStateError: a results segment of the trial is damaged (the message names it).
        """
        return pd.DataFrame([_flatten(row) for row in self._rows()])

    def get_best_checkpoint(self, metric: str, mode: str) -> Checkpoint:
        """The kept checkpoint whose reported ``metric`` is best.

        Raises:
            ConfigError: ``mode`` is not ``"min"`` or ``"max"``.
            MetricNotReportedError: the trial has no checkpoint reported with ``metric``.
        """
        _check_mode(mode, "Result.get_best_checkpoint")
        best: tuple[Checkpoint, float] | None = None
        for ckpt, metrics in self.best_checkpoints:
            value = _number(_lookup(metrics, metric))
            if value is not None and (best is None or _better(value, best[1], mode)):
                best = (ckpt, value)
        if best is None:
            raise MetricNotReportedError(
                f"Trial {self.trial_id} has no checkpoint reported with a numeric {metric!r} "
                f"({len(self.best_checkpoints)} checkpoints kept)."
            )
        return best[0]

    def _checkpoint_at(
        self, trial_dir: str, dir_name: str, files: dict[str, int] | None = None
    ) -> Checkpoint:
        spec = self._store.storage.spec.child(layout.trial_dir(trial_dir), dir_name)
        return Checkpoint.from_committed(spec.url, spec.options, files=files)

    def _rows(self) -> list[dict[str, Any]]:
        if self._history is None:
            self._history = self._store.read_history(self._trial)
        return self._history

    def _score(self, metric: str, mode: str, scope: str, finite_only: bool) -> float | None:
        """The trial's ``scope`` score of ``metric``; None when it never reported a number."""
        if scope == "last":  # from the trial's summary: no history read
            return _number(_lookup(self._unpacked().last_result, metric))
        values = [v for row in self._rows() if (v := _number(_lookup(row, metric))) is not None]
        if not values:
            return None
        if scope == "all":
            pool = [v for v in values if (math.isfinite(v) if finite_only else not math.isnan(v))]
            if not pool:
                return math.nan
            return max(pool) if mode == "max" else min(pool)
        window = values if scope == "avg" else values[-int(scope.split("-")[1]) :]
        return sum(window) / len(window)

    def _best_row(self, metric: str, mode: str | None, last: dict[str, Any]) -> dict[str, Any]:
        """The history row with the best ``metric`` (first of ties); ``last`` without a mode."""
        if mode is None:
            return last
        best: tuple[dict[str, Any], float] | None = None
        for row in self._rows():
            value = _number(_lookup(row, metric))
            if value is not None and (best is None or _better(value, best[1], mode)):
                best = (row, value)
        return best[0] if best is not None else last

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self._store.storage.spec, "trial": self._state or self._summary}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(ExperimentStore(state["spec"].open()), state["trial"])  # type: ignore[misc]

    def _repr(self, indent: int = 0) -> str:
        summary = self._unpacked()
        shown: dict[str, Any] = {"trial_id": summary.trial_id, "status": self.status.value}
        if self.error is not None:
            shown["error"] = str(self.error)
        metrics = summary.last_result or {}
        shown["metrics"] = {k: v for k, v in metrics.items() if k not in AUTO_FIELDS}
        shown["path"] = self._path(summary)
        protocol = self.filesystem.protocol
        shown["filesystem"] = protocol[0] if isinstance(protocol, (tuple, list)) else protocol
        shown["checkpoint"] = self.checkpoint
        pad = " " * indent
        fields = ",\n".join(f"{pad}  {key}={value!r}" for key, value in shown.items())
        return f"{pad}Result(\n{fields}\n{pad})"

    def __repr__(self) -> str:
        return self._repr()


class ResultGrid(Sequence[Result]):
    """The results of every trial of an experiment, in trial order, and ways to compare them.

    ``Tuner.fit()`` returns one; :meth:`from_path` rebuilds one from storage on any machine.
    Building a grid reads the experiment's definition and trial states, nothing larger.

    Args:
        store: The experiment's store.
        trials: The trials, as their states or as the summaries ``TuneController.run`` returns;
            read from the store when None.
        definition: The experiment's definition; read from the store when None.

    Raises:
        ExperimentNotFoundError: ``definition`` is None and no experiment is stored there.

    Examples:
        >>> grid = ResultGrid.from_path("~/prefect_tune_results/exp")  # doctest: +SKIP
        >>> len(grid), grid.num_terminated, grid.num_errors  # doctest: +SKIP
        (8, 7, 1)
        >>> best = grid.get_best_result(metric="loss", mode="min", scope="last-5-avg")  # doctest: +SKIP
        >>> grid.get_dataframe()[["trial_id", "loss", "config/lr"]]  # doctest: +SKIP
        >>> for result in grid:  # doctest: +SKIP
        ...     if result.error:
        ...         print(result.trial_id, result.error.traceback)
    """

    def __init__(
        self,
        store: ExperimentStore,
        trials: Sequence[TrialState | PackedSummary] | None = None,
        definition: ExperimentDefinition | None = None,
    ):
        self._store = store
        self._definition = definition if definition is not None else store.read_definition()
        if trials is None:
            trials = store.load_summaries()[1]
        self._results = [Result(store, t) for t in sorted(trials, key=lambda t: t.index)]

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        storage_options: dict[str, Any] | None = None,
        storage: TuneStorage | None = None,
    ) -> ResultGrid:
        """Rebuilds the results of the experiment stored at ``path``.

        Args:
            path: The experiment's directory: a local or NFS path or an fsspec URL. With
                ``storage``, a relative path (the experiment's name) is taken below the block's
                ``storage_path`` (see :func:`~prefect_tune.storage.resolve_spec`).
            storage_options: fsspec options (endpoint, credentials) for ``path``.
            storage: A :class:`~prefect_tune.TuneStorage` block whose credentials reach ``path``.

        Raises:
            ConfigError: both ``storage_options`` and ``storage`` were given.
            ExperimentNotFoundError: no experiment is stored at ``path``.
            DamagedStateError: a state file of the experiment is damaged (the message names it).

        Examples:
            >>> ResultGrid.from_path("exp", storage=TuneStorage.load("tuning"))  # doctest: +SKIP
        """
        spec = resolve_spec(path, storage_options, storage)
        return cls(ExperimentStore(Storage.open(spec)))

    # -- the sequence --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._results)

    @overload
    def __getitem__(self, index: int) -> Result: ...

    @overload
    def __getitem__(self, index: slice) -> list[Result]: ...

    def __getitem__(self, index: int | slice) -> Result | list[Result]:
        return self._results[index]

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    # -- summary -------------------------------------------------------------------------------

    @property
    def experiment_path(self) -> str:
        """URI of the experiment's directory."""
        return self._store.uri

    @property
    def filesystem(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem that holds the experiment."""
        return self._store.storage.fs

    @property
    def errors(self) -> list[TrialError]:
        """The errors of the trials that failed, in trial order."""
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        """How many trials ended in ERROR."""
        return sum(r.status is TrialStatus.ERROR for r in self._results)

    @property
    def num_terminated(self) -> int:
        """How many trials ended TERMINATED."""
        return sum(r.status is TrialStatus.TERMINATED for r in self._results)

    # -- comparing trials ----------------------------------------------------------------------

    def get_best_result(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Result:
        """The result of the trial with the best ``metric``.

        As in Ray Tune, a grid of exactly one trial returns that trial whatever it reported.

        Args:
            metric: The metric to compare; a ``"a/b"`` name reaches into nested results.
                Default: the experiment's ``TuneConfig.metric``.
            mode: ``"min"`` or ``"max"``. Default: the experiment's ``TuneConfig.mode``.
            scope: Which of each trial's values to compare: ``"last"`` (its last result),
                ``"avg"`` (the mean of all its results), ``"last-5-avg"``, ``"last-10-avg"``
                (the mean of its last 5 or 10) or ``"all"`` (its best result by ``mode``).
                Every scope but ``"last"`` reads the trials' histories.
            filter_nan_and_inf: Never pick a trial whose score is NaN or infinite.

        Raises:
            ConfigError: no metric or mode is given or configured, or ``mode`` or ``scope`` is
                invalid.
            MetricNotReportedError: no trial has a usable value of ``metric``.
        """
        _check_mode(mode, "ResultGrid.get_best_result")
        if scope not in _SCOPES:
            raise ConfigError(
                f"ResultGrid.get_best_result: scope must be one of {', '.join(_SCOPES)}; "
                f"got {scope!r}."
            )
        if len(self._results) == 1:
            return self._results[0]
        metric = metric or self._definition.metric
        mode = mode or self._definition.mode
        if not metric:
            raise ConfigError(
                "ResultGrid.get_best_result: no metric to compare. Pass metric=... or set "
                "TuneConfig(metric=...) for the experiment."
            )
        if not mode:
            raise ConfigError(
                "ResultGrid.get_best_result: no mode to compare by. Pass mode='min' or 'max', "
                "or set TuneConfig(mode=...) for the experiment."
            )
        _check_mode(mode, "ResultGrid.get_best_result (the experiment's TuneConfig)")
        best: tuple[Result, float] | None = None
        for result in self._results:
            score = result._score(metric, mode, scope, filter_nan_and_inf)
            if score is None or (filter_nan_and_inf and not math.isfinite(score)):
                continue
            if best is None or _better(score, best[1], mode):
                best = (result, score)
        if best is None:
            why = ", or only NaN or infinite values" if filter_nan_and_inf else ""
            hint = " (pass filter_nan_and_inf=False to consider them)" if filter_nan_and_inf else ""
            raise MetricNotReportedError(
                f"No best trial for metric {metric!r} (scope={scope!r}): none of the "
                f"{len(self._results)} trials reported it as a number{why}{hint}."
            )
        return best[0]

    def get_dataframe(
        self, filter_metric: str | None = None, filter_mode: str | None = None
    ) -> pd.DataFrame:
        """One row per trial: a result, the config as ``config/<key>`` columns, and its id.

        Args:
            filter_metric: With ``filter_mode``, the metric whose best value picks each trial's
                row from its history; without, each trial's last result is used.
            filter_mode: ``"min"`` or ``"max"``; requires ``filter_metric``.

        Returns:
            A DataFrame in trial order. Nested results and configs are flattened with ``/``;
            the columns ``trial_id``, ``status``, ``logdir`` and ``path`` (both the trial's URI)
            are always present. A trial that reported nothing has only those and its config.

        Raises:
            ConfigError: ``filter_mode`` is invalid or given without ``filter_metric``.
        """
        _check_mode(filter_mode, "ResultGrid.get_dataframe")
        if filter_mode is not None and filter_metric is None:
            raise ConfigError(
                "ResultGrid.get_dataframe: filter_mode needs filter_metric, the metric whose "
                "best value picks each trial's row."
            )
        rows = []
        for result in self._results:
            summary = result._unpacked()
            picked = summary.last_result or {}
            if filter_metric is not None:
                picked = result._best_row(filter_metric, filter_mode, picked)
            row = _flatten(picked)
            row.update(_flatten(summary.config, "config/"))
            path = result._path(summary)
            row.update(
                trial_id=summary.trial_id, status=summary.status.value, logdir=path, path=path
            )
            rows.append(row)
        if not rows:
            return pd.DataFrame(columns=["trial_id", "status", "logdir", "path"])
        return pd.DataFrame(rows)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "spec": self._store.storage.spec,
            "definition": self._definition,
            "results": self._results,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._store = ExperimentStore(state["spec"].open())
        self._definition = state["definition"]
        self._results = state["results"]

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for result in self._results:
            counts[result.status.value] = counts.get(result.status.value, 0) + 1
        statuses = ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
        return (
            f"ResultGrid(experiment_path={self.experiment_path!r}, num_trials={len(self)}"
            f"{', ' if statuses else ''}{statuses})"
        )
