"""The experiment as a Prefect flow run: the flow is the driver of the experiment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Flow
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner

from prefect_tune.engine import TuneController
from prefect_tune.prefect._executor import PrefectTaskExecutor
from prefect_tune.state import FlowRunRecord, TrialState

ControllerFactory = Callable[[PrefectTaskExecutor, FlowRunRecord], TuneController]


def run_experiment_flow(
    build_controller: ControllerFactory,
    *,
    name: str,
    task_runner: TaskRunner[Any],
    retries: int = 0,
) -> list[TrialState]:
    """Runs the experiment as a flow run named ``name`` (a subflow inside a running flow).

    Args:
        build_controller: Makes the controller once the flow run exists (it needs the run's id
            and the flow's task runner).
        name: The experiment's name: the flow's name and the flow run's name.
        task_runner: Where the trial tasks run (a ``DaskTaskRunner``).
        retries: Prefect flow retries of the experiment flow; each retry reads the stored state
            and runs only what is unfinished.

    Returns:
        Every trial of the experiment when the flow run completes.
    """

    def experiment() -> list[TrialState]:
        context = FlowRunContext.get()
        flow_run = context.flow_run if context is not None else None
        record = FlowRunRecord(
            flow_run_id=str(flow_run.id) if flow_run is not None else None,
            flow_run_name=flow_run.name if flow_run is not None else None,
        )
        controller = build_controller(PrefectTaskExecutor(name), record)
        return controller.run()

    experiment.__name__ = "tune_experiment"
    experiment.__qualname__ = "tune_experiment"
    flow: Flow[[], list[TrialState]] = Flow(
        fn=experiment,
        name=name,
        flow_run_name=name,
        task_runner=task_runner,
        retries=retries,
        validate_parameters=False,
        persist_result=False,
        description=f"prefect-tune experiment {name!r}",
    )
    return flow()


__all__ = ["run_experiment_flow"]
