"""One task run of a trial, on a worker: from reading its state to recording how it ended.

This is everything that runs on the Dask worker; it knows nothing of Prefect, which wraps it in a
task (``prefect_tune.prefect``). It writes the trial's state before the trainable starts and
after it ends, so the trial's fate is in storage before the task returns (durable completion).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect_tune.config import CheckpointConfig
from prefect_tune.engine._control import Decision, StopCriteria, TrialControl, TrialStopped
from prefect_tune.engine._fence import CommitFence, ExperimentFence
from prefect_tune.engine._session import TrialContext, TrialSession, activated
from prefect_tune.exceptions import TrialError, WorkerLostError
from prefect_tune.state import AttemptRecord, ExperimentStore, TrialState, TrialStatus
from prefect_tune.storage import StorageSpec, layout

logger = logging.getLogger("prefect_tune")

#: What the trial's attempt records when its trainable returned without reporting anything.
NO_REPORT_WARNING = (
    "The trainable returned without reporting a result: nothing ranks this trial. Call "
    "prefect_tune.report({...}) (not Ray's report) at least once."
)


@dataclass
class TrialRequest:
    """What a worker needs to run one trial once. Holds credentials: never log it whole."""

    experiment: StorageSpec
    experiment_name: str
    trial: TrialState
    trial_name: str
    trainable: Callable[[dict[str, Any]], Any]
    metric: str | None = None
    mode: str | None = None
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    stop: Any = None
    deadline: float | None = None
    restart: bool = False
    flow_run_id: str | None = None
    result_flush_interval_s: float = 5.0
    lease_owner: str | None = None
    fence_interval_s: float = 2.0
    #: The driver's decision desk (scheduler, Stopper), shared in this process; None: none.
    decisions: Any = None

    def __repr__(self) -> str:
        return f"TrialRequest({self.trial.trial_id!r}, experiment={self.experiment_name!r})"


@dataclass
class TrialOutcome:
    """How a task run of a trial ended (a trainable that raised ends with TrialError instead)."""

    trial: TrialState
    decision: Decision = Decision.CONTINUE


def _not_started(trial: TrialState) -> TrialState:
    unstarted = trial.model_copy()
    unstarted.status = TrialStatus.PENDING
    return unstarted


def _begin(store: ExperimentStore, request: TrialRequest, task_run_id: str | None) -> TrialState:
    stored = store.read_trial(request.trial.dir_name)
    trial = stored if stored is not None else request.trial.model_copy(deep=True)
    trial.num_failures = max(trial.num_failures, request.trial.num_failures)
    if not request.restart:
        _fail_if_rerun_after_a_lost_worker(store, request, trial)
    if request.restart:
        store.delete_trial_outputs(trial.dir_name)
        trial = trial.model_copy(
            update={
                "checkpoints": [],
                "next_checkpoint_index": 0,
                "last_result": None,
                "attempts": [],
                "error": None,
                "error_type": None,
                "num_failures": 0,
                "carried_results": [],
            }
        )
    else:
        # A crash mid-upload leaves a checkpoint directory its trial never committed.
        store.remove_uncommitted_checkpoints(trial)
        # Results an interrupted attempt's state carried become the segment they were to be.
        for carried in trial.carried_results:
            store.write_results(trial.dir_name, carried.attempt, carried.segment, carried.rows)
        trial.carried_results = []
    interrupted = trial.attempts[-1] if trial.attempts else None
    if interrupted is not None and interrupted.status is TrialStatus.RUNNING:
        # Its driver was killed or taken over before the attempt ended: close its record.
        interrupted.status = TrialStatus.PAUSED
        interrupted.ended_at = trial.updated_at or time.time()
        interrupted.error = "Interrupted: it stopped without ending (its driver was stopped)."
    latest = trial.latest_checkpoint
    trial.attempts.append(
        AttemptRecord(
            attempt=len(trial.attempts) + 1,
            start_iteration=latest.training_iteration if latest else 0,
            resumed_from=latest.dir_name if latest else None,
            flow_run_id=request.flow_run_id,
            task_run_id=task_run_id,
            host=socket.gethostname(),
        )
    )
    trial.status = TrialStatus.RUNNING
    trial.error = None
    trial.error_type = None
    store.write_trial(trial)
    return trial


def _fail_if_rerun_after_a_lost_worker(
    store: ExperimentStore, request: TrialRequest, trial: TrialState
) -> None:
    """Dask runs a task again by itself when the worker under it died. An attempt this very
    request started, still RUNNING in storage, tells that story: record it as a failure (so
    that ``FailureConfig.max_failures`` counts it and the driver resumes the trial as a new
    task run from its latest checkpoint) instead of silently running it again.

    Raises:
        WorkerLostError: this run is Dask's rerun of a request whose worker died.
    """
    if len(trial.attempts) <= len(request.trial.attempts):
        return
    lost = trial.attempts[-1]
    if lost.status is not TrialStatus.RUNNING or lost.flow_run_id != request.flow_run_id:
        return
    message = (
        f"The process running trial {trial.trial_id} (attempt {lost.attempt}, on "
        f"{lost.host or 'an unknown host'}) died before the trial ended."
    )
    lost.status = TrialStatus.ERROR
    lost.ended_at = time.time()
    lost.error = f"WorkerLostError: {message}"
    trial.status = TrialStatus.ERROR
    trial.num_failures += 1
    trial.error = lost.error
    trial.error_type = "WorkerLostError"
    store.write_trial(trial)
    raise WorkerLostError(message, lost.task_run_id)


def run_trial(request: TrialRequest, task_run_id: str | None = None) -> TrialOutcome:
    """Runs the trainable for one trial and records the outcome in storage.

    Returns:
        The trial's final state: TERMINATED when the trainable returned or a stop condition
        ended it, PAUSED when a control paused it.

    Raises:
        TrialError: the trainable raised, or called ``sys.exit()``; the trial is stored as
            ERROR with the traceback in ``error.txt`` before this is raised. (A
            KeyboardInterrupt is the user's, not the trainable's error: it propagates.)
    """
    storage = request.experiment.open()
    fence = ExperimentFence(storage, request.lease_owner, request.fence_interval_s)
    opening = fence.check()
    if opening is Decision.ABANDON:  # submitted by a driver that has since lost the lease
        return TrialOutcome(trial=request.trial, decision=Decision.ABANDON)
    if opening is Decision.PAUSE or (
        request.deadline is not None and time.time() >= request.deadline
    ):
        # It waited in the queue past fail-fast or the time budget: it never starts.
        return TrialOutcome(trial=_not_started(request.trial), decision=Decision.PAUSE)
    store = ExperimentStore(storage)
    trial = _begin(store, request, task_run_id)
    context = TrialContext(
        trial_id=trial.trial_id,
        trial_name=request.trial_name,
        experiment_name=request.experiment_name,
        trial_dir=store.storage.uri(layout.trial_dir(trial.dir_name)),
        trial_index=trial.index,
        attempt=trial.attempts[-1].attempt,
    )
    controls: list[TrialControl] = [StopCriteria(request.stop, request.deadline), fence]
    if request.decisions is not None:
        controls.append(request.decisions)
    session = TrialSession(
        store,
        trial,
        context,
        metric=request.metric,
        mode=request.mode,
        checkpoint_config=request.checkpoint_config,
        controls=controls,
        fence=CommitFence(fence.check, window_s=request.fence_interval_s / 2),
        result_flush_interval_s=request.result_flush_interval_s,
    )
    decision = Decision.CONTINUE
    try:
        with activated(session):
            returned = request.trainable(dict(trial.config))
            if isinstance(returned, dict):  # Ray: a returned dict is the final result
                session.report(returned)
    except TrialStopped as stopped:
        decision = stopped.decision
    # sys.exit() in a trainable is its failure, with its exit code, not the worker's exit.
    except (Exception, SystemExit) as exc:
        # A trial that another driver took over is not this task run's to record as failed.
        if fence.check() is Decision.ABANDON:
            return TrialOutcome(trial=trial, decision=Decision.ABANDON)
        _record_error(store, session, exc)
        raise TrialError(
            f"Trial {trial.trial_id} ({request.trial_name}) failed: {_error_text(exc)}"
        ) from exc
    finally:
        session.close()
        closing = getattr(request.decisions, "close", None)
        if closing is not None:
            closing(trial.trial_id)
    if decision is Decision.ABANDON or fence.check() is Decision.ABANDON:
        return TrialOutcome(trial=trial, decision=Decision.ABANDON)
    session.flush()
    attempt = trial.attempts[-1]
    attempt.ended_at = time.time()
    if decision is Decision.PAUSE:
        trial.status = attempt.status = TrialStatus.PAUSED
    else:
        trial.status = attempt.status = TrialStatus.TERMINATED
        if trial.last_result is not None:
            trial.last_result["done"] = True
        else:
            logger.warning("Trial %s: %s", trial.trial_id, NO_REPORT_WARNING)
            attempt.warning = NO_REPORT_WARNING
    store.write_trial(trial)
    return TrialOutcome(trial=trial, decision=decision)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the trainable called sys.exit() with exit code {exc.code!r}"
    return f"{type(exc).__name__}: {exc}"


def _record_error(store: ExperimentStore, session: TrialSession, exc: BaseException) -> None:
    trial = session.trial
    with contextlib.suppress(Exception):  # lose the buffered rows, never the error record
        session.flush()
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    trial.status = TrialStatus.ERROR
    trial.num_failures += 1
    trial.error = _error_text(exc)
    trial.error_type = type(exc).__name__
    attempt = trial.attempts[-1]
    attempt.ended_at = time.time()
    attempt.status = TrialStatus.ERROR
    attempt.error = trial.error
    store.write_trial_text(trial.dir_name, layout.ERROR_FILE, text)
    store.write_trial(trial)
