"""Typed, versioned models of everything prefect-tune persists.

Every stored JSON document carries ``schema_version``. A reader accepts its own version and older
ones (migrated in :func:`load_document`), and refuses newer ones with
:class:`~prefect_tune.exceptions.UnsupportedSchemaVersionError`.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefect_tune.exceptions import StateError, UnsupportedSchemaVersionError

SCHEMA_VERSION = 1


class TrialStatus(str, Enum):
    """Where a trial is in its lifecycle (PENDING -> RUNNING -> TERMINATED | ERROR)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    def is_finished(self) -> bool:
        """TERMINATED or ERROR: the trial will not run again unless errored trials are resumed."""
        return self in (TrialStatus.TERMINATED, TrialStatus.ERROR)


class _Model(BaseModel):
    # NaN and inf are legitimate metric values: keep them (as JSON's NaN/Infinity), not null.
    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="constants")


class CheckpointRecord(_Model):
    """A committed checkpoint of a trial."""

    index: int
    dir_name: str = Field(description="Directory name below the trial's directory.")
    training_iteration: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    size_bytes: int = 0


class AttemptRecord(_Model):
    """One task run of a trial: its first run, a retry after a failure, or a resume."""

    attempt: int
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    start_iteration: int = Field(
        0, description="training_iteration of the checkpoint it resumed from (0: from scratch)."
    )
    resumed_from: str | None = None
    status: TrialStatus = TrialStatus.RUNNING
    error: str | None = None
    flow_run_id: str | None = None
    task_run_id: str | None = None
    host: str | None = None


class TrialState(_Model):
    """A trial's whole state. Its worker writes it at each start, checkpoint and end."""

    schema_version: int = SCHEMA_VERSION
    trial_id: str
    index: int
    dir_name: str
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    last_result: dict[str, Any] | None = None
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)
    next_checkpoint_index: int = 0
    num_failures: int = 0
    error: str | None = None
    error_type: str | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    updated_at: float = Field(default_factory=time.time)

    @property
    def latest_checkpoint(self) -> CheckpointRecord | None:
        return self.checkpoints[-1] if self.checkpoints else None


class ExperimentDefinition(_Model):
    """What an experiment is: written once when it is created."""

    schema_version: int = SCHEMA_VERSION
    name: str
    experiment_id: str
    created_at: float = Field(default_factory=time.time)
    trainable: str = Field(description="Import path of the trainable, for information.")
    param_space: dict[str, Any] = Field(description="JSON description of the search space.")
    num_samples: int
    seed: int
    total_trials: int | None
    metric: str | None = None
    mode: str | None = None
    tune_config: dict[str, Any] = Field(default_factory=dict)
    checkpoint_config: dict[str, Any] = Field(default_factory=dict)
    failure_config: dict[str, Any] = Field(default_factory=dict)
    stop: Any = None


class FlowRunRecord(_Model):
    """A flow run that drove the experiment, in order: the experiment's lineage."""

    flow_run_id: str | None
    flow_run_name: str | None = None
    run_count: int = 1
    started_at: float = Field(default_factory=time.time)


class ExperimentState(_Model):
    """The driver's snapshot of the experiment, rewritten atomically as trials progress.

    Each trial's own ``trial.json`` is the source of truth for that trial; this snapshot lets a
    restore read one file instead of one per trial when most trials are finished.
    """

    schema_version: int = SCHEMA_VERSION
    name: str
    next_trial_index: int = 0
    trials: list[TrialState] = Field(default_factory=list)
    flow_runs: list[FlowRunRecord] = Field(default_factory=list)
    finished: bool = False
    updated_at: float = Field(default_factory=time.time)


M = TypeVar("M", bound=_Model)

# schema_version -> function upgrading a raw document of that version to the next one.
_MIGRATIONS: dict[type[_Model], dict[int, Any]] = {}


def load_document(model: type[M], raw: Any, where: str) -> M:
    """Validates a raw JSON document as ``model``, upgrading older schema versions.

    Raises:
        UnsupportedSchemaVersionError: the document is from a newer prefect-tune.
        StateError: the document is not a valid ``model``.
    """
    if not isinstance(raw, dict):
        raise StateError(f"{where} is not a JSON object; the file is damaged.")
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise StateError(f"{where} has an invalid schema_version {version!r}.")
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaVersionError(
            f"{where} was written with schema_version {version}, but this prefect-tune reads "
            f"versions up to {SCHEMA_VERSION}. Upgrade prefect-tune to read it."
        )
    for step in range(version, SCHEMA_VERSION):
        raw = _MIGRATIONS[model][step](raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise StateError(f"{where} is not a valid {model.__name__}: {exc}") from exc
