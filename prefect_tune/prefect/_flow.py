"""The experiment as a Prefect flow run: the flow is the driver of the experiment."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Crashed
from prefect.task_runners import TaskRunner

from prefect_tune.engine import TuneController
from prefect_tune.exceptions import TrialsErroredError
from prefect_tune.prefect._executor import PrefectTaskExecutor
from prefect_tune.state import FlowRunRecord, Lease, TrialState, TrialStatus

logger = logging.getLogger("prefect_tune")

ControllerFactory = Callable[[PrefectTaskExecutor, FlowRunRecord], TuneController]


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


def run_experiment_flow(
    build_controller: ControllerFactory,
    *,
    name: str,
    task_runner: TaskRunner[Any],
    retries: int = 0,
    retry_delay_seconds: float = 0.0,
) -> list[TrialState]:
    """Runs the experiment as a flow run named ``name`` (a subflow inside a running flow).

    The flow run fails when trials end in ERROR (so Prefect retries, automations and the UI see
    it); each retry resumes the unfinished and errored trials from storage.

    Args:
        build_controller: Makes the controller once the flow run exists (it needs the run's id
            and the flow's task runner).
        name: The experiment's name: the flow's name and the flow run's name.
        task_runner: Where the trial tasks run (a ``DaskTaskRunner``).
        retries: Prefect flow retries of the experiment flow.
        retry_delay_seconds: Pause between retries.

    Returns:
        Every trial of the experiment.

    Raises:
        TrialsErroredError: trials ended in ERROR after the last retry.
    """

    def experiment() -> list[TrialState]:
        context = FlowRunContext.get()
        flow_run = context.flow_run if context is not None else None
        record = FlowRunRecord(
            flow_run_id=str(flow_run.id) if flow_run is not None else None,
            flow_run_name=flow_run.name if flow_run is not None else None,
            run_count=flow_run.run_count if flow_run is not None else 1,
        )
        controller = build_controller(PrefectTaskExecutor(name), record)
        controller.on_takeover = lambda previous: mark_taken_over(previous, record)
        trials = controller.run()
        errored = [t for t in trials if t.status is TrialStatus.ERROR]
        if errored:
            listing = "; ".join(f"{t.trial_id}: {t.error}" for t in errored[:5])
            raise TrialsErroredError(
                f"{len(errored)} of {len(trials)} trials of experiment {name!r} errored "
                f"({listing}). The experiment is stored: a retry or a new run resumes them."
            )
        return trials

    experiment.__name__ = "tune_experiment"
    experiment.__qualname__ = "tune_experiment"
    flow: Flow[[], list[TrialState]] = Flow(
        fn=experiment,
        name=name,
        flow_run_name=name,
        task_runner=task_runner,
        retries=retries,
        retry_delay_seconds=retry_delay_seconds,
        validate_parameters=False,
        persist_result=False,
        description=f"prefect-tune experiment {name!r}",
    )
    return flow()


__all__ = ["mark_taken_over", "run_experiment_flow"]
