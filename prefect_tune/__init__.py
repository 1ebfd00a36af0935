"""prefect-tune: checkpointed hyperparameter tuning on Prefect and Dask, with Ray Tune's API.

Port a Ray Tune script by changing its imports::

    import prefect_tune as tune
    from prefect_tune import Tuner, TuneConfig, RunConfig, CheckpointConfig, Checkpoint
"""

from prefect_tune._wrappers import with_parameters, with_resources
from prefect_tune.checkpoint import Checkpoint
from prefect_tune.config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from prefect_tune.exceptions import (
    ConfigError,
    ConfigNotSerializableError,
    MetricNotReportedError,
    PrefectTuneError,
    ResourcesUnavailableError,
    SearchSpaceError,
    StorageError,
    TrialError,
    WorkerLostError,
)
from prefect_tune.results import Result, ResultGrid
from prefect_tune.session import TrialContext, get_checkpoint, get_context, report
from prefect_tune.space import (
    choice,
    grid_search,
    lograndint,
    loguniform,
    qlograndint,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    uniform,
)
from prefect_tune.state import TrialStatus
from prefect_tune.storage import TuneStorage
from prefect_tune.trainable import Trainable
from prefect_tune.tuner import Tuner

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "ConfigError",
    "ConfigNotSerializableError",
    "FailureConfig",
    "MetricNotReportedError",
    "PrefectTuneError",
    "ResourcesUnavailableError",
    "Result",
    "ResultGrid",
    "RunConfig",
    "SearchSpaceError",
    "StorageError",
    "TrialContext",
    "TrialError",
    "WorkerLostError",
    "Trainable",
    "TrialStatus",
    "TuneConfig",
    "TuneStorage",
    "Tuner",
    "choice",
    "get_checkpoint",
    "get_context",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "report",
    "sample_from",
    "uniform",
    "with_parameters",
    "with_resources",
]
