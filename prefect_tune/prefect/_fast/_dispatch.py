"""The driver's half of the fast path: trials sent straight to the Dask cluster."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from distributed import Client, Future

from prefect_tune.engine import TrialRequest
from prefect_tune.prefect._fast._worker import WorkerContext, run_trial_task


class FastDispatch:
    """Sends trials straight to a Dask cluster as `run_trial_task` calls, each a task run of the
    experiment's flow run in a worker process that keeps Prefect's run context for the next.

    Must be made inside the running experiment flow (it captures the flow run's context).
    """

    def __init__(self, client: Client, experiment_name: str, tags: tuple[str, ...]):
        self._client = client
        self._context = WorkerContext.capture(experiment_name, tags)
        self._on_workers: Future | None = None  # the context scattered to every worker

    def _worker_context(self) -> Future:
        """The experiment's run context, sent to every worker once (it is a few KiB: sent with
        each trial, Dask would also keep a copy of it in its log of recent messages)."""
        scattered = self._on_workers
        if scattered is None or scattered.status != "finished":  # a worker that held it died
            scattered = self._client.scatter(self._context, broadcast=True, hash=False)
            self._on_workers = scattered
        return scattered

    def submit(self, request: TrialRequest, resources: Mapping[str, float] | None = None) -> Future:
        """Starts one task run of a trial on the cluster, on a worker with ``resources`` (Dask
        worker resources) if given; its Dask key names the trial."""
        return self._client.submit(
            run_trial_task,
            self._worker_context(),
            request,
            key=f"trial-{request.trial.trial_id}-{uuid.uuid4().hex[:8]}",
            pure=False,
            resources=dict(resources) if resources else None,
        )


__all__ = ["FastDispatch"]
