"""The worker side of ``report()``: one :class:`TrialSession` per task run of a trial.

A session turns each ``report()`` into a result row, commits checkpoints to storage straight
from the worker, and asks the trial's controls (stop conditions, the experiment's fence;
schedulers later) whether to go on. A decision other than CONTINUE unwinds the trainable from
inside ``report()`` with :class:`~prefect_tune.engine.TrialStopped`.

What makes a report durable:

- Rows are buffered and written as a result segment every ``result_flush_interval_s``, at the
  end of the attempt, or with the next checkpoint.
- A checkpoint is committed by the one write of the trial's state that lists its files
  (``trial.json``). The rows reported since the last segment ride in that write when there are
  at most `CARRIED_ROWS_MAX` of them, else they are written as a segment while the checkpoint
  uploads. Either way they are durable at the commit point.
- Every write of the trial's state is made only while the experiment's lease is the trial's
  driver's (`CommitFence`).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.config import CheckpointConfig
from prefect_tune.engine._control import Decision, TrialControl, TrialStopped
from prefect_tune.engine._decision_state import result_number
from prefect_tune.engine._fence import CommitFence
from prefect_tune.engine._retention import checkpoints_to_drop
from prefect_tune.exceptions import MetricNotReportedError, ReportError
from prefect_tune.state import (
    CarriedResults,
    CheckpointRecord,
    ExperimentStore,
    TrialState,
    local_checkpoint_files,
)
from prefect_tune.storage import layout

logger = logging.getLogger("prefect_tune")

__all__ = [
    "AUTO_FIELDS",
    "CARRIED_ROWS_MAX",
    "TrialContext",
    "TrialSession",
    "activated",
    "current_session",
]

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

#: The most reported results a trial's state carries (see `TrialSession._carry`).
CARRIED_ROWS_MAX = 16


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


def current_session() -> TrialSession | None:
    """The session of the trial running in this context, or None outside a trial."""
    return _current.get()


@contextlib.contextmanager
def activated(session: TrialSession) -> Iterator[TrialSession]:
    """Makes ``session`` the one ``report()`` and friends reach while the block runs."""
    token = _current.set(session)
    try:
        yield session
    finally:
        _current.reset(token)


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


class TrialSession:
    """One task run of one trial, on its worker. Not thread-safe: one trainable calls it.

    Args:
        store: The experiment's store.
        trial: The trial's state, its current attempt already recorded (the session updates
            it as results and checkpoints come).
        context: What ``get_context()`` returns.
        metric: The experiment's metric, which every result must hold.
        mode: ``"min"`` or ``"max"``: with ``metric``, keeps the trial's best value of it
            (``TrialState.best_metric``).
        checkpoint_config: Which checkpoints to keep.
        controls: Asked after each result whether the trial goes on, in order.
        fence: Checked before each write of the trial's state; None writes unfenced (a trial
            whose experiment has no lease owner).
        result_flush_interval_s: Least time between two writes of buffered results.
    """

    def __init__(
        self,
        store: ExperimentStore,
        trial: TrialState,
        context: TrialContext,
        *,
        metric: str | None,
        mode: str | None = None,
        checkpoint_config: CheckpointConfig,
        controls: Sequence[TrialControl] = (),
        fence: CommitFence | None = None,
        result_flush_interval_s: float = 5.0,
    ):
        self.store = store
        self.trial = trial
        self.context = context
        self.metric = metric
        self.mode = mode
        self.checkpoint_config = checkpoint_config
        self.controls = list(controls)
        self.fence = fence
        self.flush_interval = result_flush_interval_s
        attempt = trial.attempts[-1]
        self.attempt = attempt.attempt
        self.iteration = attempt.start_iteration
        latest = trial.latest_checkpoint
        self.resume_checkpoint = self._committed(latest) if latest is not None else None
        base = (latest.metrics if latest is not None else None) or {}
        self.time_total = float(base.get("time_total_s", 0.0) or 0.0)
        self.started = time.monotonic()
        self.last_report = self.started
        self.iterations_since_restore = 0
        if trial.best_iteration is not None and trial.best_iteration > self.iteration:
            self._best_of_history()  # its best was in rows this attempt replaces
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
        """``prefect_tune.report()`` for this trial (see there).

        Raises:
            ReportError: ``metrics`` is not a dict of JSON-friendly values, or ``checkpoint``
                is not a Checkpoint.
            MetricNotReportedError: the experiment's metric or the checkpoint score attribute
                is missing.
            CheckpointError: ``checkpoint`` cannot be committed (see
                :func:`~prefect_tune.state.local_checkpoint_files`); nothing of this report is
                recorded.
            UnsafePathError: ``checkpoint`` is a committed one that leads outside its
                experiment; nothing of this report is recorded.
            TrialStopped: a control stopped or paused the trial, or its driver lost the lease.
        """
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
        with contextlib.ExitStack() as source:
            # The checkpoint's files are listed before anything of this report is recorded: one
            # that cannot be committed (missing, empty, a link out of it) leaves the trial as
            # it was.
            local = None
            if checkpoint is not None:
                local_dir = source.enter_context(checkpoint.as_source_directory())
                local = (local_dir, local_checkpoint_files(local_dir))
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
                # A trainable's own done=True is kept (Ray Tune's stop={"done": True}).
                done=row.get("done") is True,
                hostname=self.host,
                pid=self.pid,
            )
            with self._lock:
                self.buffer.append(row)
                self.trial.last_result = row
                self._consider(row)
                if local is not None:
                    self._commit_checkpoint(row, *local)
                elif now - self.last_flush >= self.flush_interval:
                    # The trial's state is written as at a commit: only while the lease is ours.
                    if self._fenced_at_commit() is Decision.ABANDON:
                        raise TrialStopped(Decision.ABANDON)
                    self.flush(write_state=True)
        for control in self.controls:
            decision = control.on_result(self.trial.trial_id, row)
            if decision is not Decision.CONTINUE:
                raise TrialStopped(decision)

    def _consider(self, row: Mapping[str, Any]) -> None:
        """Keeps ``row`` as the trial's best when its metric beats the best so far."""
        if self.metric is None or self.mode not in ("min", "max"):
            return
        value = result_number(row, self.metric)
        if value is None or not math.isfinite(value):
            return
        best = self.trial.best_metric
        if best is None or (value > best if self.mode == "max" else value < best):
            self.trial.best_metric = value
            self.trial.best_iteration = int(row["training_iteration"])

    def _best_of_history(self) -> None:
        """The best of the rows this attempt keeps (those up to the checkpoint it resumed
        from), read from storage: only when the best so far was after that checkpoint."""
        self.trial.best_metric = self.trial.best_iteration = None
        try:
            rows = self.store.read_history(self.trial)
        except Exception as exc:  # the best is shown, never relied on: not worth failing for
            logger.warning("Could not read the history of trial %s: %s", self.trial.trial_id, exc)
            return
        for row in rows:
            iteration = row.get("training_iteration")
            if isinstance(iteration, int) and iteration <= self.iteration:
                self._consider(row)

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

    def _committed(self, record: CheckpointRecord) -> Checkpoint:
        spec = self.store.storage.spec.child(layout.trial_dir(self.trial.dir_name), record.dir_name)
        return Checkpoint.from_committed(spec.url, spec.options, files=record.files)

    def _fenced_at_commit(self, during: Future[Decision] | None = None) -> Decision:
        return self.fence.at_commit(during) if self.fence is not None else Decision.CONTINUE

    def _commit_checkpoint(
        self, row: dict[str, Any], local_dir: str, files: dict[str, int]
    ) -> None:
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
        # is read then too, unless a recent commit read it.
        flushed = None if self._carry() else pool.submit(self.flush)
        fenced = self.fence.read_during(pool) if self.fence is not None else None
        try:
            uploaded = self.store.upload_checkpoint(trial.dir_name, index, local_dir, files)
        except BaseException:
            pending: list[Future[Any]] = [f for f in (flushed, fenced) if f is not None]
            wait(pending)  # the upload's error is the one to raise
            raise
        if flushed is not None:
            flushed.result()
        if self._fenced_at_commit(fenced) is Decision.ABANDON:
            raise TrialStopped(Decision.ABANDON)
        record = CheckpointRecord(
            index=index,
            dir_name=uploaded.dir_name,
            training_iteration=self.iteration,
            metrics=row,
            size_bytes=uploaded.size_bytes,
            files=uploaded.files,
        )
        trial.checkpoints.append(record)
        trial.next_checkpoint_index = index + 1
        dropped = checkpoints_to_drop(trial.checkpoints, self.checkpoint_config)
        trial.checkpoints = [c for c in trial.checkpoints if c not in dropped]
        self.store.write_trial(trial)  # the commit point
        if dropped:  # no longer listed: deleted while the trainable goes on
            self._deleting = [f for f in self._deleting if not f.done()]
            self._deleting.append(
                pool.submit(self.store.delete_checkpoints, trial.dir_name, dropped)
            )
        self.resume_checkpoint = self._committed(record)

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
