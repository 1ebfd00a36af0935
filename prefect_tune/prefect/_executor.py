"""`PrefectTaskExecutor`: trials as Prefect task runs on the running flow's task runner."""

from __future__ import annotations

import logging
import os
import uuid
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dask
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.states import Crashed
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from prefect_tune import _resources
from prefect_tune._settings import get_settings
from prefect_tune.engine import TrialOutcome, TrialRequest
from prefect_tune.engine._executor import QueueingExecutor
from prefect_tune.exceptions import StorageNotSharedError, WorkerLostError
from prefect_tune.prefect._fast import fast_dispatch
from prefect_tune.prefect._task import Sealed, trial_run_name, trial_task
from prefect_tune.storage import Storage, layout, read_probe

if TYPE_CHECKING:
    from prefect_tune.prefect._fast._dispatch import FastDispatch

logger = logging.getLogger("prefect_tune")


def _mark_crashed(error: WorkerLostError) -> None:
    """Sets the task run that died with its worker CRASHED (it would show RUNNING forever)."""
    if not error.task_run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.set_task_run_state(
                uuid.UUID(error.task_run_id), Crashed(message=str(error)), force=True
            )
    except Exception as exc:  # bookkeeping only
        logger.warning("Could not mark task run %s crashed: %s", error.task_run_id, exc)


#: Batches of messages to the scheduler that this driver's Dask client keeps for debugging.
MESSAGE_LOG_LENGTH = 16


def _shorten_message_log(client: Any) -> None:
    """Keeps only the last `MESSAGE_LOG_LENGTH` batches in the client's log of the messages it
    sent the scheduler.

    Dask keeps the last ``distributed.admin.low-level-log-length`` (1000) batches it sent, for
    debugging only: every trial's pickled request stays in it (a KiB or more each) long after
    the trial ended, most of the driver's memory in a large experiment. Only this client's log
    is shortened, not the scheduler's or the workers' logs. A client that reconnects makes a
    new log of the configured length.
    """
    comm = getattr(client, "scheduler_comm", None)
    log = getattr(comm, "recent_message_log", None)
    if isinstance(log, deque) and (log.maxlen is None or log.maxlen > MESSAGE_LOG_LENGTH):
        comm.recent_message_log = deque(log, maxlen=MESSAGE_LOG_LENGTH)  # type: ignore[union-attr]


class PrefectTaskExecutor(QueueingExecutor):
    """Runs each trial as a task run of the experiment's flow run, named after the trial and
    tagged with ``tags``, on ``task_runner``.

    On a ``DaskTaskRunner`` the task runs go straight to the Dask cluster, which keeps
    Prefect's run context per worker process instead of rebuilding it per task run (the fast
    path, `prefect_tune.prefect._fast`), unless `fast_dispatch` chooses Prefect's plain path;
    any other task runner, and the plain path, get ``task_runner.submit`` as Prefect does it.
    Must be used inside the running experiment flow.

    A trial whose trainable asks for resources (`prefect_tune.with_resources`) asks Dask for
    them on either path: ``client.submit(..., resources=...)``, or the ``dask.annotate``
    that prefect-dask's ``submit`` passes on. ``resources``, the experiment's request, is
    checked against the cluster's workers once it is connected, before any trial runs.

    Raises:
        ConfigError: a ``PREFECT_TUNE_*`` setting is invalid (read when the executor is made).
    """

    def __init__(
        self,
        experiment_name: str,
        task_runner: TaskRunner[Any],
        tags: tuple[str, ...] = (),
        resources: Mapping[str, float] | None = None,
    ):
        super().__init__()
        if FlowRunContext.get() is None:
            raise RuntimeError("PrefectTaskExecutor must be used inside a running flow.")
        self.experiment_name = experiment_name
        self.task_runner = task_runner
        self.tags = tags
        self.resources = dict(resources or {})
        # Read here, on the driver: the workers run what the driver sends them.
        self._settings = get_settings()
        self._runner: TaskRunner[Any] | None = None
        self._client: Any = None
        self._dispatch: FastDispatch | None = None
        self._task = trial_task.with_options(task_run_name=trial_run_name, tags=list(tags))

    def start(self) -> None:
        """Starts the task runner (a Dask cluster, or a connection to one).

        Raises:
            ResourcesUnavailableError: no worker has the resources the trials ask for (the
                runner is closed again).
        """
        runner = self.task_runner.duplicate()
        runner.__enter__()
        self._runner = runner
        if isinstance(runner, DaskTaskRunner):
            self._client = runner.client  # starts the local cluster, or connects
            _shorten_message_log(self._client)
            try:
                self._check_resources()
            except BaseException:
                self.close()
                raise
            self._dispatch = fast_dispatch(
                self._client, self._settings, self.experiment_name, self.tags
            )
        elif self.resources:
            logger.warning(
                "Trials ask for %s (with_resources), which only a DaskTaskRunner honours; "
                "%s runs them without.",
                _resources.describe(self.resources),
                type(runner).__name__,
            )

    def dask_client(self) -> Any:
        """The Dask client of the started runner (None when it is not a DaskTaskRunner)."""
        return self._client

    def _workers(self) -> dict[str, Any]:
        return dict(self._client.scheduler_info(n_workers=-1)["workers"])

    def _check_resources(self) -> None:
        if not self.resources:
            return
        workers = self._workers()
        if not workers:
            logger.warning(
                "No Dask worker is connected yet: whether one has %s, which the trials ask "
                "for, is not checked.",
                _resources.describe(self.resources),
            )
        _resources.check_workers(workers, self.resources, str(self._client.scheduler.address))

    def close(self) -> None:
        runner, self._runner, self._client = self._runner, None, None
        self._dispatch = None
        if runner is not None:
            runner.__exit__(None, None, None)

    def _started(self) -> TaskRunner[Any]:
        if self._runner is None:
            raise RuntimeError("PrefectTaskExecutor.start() was not called.")
        return self._runner

    def capacity(self) -> int:
        self._started()
        if self._client is not None and self.resources:
            return max(1, _resources.slots(self._workers(), self.resources))
        if self._client is not None:
            return max(1, sum(self._client.nthreads().values()))
        return getattr(self._runner, "_max_workers", None) or os.cpu_count() or 1

    def submit(self, request: TrialRequest) -> Any:
        runner = self._started()
        resources = _resources.trial_resources(request.trainable) or None
        if self._dispatch is not None:
            future = self._dispatch.submit(request, resources)
        elif resources is not None and self._client is not None:
            # prefect-dask's submit takes no resources; Dask merges the annotation in.
            with dask.annotate(resources=resources):
                future = runner.submit(self._task, parameters={"sealed": Sealed(request)})
        else:
            future = runner.submit(self._task, parameters={"sealed": Sealed(request)})
        future.add_done_callback(self._on_done)
        return future

    def _outcome(self, handle: Any) -> TrialOutcome | BaseException:
        try:
            if isinstance(handle, PrefectFuture):
                return handle.result(raise_on_failure=True)
            return handle.result()
        except WorkerLostError as exc:
            _mark_crashed(exc)
            return exc
        except BaseException as exc:  # the trial's error, or its worker's death
            return exc

    def check_storage(self, storage: Storage) -> None:
        """Has every Dask worker read a marker the driver just wrote to ``storage``.

        Raises:
            StorageNotSharedError: naming the workers that could not, and the fix.
        """
        client = self._client
        if client is None:
            return
        token = uuid.uuid4().hex
        rel = layout.probe_file(token)
        storage.write_bytes(rel, token.encode())
        try:
            answers = client.run(read_probe, storage.spec, rel, token, on_error="return")
        finally:
            storage.delete(rel)
        failed = {
            worker: f"{type(why).__name__}: {why}" if isinstance(why, BaseException) else why
            for worker, why in answers.items()
            if why
        }
        if failed:
            details = "; ".join(f"{worker}: {why}" for worker, why in sorted(failed.items()))
            raise StorageNotSharedError(
                f"{len(failed)} of {len(answers)} Dask workers cannot read {storage.url}, which "
                f"the driver wrote ({details}). A local path is seen only by its own machine: "
                "use a directory on NFS mounted at the same path on every node, or cloud "
                "storage such as s3:// or gs://."
            )


__all__ = ["PrefectTaskExecutor"]
