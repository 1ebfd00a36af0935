"""The tuning engine: the controller loop, trial runs, searchers. Knows nothing of Prefect."""

from prefect_tune.engine._controller import ResumePolicy, TuneController, trial_summary
from prefect_tune.engine._executor import ThreadTrialExecutor, TrialExecutor
from prefect_tune.engine._search import BasicVariantGenerator, describe_param_space
from prefect_tune.engine._trial_run import TrialOutcome, TrialRequest, run_trial

__all__ = [
    "BasicVariantGenerator",
    "ResumePolicy",
    "ThreadTrialExecutor",
    "TrialExecutor",
    "TrialOutcome",
    "TrialRequest",
    "TuneController",
    "describe_param_space",
    "run_trial",
    "trial_summary",
]
