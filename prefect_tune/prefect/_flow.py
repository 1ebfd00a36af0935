"""The experiment as a Prefect flow run: the flow is the driver of the experiment."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from prefect_tune.engine import TuneController
from prefect_tune.exceptions import TrialsErroredError
from prefect_tune.prefect._api import workers_use_the_driver_api
from prefect_tune.prefect._executor import PrefectTaskExecutor
from prefect_tune.state import FlowRunRecord, Lease, PackedSummary, TrialStatus
from prefect_tune.storage import Storage, layout

logger = logging.getLogger("prefect_tune")


class ControllerFactory(Protocol):
    """Makes the experiment's controller once its flow run exists (it needs the run's id and
    the flow's task runner), with the flow's hooks for what the lease tells."""

    def __call__(
        self,
        executor: PrefectTaskExecutor,
        flow_run: FlowRunRecord,
        *,
        on_takeover: Callable[[Lease], None],
        on_acquired: Callable[[], None],
    ) -> TuneController: ...


def mark_taken_over(previous: Lease, by: FlowRunRecord) -> None:
    """Marks the flow run of a driver that was taken over as CRASHED, if Prefect still shows
    it running (a flow process killed with SIGKILL stays RUNNING forever otherwise)."""
    if not previous.flow_run_id:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(previous.flow_run_id))
        if run.state is None or run.state.is_final():
            return
        message = (
            f"Its driver stopped (no lease renewal since {previous.renewed_at:.0f}); flow run "
            f"{by.flow_run_name} ({by.flow_run_id}) took the experiment over."
        )
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)


class DriverRecords:
    """The experiment's drivers, one record each under ``drivers/`` in its storage.

    A driver writes its record first thing, before it takes the lease, and deletes it when it
    ends. A driver that was killed before it took the lease is named in no lease, so no
    takeover would mark its flow run; the next driver to take the lease finds its record and
    marks the flow run CRASHED once the driver is provably gone (its process is dead on this
    host, or its record is older than the lease's time to live: a live driver has by then
    taken the lease or been refused it).
    """

    def __init__(self, storage: Storage, me: FlowRunRecord, ttl_s: float):
        self.storage = storage
        self.me = me
        self.ttl_s = ttl_s

    def announce(self) -> None:
        if self.me.flow_run_id is None:
            return
        record = Lease(
            owner=self.me.flow_run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            flow_run_id=self.me.flow_run_id,
            flow_run_name=self.me.flow_run_name,
            ttl_s=self.ttl_s,
        )
        self.storage.write_bytes(
            layout.driver_file(self.me.flow_run_id), record.model_dump_json().encode()
        )

    def withdraw(self) -> None:
        if self.me.flow_run_id is None:
            return
        try:
            self.storage.delete(layout.driver_file(self.me.flow_run_id))
        except Exception as exc:  # a stale record is tidied up by the next driver
            logger.warning("Could not delete the record of this driver: %s", exc)

    def sweep(self) -> None:
        """Marks the flow runs of drivers that died before taking the lease CRASHED."""
        names = [n for n in self.storage.list_dir(layout.DRIVERS_DIR) if n.endswith(".json")]
        if not names:
            return
        with get_client(sync_client=True) as client:
            for name in names:
                run_id = name[: -len(".json")]
                if run_id == self.me.flow_run_id:
                    continue
                rel = f"{layout.DRIVERS_DIR}/{name}"
                try:
                    record = Lease.model_validate_json(self.storage.read_bytes(rel))
                    run = client.read_flow_run(uuid.UUID(run_id))
                except ObjectNotFound:
                    self.storage.delete(rel)
                    continue
                if run.state is not None and run.state.is_final():
                    self.storage.delete(rel)
                elif not record.is_live():  # dead on this host, or past its time to live
                    message = (
                        f"Its driver (pid {record.pid} on {record.host}) stopped before it took "
                        f"the experiment; flow run {self.me.flow_run_name} "
                        f"({self.me.flow_run_id}) ran the experiment after it."
                    )
                    client.set_flow_run_state(run.id, Crashed(message=message), force=True)
                    self.storage.delete(rel)


def run_experiment_flow(
    build_controller: ControllerFactory,
    *,
    name: str,
    storage: Storage,
    lease_ttl_s: float,
    task_runner: TaskRunner[Any],
    retries: int = 0,
    retry_delay_seconds: float = 0.0,
    trial_tags: tuple[str, ...] = (),
) -> list[PackedSummary]:
    """Runs the experiment as a flow run named ``name`` (a subflow inside a running flow).

    The flow run fails when trials end in ERROR (so Prefect retries, automations and the UI see
    it); each retry resumes the unfinished and errored trials from storage.

    Args:
        build_controller: Makes the controller once the flow run exists.
        name: The experiment's name: the flow's name and the flow run's name.
        storage: The experiment's storage, where each driver records itself.
        lease_ttl_s: The lease's time to live, past which a driver's record is stale.
        task_runner: Where the trial tasks run (a ``DaskTaskRunner``).
        retries: Prefect flow retries of the experiment flow.
        retry_delay_seconds: Pause between retries.
        trial_tags: Tags of the trials' task runs.

    Returns:
        Every trial of the experiment.

    Raises:
        TrialsErroredError: trials ended in ERROR after the last retry.
    """

    def experiment() -> _Trials:
        context = FlowRunContext.get()
        flow_run = context.flow_run if context is not None else None
        record = FlowRunRecord(
            flow_run_id=str(flow_run.id) if flow_run is not None else None,
            flow_run_name=flow_run.name if flow_run is not None else None,
            run_count=flow_run.run_count if flow_run is not None else 1,
        )
        drivers = DriverRecords(storage, record, lease_ttl_s)
        controller = build_controller(
            PrefectTaskExecutor(name, task_runner, trial_tags),
            record,
            on_takeover=lambda previous: mark_taken_over(previous, record),
            on_acquired=drivers.sweep,
        )
        drivers.announce()
        try:
            trials = controller.run()
        finally:
            drivers.withdraw()
        errored = [t for t in trials if t.status is TrialStatus.ERROR]
        if errored:
            listing = "; ".join(f"{t.trial_id}: {t.error}" for t in errored[:5])
            raise TrialsErroredError(
                f"{len(errored)} of {len(trials)} trials of experiment {name!r} errored "
                f"({listing}). The experiment is stored: a retry or a new run resumes them."
            )
        return _Trials(trials)

    experiment.__name__ = "tune_experiment"
    experiment.__qualname__ = "tune_experiment"
    flow: Flow[[], _Trials] = Flow(
        fn=experiment,
        name=name,
        flow_run_name=name,
        # The trials' task runner is started by the executor once this run holds the
        # experiment's lease; the flow's own runs only what a user's code may submit.
        task_runner=ThreadPoolTaskRunner(max_workers=1),  # type: ignore[arg-type]
        retries=retries,
        retry_delay_seconds=retry_delay_seconds,
        validate_parameters=False,
        persist_result=False,
        description=f"prefect-tune experiment {name!r}",
    )
    # Every Dask worker reports to this process's API, its temporary one too.
    with workers_use_the_driver_api():
        return flow().trials


class _Trials:
    """The experiment flow's return value: its trials in one object, not a list, so that Prefect
    links one result to the flow run's state instead of one per trial (it keeps a record of each
    item of a returned list, about 130 bytes a trial, for as long as the flow run's context)."""

    __slots__ = ("trials",)

    def __init__(self, trials: list[PackedSummary]):
        self.trials = trials


__all__ = ["DriverRecords", "mark_taken_over", "run_experiment_flow"]
