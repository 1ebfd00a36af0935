"""The trial as a Prefect task: one task run per run of a trial, on the flow's task runner."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from prefect_tune._console import quiet_worker_shutdown
from prefect_tune.engine import TrialOutcome, TrialRequest, run_trial
from prefect_tune.prefect._trial_output import trial_output


class Sealed:
    """Carries a trial request through Prefect untouched.

    Prefect and prefect-dask walk task parameters looking for futures and rebuild dataclasses,
    tuples and annotations as they go (``quote`` comes out as a bare tuple on a Dask worker); a
    plain object is passed through as it is.
    """

    __slots__ = ("request",)

    def __init__(self, request: TrialRequest):
        self.request = request

    def __repr__(self) -> str:
        return repr(self.request)


# log_prints=False: Prefect's print swap is not safe for trials overlapping on one worker;
# trial_output sends prints (and log records) to the task run's log instead.
@task(name="trial", cache_policy=NO_CACHE, persist_result=False, retries=0, log_prints=False)
def trial_task(sealed: Sealed) -> TrialOutcome:
    """Runs one trial once; failures and resumes are the controller's, not Prefect retries.

    The trainable's ``print`` and log records go to this task run's log (`trial_output`).
    """
    quiet_worker_shutdown()
    context = TaskRunContext.get()
    task_run_id = str(context.task_run.id) if context is not None else None
    with trial_output(get_run_logger()):  # type: ignore[arg-type]
        return run_trial(sealed.request, task_run_id=task_run_id)


def trial_run_name() -> str:
    """The task run's name: the trial's (read from the task run's own parameters)."""
    context = TaskRunContext.get()
    if context is None or "sealed" not in context.parameters:
        return "trial"
    return str(context.parameters["sealed"].request.trial_name)
