"""The experiment as a Prefect flow run: the flow is the driver of the experiment."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import ValidationError

from prefect_tune.engine import ExperimentObserver, TuneController
from prefect_tune.exceptions import TrialsErroredError
from prefect_tune.prefect._api import workers_use_the_driver_api
from prefect_tune.prefect._executor import PrefectTaskExecutor
from prefect_tune.prefect._ui import (
    COMPLETED,
    FAILED,
    STARTED,
    PrefectUIObserver,
    emit,
    outcome,
    public_url,
)
from prefect_tune.state import FlowRunRecord, Lease, PackedSummary, TrialStatus
from prefect_tune.storage import Storage, layout, redact

logger = logging.getLogger("prefect_tune")

#: How `experiment_tag` begins: every experiment flow run carries one such tag.
EXPERIMENT_TAG_PREFIX = "prefect-tune-experiment:"


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
        observers: Sequence[ExperimentObserver] = (),
    ) -> TuneController: ...


def experiment_tag(url: str) -> str:
    """The tag of every flow run that drives the experiment stored at ``url``.

    A record that names a flow run (``lease.json``, ``drivers/<id>.json``) is read from storage
    that others may write: a flow run is marked only once the API shows it carries this tag.
    The tag stands for the experiment's place, not its name (any flow may share a name) nor
    its ``experiment_id`` (a new experiment has none stored until its driver holds the lease,
    and a copy of an experiment keeps it while its records name the original's flow runs). The
    same directory reached by another path (an NFS share mounted elsewhere) is another place:
    its runs are left alone, never marked wrongly.
    """
    return f"{EXPERIMENT_TAG_PREFIX}{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def flow_run_id(text: str | None) -> uuid.UUID | None:
    """The flow run id ``text`` spells in its canonical form, else None."""
    try:
        parsed = uuid.UUID(text or "")
    except (ValueError, TypeError):
        return None
    return parsed if str(parsed) == text else None


def tag_flow_run(run: FlowRun, tag: str) -> None:
    """Adds ``tag`` to a flow run (before it writes any record that names it)."""
    if tag in (run.tags or []):
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, tags=[*(run.tags or []), tag])


def mark_taken_over(previous: Lease, by: FlowRunRecord, storage: Storage) -> None:
    """Marks the flow run of a driver that was taken over as CRASHED, if Prefect still shows
    it running (a flow process killed with SIGKILL stays RUNNING forever otherwise) and it is
    a run of this experiment; any other run the lease names is left alone, with a warning."""
    if not previous.flow_run_id:
        return
    where = storage.uri(layout.LEASE_FILE)
    run_id = flow_run_id(previous.flow_run_id)
    if run_id is None:
        logger.warning("%s names %r, which is not a flow run id.", where, previous.flow_run_id)
        return
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return
        if run.state is None or run.state.is_final():
            return
        if not _of_experiment(run, storage, where):
            return
        message = (
            f"Its driver stopped (no lease renewal since {previous.renewed_at:.0f}); flow run "
            f"{by.flow_run_name} ({by.flow_run_id}) took the experiment over."
        )
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)


def _of_experiment(run: FlowRun, storage: Storage, where: str) -> bool:
    """Whether ``run`` drives the experiment of ``storage``; warns, naming the record at
    ``where``, when it does not."""
    tag = experiment_tag(storage.url)
    if tag in (run.tags or []):
        return True
    logger.warning(
        "%s names flow run %s (%s), which is not a run of the experiment at %s (it lacks the "
        "tag %s): the flow run is left alone.",
        where,
        run.name,
        run.id,
        storage.url,
        tag,
    )
    return False


class DriverRecords:
    """The experiment's drivers, one record each under ``drivers/`` in its storage.

    A driver writes its record first thing, before it takes the lease, and deletes it when it
    ends. A driver that was killed before it took the lease is named in no lease, so no
    takeover would mark its flow run; the next driver to take the lease finds its record and
    marks the flow run CRASHED once the driver is provably gone (its process is dead on this
    host, or its record is older than the lease's time to live: a live driver has by then
    taken the lease or been refused it). Records are read from storage that others may write:
    a flow run that is not a run of this experiment (`experiment_tag`) is never marked.
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
        """Marks the flow runs of drivers of this experiment that died before taking the lease
        CRASHED, and deletes the records that are provably stale."""
        names = [n for n in self.storage.list_dir(layout.DRIVERS_DIR) if n.endswith(".json")]
        if not names:
            return
        with get_client(sync_client=True) as client:
            for name in names:
                if name[: -len(".json")] != self.me.flow_run_id:
                    self._sweep_one(client, f"{layout.DRIVERS_DIR}/{name}")

    def _sweep_one(self, client: SyncPrefectClient, rel: str) -> None:
        where = self.storage.uri(rel)
        stem = rel.rsplit("/", 1)[-1][: -len(".json")]
        try:
            record = Lease.model_validate_json(self.storage.read_bytes(rel))
        except FileNotFoundError:  # its driver ended meanwhile
            return
        except ValidationError as exc:
            logger.warning("%s is not a driver record, left alone: %s", where, exc)
            return
        run_id = flow_run_id(stem)
        if run_id is None or record.flow_run_id != stem:
            logger.warning(
                "%s is not a driver record, left alone: its name is not the id of the flow "
                "run it names (%r).",
                where,
                record.flow_run_id,
            )
            return
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            self.storage.delete(rel)
            return
        if run.state is not None and run.state.is_final():
            self.storage.delete(rel)
        elif not record.is_live():  # dead on this host, or past its time to live
            if _of_experiment(run, self.storage, where):
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
    trial_resources: Mapping[str, float] | None = None,
    parameters: Mapping[str, Any] | None = None,
    artifacts: bool = True,
    artifact_interval_s: float = 10.0,
) -> list[PackedSummary]:
    """Runs the experiment as a flow run named ``name`` (a subflow inside a running flow).

    The flow run fails when trials end in ERROR (so Prefect retries, automations and the UI see
    it); each retry resumes the unfinished and errored trials from storage. It carries the tag
    ``experiment_tag(storage.url)``, which later drivers check before they mark it CRASHED.

    Args:
        build_controller: Makes the controller once the flow run exists.
        name: The experiment's name: the flow's name and the flow run's name.
        storage: The experiment's storage, where each driver records itself.
        lease_ttl_s: The lease's time to live, past which a driver's record is stale.
        task_runner: Where the trial tasks run (a ``DaskTaskRunner``).
        retries: Prefect flow retries of the experiment flow.
        retry_delay_seconds: Pause between retries.
        trial_tags: Tags of the trials' task runs.
        trial_resources: The Dask worker resources every trial asks for, checked against the
            cluster before any trial runs.
        parameters: What the flow run shows as its parameters (``experiment``,
            ``storage_path``, ``trainable``, ``metric``, ``mode``, ``num_samples``,
            ``search_space``); no credentials (the storage path is shown by `public_url`).
        artifacts: Whether the flow run gets the progress, leaderboard and summary artifacts.
        artifact_interval_s: The least time between two leaderboards (and best-updated events).

    Returns:
        Every trial of the experiment.

    Raises:
        TrialsErroredError: trials ended in ERROR after the last retry.
        ResourcesUnavailableError: no Dask worker has ``trial_resources``.
    """

    def experiment(
        experiment: str | None = None,
        storage_path: str | None = None,
        trainable: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        num_samples: int | None = None,
        search_space: Any = None,
    ) -> _Trials:
        context = FlowRunContext.get()
        flow_run = context.flow_run if context is not None else None
        record = FlowRunRecord(
            flow_run_id=str(flow_run.id) if flow_run is not None else None,
            flow_run_name=flow_run.name if flow_run is not None else None,
            run_count=flow_run.run_count if flow_run is not None else 1,
        )
        if flow_run is not None:
            # Before any record names this run: a later driver marks only tagged runs.
            try:
                tag_flow_run(flow_run, experiment_tag(storage.url))
            except Exception as exc:  # bookkeeping only: never block the run
                logger.warning("Could not tag flow run %s: %s", flow_run.name, exc)
        drivers = DriverRecords(storage, record, lease_ttl_s)
        ui = PrefectUIObserver(
            name,
            storage,
            record.flow_run_id,
            artifacts=artifacts,
            interval_s=artifact_interval_s,
        )
        controller = build_controller(
            PrefectTaskExecutor(name, task_runner, trial_tags, trial_resources),
            record,
            on_takeover=lambda previous: mark_taken_over(previous, record, storage),
            on_acquired=drivers.sweep,
            observers=[ui],
        )
        where = public_url(storage.url)

        def failed(error: BaseException, trials: list[PackedSummary] | None) -> None:
            payload: dict[str, Any] = {"experiment_uri": where, "metric": metric, "mode": mode}
            if trials is not None:
                payload = outcome(storage, [t.unpack() for t in trials], metric, mode)
            payload.update(
                error_type=type(error).__name__,
                error=redact(str(error))[:2000],
                will_retry=record.run_count <= retries,
            )
            emit(FAILED, name, record.flow_run_id, payload)

        emit(
            STARTED,
            name,
            record.flow_run_id,
            {
                "experiment_uri": where,
                "metric": metric,
                "mode": mode,
                "num_samples": num_samples,
                "run_count": record.run_count,
            },
        )
        drivers.announce()
        try:
            trials = controller.run()
        except BaseException as exc:
            failed(exc, None)
            raise
        finally:
            drivers.withdraw()
        errored = [t for t in trials if t.status is TrialStatus.ERROR]
        if errored:
            listing = "; ".join(f"{t.trial_id}: {t.error}" for t in errored[:5])
            error = TrialsErroredError(
                f"{len(errored)} of {len(trials)} trials of experiment {name!r} errored "
                f"({listing}). The experiment is stored: a retry or a new run resumes them."
            )
            failed(error, trials)
            raise error
        emit(
            COMPLETED,
            name,
            record.flow_run_id,
            outcome(storage, [t.unpack() for t in trials], metric, mode),
        )
        return _Trials(trials)

    experiment.__name__ = "tune_experiment"
    experiment.__qualname__ = "tune_experiment"
    flow: Flow[..., _Trials] = Flow(
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
        return flow(**dict(parameters or {})).trials


class _Trials:
    """The experiment flow's return value: its trials in one object, not a list, so that Prefect
    links one result to the flow run's state instead of one per trial (it keeps a record of each
    item of a returned list, about 130 bytes a trial, for as long as the flow run's context)."""

    __slots__ = ("trials",)

    def __init__(self, trials: list[PackedSummary]):
        self.trials = trials


__all__ = [
    "EXPERIMENT_TAG_PREFIX",
    "DriverRecords",
    "experiment_tag",
    "flow_run_id",
    "mark_taken_over",
    "run_experiment_flow",
    "tag_flow_run",
]
