"""The tuning engine: the controller loop, trial runs, searchers. Knows nothing of Prefect.

- ``_controller``: `TuneController`, the driver loop (the only writer of experiment state).
- ``_executor``: the `TrialExecutor` protocol and an in-process thread implementation.
- ``_search``: `BasicVariantGenerator`, grid and random search.
- ``_suggestions``: `SearchRecord`, a ``search_alg`` on the driver, each suggestion stored first.
- ``_trial_run``: `run_trial`, one task run of a trial on its worker.
- ``_session``: `TrialSession`, what ``report()`` does on the worker.
- ``_control``: `Decision` and the trial controls asked after each result.
- ``_fence``: the lease checks that stop a trial whose driver lost the experiment.
- ``_retention``: which checkpoints ``CheckpointConfig(num_to_keep=...)`` keeps.
- ``_progress``: snapshots of an experiment's progress for its observers (console, UI).
"""

from prefect_tune.engine._control import Decision, StopCriteria, TrialControl, TrialStopped
from prefect_tune.engine._controller import ResumePolicy, TuneController, trial_summary
from prefect_tune.engine._executor import ThreadTrialExecutor, TrialExecutor
from prefect_tune.engine._fence import CommitFence, ExperimentFence
from prefect_tune.engine._progress import ExperimentObserver, Progress, ProgressTracker
from prefect_tune.engine._retention import checkpoints_to_drop
from prefect_tune.engine._search import (
    BasicVariantGenerator,
    describe_param_space,
    space_from_description,
    validate_param_space,
)
from prefect_tune.engine._session import (
    AUTO_FIELDS,
    CARRIED_ROWS_MAX,
    TrialContext,
    TrialSession,
    activated,
    current_session,
)
from prefect_tune.engine._suggestions import SEARCH_FILE, SearchRecord, is_custom_search
from prefect_tune.engine._trial_run import TrialOutcome, TrialRequest, run_trial

__all__ = [
    "AUTO_FIELDS",
    "CARRIED_ROWS_MAX",
    "BasicVariantGenerator",
    "CommitFence",
    "Decision",
    "ExperimentFence",
    "ExperimentObserver",
    "Progress",
    "ProgressTracker",
    "ResumePolicy",
    "SEARCH_FILE",
    "SearchRecord",
    "StopCriteria",
    "ThreadTrialExecutor",
    "TrialContext",
    "TrialControl",
    "TrialExecutor",
    "TrialOutcome",
    "TrialRequest",
    "TrialSession",
    "TrialStopped",
    "TuneController",
    "activated",
    "checkpoints_to_drop",
    "current_session",
    "describe_param_space",
    "is_custom_search",
    "run_trial",
    "space_from_description",
    "trial_summary",
    "validate_param_space",
]
