"""Prefect glue: the experiment flow, the trial task, the task executor."""

from prefect_tune.prefect._executor import PrefectTaskExecutor
from prefect_tune.prefect._flow import experiment_tag, mark_taken_over, run_experiment_flow
from prefect_tune.prefect._task import trial_task

__all__ = [
    "PrefectTaskExecutor",
    "experiment_tag",
    "mark_taken_over",
    "run_experiment_flow",
    "trial_task",
]
