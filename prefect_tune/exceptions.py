"""The prefect-tune error tree.

Every error raised on purpose by prefect-tune derives from :class:`PrefectTuneError` and, where a
builtin fits, from that builtin too, so ``except ValueError`` keeps working for callers that do not
know this package.
"""

from __future__ import annotations

__all__ = [
    "PrefectTuneError",
    "ConfigError",
    "SearchSpaceError",
    "ConfigNotSerializableError",
    "ResourcesUnavailableError",
    "MetricNotReportedError",
    "StorageError",
    "UnknownStorageSchemeError",
    "StorageDriverMissingError",
    "MissingExtraError",
    "StorageCredentialsError",
    "StoragePermissionError",
    "StorageNotFoundError",
    "StorageNotSharedError",
    "CheckpointError",
    "IncompleteCheckpointError",
    "CheckpointNotFoundError",
    "CheckpointOutsideExperimentError",
    "StateError",
    "UnsupportedSchemaVersionError",
    "DamagedStateError",
    "DecisionStateMismatchError",
    "UnsafePathError",
    "ExperimentNotFoundError",
    "ReportError",
    "ExperimentLockedError",
    "LeaseLostError",
    "ExperimentExistsError",
    "TrialError",
    "WorkerLostError",
    "TrialsErroredError",
    "SessionError",
    "PrefectAPIUnreachableError",
    "CrashLoopError",
    "PrefectTuneWarning",
    "NoCheckpointToExploitWarning",
]


class PrefectTuneError(Exception):
    """Base of every error prefect-tune raises on purpose."""


class ConfigError(PrefectTuneError, ValueError):
    """A configuration object (``TuneConfig``, ``RunConfig``...) was given an invalid value."""


class SearchSpaceError(ConfigError):
    """The ``param_space`` cannot be sampled: a bad domain, bound or grid."""


class ConfigNotSerializableError(ConfigError, TypeError):
    """A trial config holds a value that cannot be stored as JSON."""


class ResourcesUnavailableError(ConfigError):
    """No worker of the Dask cluster has the resources the trials ask for
    (``with_resources``): Dask would keep them waiting forever."""


class MetricNotReportedError(PrefectTuneError, KeyError):
    """The trainable reported a result without the metric ``TuneConfig(metric=...)`` names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class StorageError(PrefectTuneError, OSError):
    """Reading or writing the experiment's ``storage_path`` failed."""


class UnknownStorageSchemeError(StorageError, ValueError):
    """The ``storage_path`` URL names a protocol fsspec does not know."""


class StorageDriverMissingError(PrefectTuneError, ImportError):
    """The package that implements the ``storage_path`` protocol is not installed."""


class MissingExtraError(PrefectTuneError, ImportError):
    """An optional feature's package is not installed; the message names the extra to install
    (``pip install prefect-tune[optuna]``)."""


class StorageCredentialsError(StorageError, PermissionError):
    """The storage rejected the credentials, or none were found."""


class StoragePermissionError(StorageError, PermissionError):
    """The credentials are valid but may not access this path."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """A file, directory or bucket that must exist does not."""


class StorageNotSharedError(StorageError):
    """Some Dask workers cannot read what the driver wrote to ``storage_path``."""


class CheckpointError(PrefectTuneError):
    """A checkpoint could not be created, committed or read."""


class IncompleteCheckpointError(CheckpointError, FileNotFoundError):
    """The checkpoint has no manifest or lacks files its manifest lists: it was never committed."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No committed checkpoint is stored at the given URI: its directory, its trial or the
    trial's record of it does not exist."""


class CheckpointOutsideExperimentError(CheckpointError, ValueError):
    """A URI given as a checkpoint of an experiment does not name one: it is not of the form
    ``<experiment>/trials/<trial dir>/checkpoint_<n>``, or no experiment is stored above it."""


class StateError(PrefectTuneError):
    """Stored experiment state is missing, unreadable or inconsistent."""


class UnsupportedSchemaVersionError(StateError, ValueError):
    """A state file was written by a newer prefect-tune than the one reading it."""


class DecisionStateMismatchError(StateError, ValueError):
    """Stored searcher, scheduler or stopper state was written by another kind of one, or with
    other settings, than the one given to resume it: refused rather than silently replaced."""


class DamagedStateError(StateError, ValueError):
    """A stored state file cannot be read as what it must be: it is not JSON (truncated, cut
    short, edited by hand) or not a valid document of its kind. The message names the file and
    what is wrong; nothing was written because of it.

    Attributes:
        path: The URL of the damaged file, if known.
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[type[DamagedStateError], tuple[str, str | None]]:
        return (type(self), (str(self), self.path))


class UnsafePathError(DamagedStateError):
    """A path read from stored state would lead outside its directory: a file or directory name
    with a ``..``, ``.`` or empty segment, an absolute path, a backslash, a drive letter or a
    control character, or (on a local or NFS path) a symbolic link to somewhere else. Nothing
    is read from, written to or deleted at that path."""


class ExperimentNotFoundError(StateError, FileNotFoundError):
    """No experiment is stored at the given path."""


class ReportError(PrefectTuneError, TypeError):
    """``report()`` was given metrics that are not a dict of JSON-friendly values."""


class ExperimentLockedError(StateError, RuntimeError):
    """Another live driver holds the experiment's lease."""


class LeaseLostError(StateError, RuntimeError):
    """This driver's lease was taken over by another driver; it must stop writing."""


class ExperimentExistsError(StateError, FileExistsError):
    """An experiment is already stored where ``RunConfig(resume="never")`` wanted a new one."""


class TrialError(PrefectTuneError, RuntimeError):
    """A trial's trainable raised; the original exception is the ``__cause__``."""


class WorkerLostError(TrialError):
    """The process that ran a trial died (its Dask worker was killed, ran out of memory or
    lost its machine) and Dask started the trial again elsewhere; counted as a failure of the
    trial, which then resumes from its latest checkpoint as a new task run.

    Attributes:
        task_run_id: The Prefect task run that died with the process, if known.
    """

    def __init__(self, message: str, task_run_id: str | None = None):
        super().__init__(message)
        self.task_run_id = task_run_id

    def __reduce__(self) -> tuple[type[WorkerLostError], tuple[str, str | None]]:
        return (type(self), (str(self), self.task_run_id))


class TrialsErroredError(TrialError):
    """The experiment ended with errored trials; it is stored and can be resumed."""


class SessionError(PrefectTuneError, RuntimeError):
    """``report()`` or ``get_checkpoint()`` was called outside a running trial."""


class PrefectAPIUnreachableError(PrefectTuneError, ConnectionError):
    """A Dask worker cannot reach the Prefect API the experiment reports to (a temporary API
    on the driver's host seen from a worker on another host, a firewall, a wrong URL)."""


class CrashLoopError(PrefectTuneError, RuntimeError):
    """The experiment's last runs of this deployment all crashed (their process died): the
    automatic resume after a crash stops here, so a person can look before it runs again."""


class PrefectTuneWarning(UserWarning):
    """Base of prefect-tune's warnings: something allowed that is likely a mistake."""


class NoCheckpointToExploitWarning(PrefectTuneWarning):
    """PopulationBasedTraining could not exploit: the donor trial has no committed checkpoint
    (its trainable never passed ``checkpoint=`` to ``report()``)."""
