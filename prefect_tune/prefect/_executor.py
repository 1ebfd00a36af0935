"""`PrefectTaskExecutor`: trials as Prefect task runs on the running flow's task runner."""

from __future__ import annotations

import os
import uuid

from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture

from prefect_tune.engine import TrialOutcome, TrialRequest
from prefect_tune.engine._executor import QueueingExecutor
from prefect_tune.exceptions import StorageNotSharedError
from prefect_tune.prefect._task import Sealed, trial_task
from prefect_tune.storage import Storage, layout, read_probe


class PrefectTaskExecutor(QueueingExecutor):
    """Submits each trial as a task run named after the trial and tagged with the experiment.

    Must be used inside a running flow (the experiment flow), whose task runner runs the tasks.
    """

    def __init__(self, experiment_name: str):
        super().__init__()
        self.experiment_name = experiment_name
        context = FlowRunContext.get()
        if context is None:
            raise RuntimeError("PrefectTaskExecutor must be used inside a running flow.")
        self.task_runner = context.task_runner

    def capacity(self) -> int:
        client = getattr(self.task_runner, "client", None)
        if client is not None:
            try:
                return max(1, sum(client.nthreads().values()))
            except Exception:  # not a Dask client after all
                pass
        return os.cpu_count() or 1

    def submit(self, request: TrialRequest) -> PrefectFuture[TrialOutcome]:
        task = trial_task.with_options(
            task_run_name=request.trial_name, tags=[self.experiment_name]
        )
        future = task.submit(Sealed(request))
        future.add_done_callback(self._on_done)
        return future

    def _outcome(self, handle: PrefectFuture[TrialOutcome]) -> TrialOutcome | BaseException:
        try:
            return handle.result(raise_on_failure=True)
        except BaseException as exc:  # the trial's error, or its worker's death
            return exc

    def cancel_all(self) -> None:
        return None

    def check_storage(self, storage: Storage) -> None:
        """Has every Dask worker read a marker the driver just wrote to ``storage``.

        Raises:
            StorageNotSharedError: naming the workers that could not, and the fix.
        """
        client = getattr(self.task_runner, "client", None)
        if client is None or not hasattr(client, "run"):
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
