"""What a trainable calls while it runs: :func:`report`, :func:`get_checkpoint`, :func:`get_context`.

Inside a trial, a :class:`TrialSession` (one per task run of the trial) turns each ``report()``
into a result row, commits checkpoints to storage straight from the worker, and asks the trial's
controls (stop conditions now; schedulers later) whether to go on. A decision to stop unwinds the
trainable from inside ``report()``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.config import CheckpointConfig
from prefect_tune.exceptions import MetricNotReportedError, ReportError, SessionError
from prefect_tune.state import CarriedResults, CheckpointRecord, ExperimentStore, TrialState
from prefect_tune.storage import layout

logger = logging.getLogger("prefect_tune")

__all__ = ["TrialContext", "get_checkpoint", "get_context", "report"]

# Fields prefect-tune adds to every reported result (Ray Tune's auto-filled names).
AUTO_FIELDS = (
    "training_iteration",
    "trial_id",
    "timestamp",
    "date",
    "time_this_iter_s",
    "time_total_s",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "done",
    "hostname",
    "pid",
)


class Decision(enum.Enum):
    """What a trial does after a ``report()``."""

    CONTINUE = "CONTINUE"
    STOP = "STOP"
    PAUSE = "PAUSE"
    #: The trial's driver lost the experiment to another driver: stop, and write nothing more.
    ABANDON = "ABANDON"


class TrialControl(Protocol):
    """Something that sees each result of a running trial and may stop or pause it.

    Controls run on the worker inside ``report()``, so they must be cheap and must not raise.
    """

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision: ...


@dataclass(frozen=True)
class StopCriteria:
    """``RunConfig(stop=...)`` and ``TuneConfig(time_budget_s=...)`` applied to one trial."""

    stop: Mapping[str, float] | Callable[[str, dict[str, Any]], bool] | None = None
    deadline: float | None = None

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        if self.deadline is not None and time.time() >= self.deadline:
            return Decision.STOP
        if self.stop is None:
            return Decision.CONTINUE
        if callable(self.stop):
            return Decision.STOP if self.stop(trial_id, dict(result)) else Decision.CONTINUE
        for key, threshold in self.stop.items():
            value = result.get(key)
            if isinstance(value, (int, float)) and value >= threshold:
                return Decision.STOP
        return Decision.CONTINUE


class TrialStopped(BaseException):
    """Raised inside ``report()`` to unwind a trainable whose trial was stopped or paused.

    A BaseException so that a trainable's ``except Exception`` cannot swallow it.
    """

    def __init__(self, decision: Decision):
        super().__init__(decision.value)
        self.decision = decision


@dataclass(frozen=True)
class TrialContext:
    """Facts about the running trial (``get_context()``), with Ray Tune's getters.

    Attributes:
        trial_id: Unique within the experiment.
        trial_name: Readable name, also the Prefect task run's name.
        experiment_name: The experiment's name.
        trial_dir: URL (or local path) of the trial's directory in storage.
        trial_index: The trial's position in the experiment.
        attempt: 1 for the first task run of this trial, 2 after one retry or resume...
    """

    trial_id: str
    trial_name: str
    experiment_name: str
    trial_dir: str
    trial_index: int
    attempt: int

    def get_trial_id(self) -> str:
        return self.trial_id

    def get_trial_name(self) -> str:
        return self.trial_name

    def get_experiment_name(self) -> str:
        return self.experiment_name

    def get_trial_dir(self) -> str:
        return self.trial_dir


_current: contextvars.ContextVar[TrialSession | None] = contextvars.ContextVar(
    "prefect_tune_session", default=None
)


def _session(caller: str) -> TrialSession:
    session = _current.get()
    if session is None:
        raise SessionError(
            f"prefect_tune.{caller}() was called outside a trial: call it from the trainable "
            "that Tuner runs."
        )
    return session


def report(metrics: Mapping[str, Any], *, checkpoint: Checkpoint | None = None) -> None:
    """Reports a result of the running trial, optionally with a checkpoint.

    When this returns, the checkpoint is committed to storage: a later resume of the trial starts
    from it. ``training_iteration`` counts reports (it continues from the checkpoint on resume).
    If a stop condition is met, ``report()`` does not return: the trial ends there.

    Args:
        metrics: Metric name -> JSON-friendly value (numbers, strings, bools, lists, dicts).
        checkpoint: A :class:`Checkpoint`, usually ``Checkpoint.from_directory(tmpdir)``; the
            directory may be deleted once ``report()`` returns.

    Raises:
        ReportError: ``metrics`` is not a dict of JSON-friendly values.
        MetricNotReportedError: the experiment's metric (or checkpoint score attribute) is missing.
        SessionError: called outside a trial.

    Examples:
        >>> def train_fn(config):  # doctest: +SKIP
        ...     for epoch in range(10):
        ...         report({"loss": 1.0 / (epoch + 1)})
    """
    _session("report").report(metrics, checkpoint=checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint to resume from: the trial's latest committed one, or None on a fresh trial."""
    return _session("get_checkpoint").resume_checkpoint


def get_context() -> TrialContext:
    """Facts about the running trial: ids, names, its directory in storage."""
    return _session("get_context").context


def _jsonable(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return _jsonable(key, item())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(key, v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _jsonable(key, tolist())
    raise ReportError(
        f"report(): metric {key!r} has a value of type {type(value).__name__}, which cannot be "
        "stored as JSON. Report numbers, strings, bools, or lists/dicts of them."
    )


#: The most reported results a trial's state carries (see `TrialSession._carry`).
CARRIED_ROWS_MAX = 16


class TrialSession:
    """One task run of one trial, on its worker. Not thread-safe: one trainable calls it."""

    def __init__(
        self,
        store: ExperimentStore,
        trial: TrialState,
        context: TrialContext,
        *,
        metric: str | None,
        checkpoint_config: CheckpointConfig,
        controls: Sequence[TrialControl] = (),
        result_flush_interval_s: float = 5.0,
        storage_options: dict[str, Any] | None = None,
    ):
        self.store = store
        self.trial = trial
        self.context = context
        self.metric = metric
        self.checkpoint_config = checkpoint_config
        self.controls = list(controls)
        #: Read at each checkpoint commit: a trial whose driver lost the experiment must not
        #: write its state over the new driver's attempt.
        self.fence: Callable[[], Decision] | None = None
        #: A read of the lease begun at most this long before a commit point is recent enough.
        #: A driver that takes the experiment over starts no trial before the fence interval
        #: (plus a margin) has passed, so half of it leaves a commit time to land before.
        self.fence_window_s = 0.0
        #: When this session's latest read of the lease began (``time.monotonic()``): one made
        #: for a commit or for a flush that writes the trial's state.
        self._fence_read_at: float | None = None
        self.flush_interval = result_flush_interval_s
        attempt = trial.attempts[-1]
        self.attempt = attempt.attempt
        self.iteration = attempt.start_iteration
        latest = trial.latest_checkpoint
        self.resume_checkpoint = (
            Checkpoint._committed_in(
                store.storage.spec.child(f"{layout.trial_dir(trial.dir_name)}/{latest.dir_name}"),
                latest.files,
            )
            if latest is not None
            else None
        )
        base = (latest.metrics if latest is not None else None) or {}
        self.time_total = float(base.get("time_total_s", 0.0) or 0.0)
        self.started = time.monotonic()
        self.last_report = self.started
        self.iterations_since_restore = 0
        self.buffer: list[dict[str, Any]] = []
        self.segment = 0
        self.last_flush = self.started
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # made at the first checkpoint
        self._deleting: list[Future[None]] = []

    # -- the trainable's side --------------------------------------------------------------------

    def report(self, metrics: Mapping[str, Any], checkpoint: Checkpoint | None = None) -> None:
        if not isinstance(metrics, Mapping):
            raise ReportError(
                f"report() takes a dict of metrics, got {type(metrics).__name__}: "
                "report({'loss': 0.1}, checkpoint=...)."
            )
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            raise ReportError(
                "report(checkpoint=...) takes a prefect_tune.Checkpoint, such as "
                f"Checkpoint.from_directory(path); got {type(checkpoint).__name__}."
            )
        row = {str(k): _jsonable(str(k), v) for k, v in metrics.items()}
        if self.metric is not None and self.metric not in row:
            raise MetricNotReportedError(
                f"The trainable reported {sorted(row)} without {self.metric!r}, the metric "
                f"TuneConfig(metric={self.metric!r}) optimises. Report it in every result, or "
                "change TuneConfig.metric."
            )
        now = time.monotonic()
        self.iteration += 1
        self.iterations_since_restore += 1
        this_iter = now - self.last_report
        self.last_report = now
        self.time_total += this_iter
        row.update(
            training_iteration=self.iteration,
            trial_id=self.trial.trial_id,
            timestamp=int(time.time()),
            date=dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"),
            time_this_iter_s=this_iter,
            time_total_s=self.time_total,
            time_since_restore=now - self.started,
            iterations_since_restore=self.iterations_since_restore,
            checkpoint_dir_name=None,
            done=False,
            hostname=self.host,
            pid=self.pid,
        )
        with self._lock:
            self.buffer.append(row)
            self.trial.last_result = row
            if checkpoint is not None:
                self._commit_checkpoint(row, checkpoint)
            elif now - self.last_flush >= self.flush_interval:
                # The trial's state is written as at a commit: only while the lease is ours.
                if self._fence_at_commit(None) is Decision.ABANDON:
                    raise TrialStopped(Decision.ABANDON)
                self.flush(write_state=True)
        for control in self.controls:
            decision = control.on_result(self.trial.trial_id, row)
            if decision is not Decision.CONTINUE:
                raise TrialStopped(decision)

    # -- storage ---------------------------------------------------------------------------------

    def flush(self, write_state: bool = False) -> None:
        """Writes the rows that are in no segment yet, those the trial's state carries first, as
        a new segment (and the trial's state if asked)."""
        carried = self._carried()
        rows = (carried.rows if carried is not None else []) + self.buffer
        if rows:
            self.segment += 1
            self.store.write_results(self.trial.dir_name, self.attempt, self.segment, rows)
            self.buffer = []
            if carried is not None:
                self.trial.carried_results.remove(carried)
        self.last_flush = time.monotonic()
        if write_state:
            self.store.write_trial(self.trial)

    def _carried(self) -> CarriedResults | None:
        return next((c for c in self.trial.carried_results if c.attempt == self.attempt), None)

    def _carry(self) -> bool:
        """Moves the buffered rows into the trial's state when it would then carry no more than
        `CARRIED_ROWS_MAX`: the commit's write of that state makes them durable, with no write
        of their own. Returns whether it did."""
        carried = self._carried()
        if len(self.buffer) + (len(carried.rows) if carried is not None else 0) > CARRIED_ROWS_MAX:
            return False
        if carried is None:
            carried = CarriedResults(attempt=self.attempt, segment=self.segment + 1)
            self.trial.carried_results.append(carried)
        carried.rows.extend(self.buffer)
        self.buffer = []
        return True

    def _commit_checkpoint(self, row: dict[str, Any], checkpoint: Checkpoint) -> None:
        score_attr = self.checkpoint_config.checkpoint_score_attribute
        if score_attr is not None and score_attr not in row:
            raise MetricNotReportedError(
                f"The result reported with a checkpoint has no {score_attr!r}, the "
                f"CheckpointConfig(checkpoint_score_attribute={score_attr!r}) that ranks "
                "checkpoints. Report it with every checkpoint."
            )
        trial = self.trial
        index = trial.next_checkpoint_index
        row["checkpoint_dir_name"] = layout.checkpoint_name(index)
        pool = self._background()
        # Rows up to this one must be durable at the commit point below: the trial's state
        # carries them, or they are written as a segment while the checkpoint uploads. The lease
        # is read then too (see `fence_window_s`), unless a recent commit read it.
        flushed = None if self._carry() else pool.submit(self.flush)
        fenced = (
            pool.submit(self._read_fence)
            if self.fence is not None and not self._fence_read_within(self.fence_window_s / 2)
            else None
        )
        local_dir, cleanup = self._local_copy(checkpoint)
        try:
            uploaded = self.store.upload_checkpoint(trial.dir_name, index, local_dir)
        except BaseException:
            pending: list[Future[Any]] = [f for f in (flushed, fenced) if f is not None]
            wait(pending)  # the upload's error is the one to raise
            raise
        finally:
            if cleanup:
                shutil.rmtree(local_dir, ignore_errors=True)
        if flushed is not None:
            flushed.result()
        if self._fence_at_commit(fenced) is Decision.ABANDON:
            raise TrialStopped(Decision.ABANDON)
        trial.checkpoints.append(
            CheckpointRecord(
                index=index,
                dir_name=uploaded.dir_name,
                training_iteration=self.iteration,
                metrics=row,
                size_bytes=uploaded.size_bytes,
                files=uploaded.files,
            )
        )
        trial.next_checkpoint_index = index + 1
        dropped = self._checkpoints_to_drop()
        trial.checkpoints = [c for c in trial.checkpoints if c not in dropped]
        self.store.write_trial(trial)  # the commit point
        if dropped:  # no longer listed: deleted while the trainable goes on
            self._deleting = [f for f in self._deleting if not f.done()]
            self._deleting.append(
                pool.submit(self.store.delete_checkpoints, trial.dir_name, dropped)
            )
        self.resume_checkpoint = Checkpoint._committed_in(
            self.store.storage.spec.child(
                f"{layout.trial_dir(trial.dir_name)}/{uploaded.dir_name}"
            ),
            uploaded.files,
        )

    def _read_fence(self) -> Decision:
        assert self.fence is not None
        started = time.monotonic()
        decision = self.fence()
        if decision is not Decision.ABANDON:
            self._fence_read_at = max(started, self._fence_read_at or started)
        return decision

    def _fence_read_within(self, seconds: float) -> bool:
        at = self._fence_read_at
        return at is not None and time.monotonic() - at <= seconds

    def _fence_at_commit(self, fenced: Future[Decision] | None) -> Decision:
        """The lease as read while the checkpoint uploaded or by a recent commit; read again
        when the latest read began more than ``fence_window_s`` ago (a long upload)."""
        if self.fence is None:
            return Decision.CONTINUE
        if fenced is not None and fenced.result() is Decision.ABANDON:
            return Decision.ABANDON
        if self._fence_read_within(self.fence_window_s):
            return Decision.CONTINUE
        return self._read_fence()

    def _background(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(3, thread_name_prefix="prefect-tune-commit")
        return self._pool

    def close(self) -> None:
        """Waits for the deletion of checkpoints that ``num_to_keep`` dropped. A deletion that
        fails leaves a directory no state lists; the trial's next attempt removes it."""
        for future in self._deleting:
            try:
                future.result()
            except Exception as exc:
                logger.warning(
                    "Could not delete a dropped checkpoint of %s: %s", self.trial.trial_id, exc
                )
        self._deleting = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @staticmethod
    def _local_copy(checkpoint: Checkpoint) -> tuple[str, bool]:
        storage = checkpoint._storage_root()
        if storage.atomic_rename and not checkpoint._committed:
            return storage.root, False
        return checkpoint.to_directory(tempfile.mkdtemp(prefix="prefect-tune-ckpt-")), True

    def _checkpoints_to_drop(self) -> list[CheckpointRecord]:
        cfg = self.checkpoint_config
        records = self.trial.checkpoints
        if cfg.num_to_keep is None or len(records) <= cfg.num_to_keep:
            return []
        latest = records[-1]
        if cfg.checkpoint_score_attribute is None:
            keep = records[-cfg.num_to_keep :]
        else:
            attr = cfg.checkpoint_score_attribute
            sign = 1.0 if cfg.checkpoint_score_order == "max" else -1.0

            def score(record: CheckpointRecord) -> tuple[float, int]:
                value = record.metrics.get(attr)
                if not isinstance(value, (int, float)) or math.isnan(value):
                    return (-math.inf, record.index)
                return (sign * float(value), record.index)

            keep = sorted(records, key=score, reverse=True)[: cfg.num_to_keep]
        kept = {c.index for c in keep} | {latest.index}
        return [c for c in records if c.index not in kept]
