"""Typed, versioned models of everything prefect-tune persists.

Every stored JSON document carries ``schema_version``, counted per kind of document (the default
of its model's ``schema_version`` field). A reader accepts its own version and older ones
(migrated in :func:`load_document`), and refuses newer ones with
:class:`~prefect_tune.exceptions.UnsupportedSchemaVersionError`.

Versions (each older version is still read, upgraded by the migrations at the end):

- a trial's state (`TrialState`, ``trial.json``) is at version 3. Version 2 made each
  `CheckpointRecord` list the checkpoint's files and sizes: that record is what commits a
  checkpoint (at version 1 a manifest file written last in the checkpoint's directory did, and
  listed them). Version 3 added `CarriedResults`: the rows reported since the last results
  segment, carried in the write that commits a checkpoint.
- the driver's snapshot (`ExperimentState`, ``experiment_state.json``) is at version 2, which
  records each trial as a compact `TrialSummary` instead of its whole `TrialState`.
- every other document (the definition, the lease, a driver's record) is at version 1.

An optional field with a default is added without a new version, as readers ignore fields they
do not know: `AttemptRecord.warning` was added so, within version 3 of the trial's state, and
`TrialState.best_metric` / `best_iteration` with `TrialSummary.best_metric`, and
`TrialState.exploits` (`ExploitRecord`, population based training).
"""

from __future__ import annotations

import json
import time
from enum import Enum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from prefect_tune.exceptions import (
    DamagedStateError,
    UnsafePathError,
    UnsupportedSchemaVersionError,
)
from prefect_tune.storage import layout

#: The version of the documents whose format never changed (definition, lease).
SCHEMA_VERSION = 1
#: The version of the driver's snapshot, ``experiment_state.json``.
STATE_SCHEMA_VERSION = 2
#: The version of a trial's state, ``trial.json``.
TRIAL_SCHEMA_VERSION = 3


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


def _stored_name(value: str) -> str:
    problem = layout.path_problem(value, single=True)
    if problem is not None:
        raise UnsafePathError(f"the directory name {value!r} {problem}")
    return value


def _stored_path(value: str) -> str:
    problem = layout.path_problem(value)
    if problem is not None:
        raise UnsafePathError(f"the path {value!r} {problem}")
    return value


#: A directory name read from stored state, joined below its parent: one safe name.
StoredName = Annotated[str, AfterValidator(_stored_name)]
#: A relative path read from stored state (a checkpoint's file): safe segments only.
StoredPath = Annotated[str, AfterValidator(_stored_path)]


def _field(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as a reader writes it: ``checkpoints[0].files``."""
    parts = list(loc[:-2] if loc and loc[-1] == "[key]" else loc)  # a dict key: its dict
    return "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" if i else str(part)
        for i, part in enumerate(parts)
    )


def _damaged(exc: ValidationError, message: str, where: str | None = None) -> DamagedStateError:
    """The error for a document that failed validation: an `UnsafePathError` when a path in
    it could lead outside its directory (naming each), a `DamagedStateError` otherwise; both
    name the file ``where`` when it is known."""
    unsafe = [
        f"{_field(error['loc'])}: {cause}"
        for error in exc.errors()
        if isinstance(cause := (error.get("ctx") or {}).get("error"), UnsafePathError)
    ]
    if unsafe:
        return UnsafePathError(
            f"{message}: {'; '.join(unsafe)}. A path read from stored state must stay inside "
            "its directory: the file is damaged, or was written to lead elsewhere; nothing was "
            "read from or written to that path.",
            where,
        )
    return DamagedStateError(f"{message}: {validation_problems(exc)}", where)


class _Model(BaseModel):
    # NaN and inf are legitimate metric values: keep them (as JSON's NaN/Infinity), not null.
    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="constants")


class CheckpointRecord(_Model):
    """A committed checkpoint of a trial."""

    index: int
    dir_name: StoredName = Field(description="Directory name below the trial's directory.")
    training_iteration: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    size_bytes: int = 0
    files: dict[StoredPath, int] | None = Field(
        None,
        description="Relative path -> size in bytes of each file of the checkpoint. None in a "
        "version 1 trial state, whose checkpoints list their files in a manifest.",
    )


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
    warning: str | None = Field(
        default=None,
        description="Something the attempt did that is allowed but likely a mistake (its "
        "trainable returned without reporting).",
    )


class CarriedResults(_Model):
    """Reported results that a trial's state carries until they are written as a result
    segment: a checkpoint's commit makes them durable without a write of their own."""

    attempt: int
    segment: int = Field(description="The sequence number of the segment they are to be.")
    rows: list[dict[str, Any]] = Field(default_factory=list)


_now = time.time  # ExploitRecord's field ``time`` hides the module in its class body


class ExploitRecord(_Model):
    """One exploit of population based training: the trial resumed from a copy of another
    trial's committed checkpoint, with a new config.

    The write of the trial's state that lists this record (with the copied checkpoint) commits
    the exploit: a restore never makes it again.
    """

    donor_trial_id: str = Field(description="The trial whose checkpoint was copied.")
    donor_checkpoint: StoredName = Field(
        description="The donor's checkpoint directory (below the donor's trial directory)."
    )
    donor_iteration: int = Field(description="training_iteration of the donor's checkpoint.")
    checkpoint: StoredName = Field(
        description="The copy, a checkpoint directory of this trial: its next task run "
        "resumes from it."
    )
    time_attr: str = Field(description="PopulationBasedTraining's time_attr.")
    time: float = Field(description="time_attr of this trial's result that triggered it.")
    donor_time: float = Field(description="time_attr of the donor's result that made it one.")
    old_config: dict[str, Any] = Field(description="The trial's config before.")
    new_config: dict[str, Any] = Field(description="The explored config it resumed with.")
    operations: dict[str, Any] = Field(
        default_factory=dict,
        description="What exploring did to each mutated key ('* 1.2', 'resample'...).",
    )
    created_at: float = Field(default_factory=_now)


class TrialState(_Model):
    """A trial's whole state. Its worker writes it at each start, checkpoint and end; the write
    that lists a checkpoint commits it."""

    schema_version: int = TRIAL_SCHEMA_VERSION
    trial_id: str
    index: int
    dir_name: StoredName
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    last_result: dict[str, Any] | None = None
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)
    next_checkpoint_index: int = 0
    num_failures: int = 0
    error: str | None = None
    error_type: str | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    carried_results: list[CarriedResults] = Field(
        default_factory=list,
        description="Results not yet in a segment of results/; each attempt has one at most.",
    )
    updated_at: float = Field(default_factory=time.time)
    best_metric: float | None = Field(
        default=None,
        description="The best value (by TuneConfig.mode) of TuneConfig.metric in the trial's "
        "history, NaN and infinities left out; None before any, or without a metric and mode.",
    )
    best_iteration: int | None = Field(
        default=None, description="The training_iteration of the result that holds best_metric."
    )
    exploits: list[ExploitRecord] = Field(
        default_factory=list,
        description="Population based training: each time the trial resumed from another "
        "trial's checkpoint with a new config, oldest first (its lineage).",
    )

    @property
    def latest_checkpoint(self) -> CheckpointRecord | None:
        return self.checkpoints[-1] if self.checkpoints else None


class TrialSummary(_Model):
    """What the driver's snapshot records of a trial: enough to schedule it, to list it and to
    compare it with the others. The trial's ``trial.json`` (a `TrialState`) has the rest: its
    attempts and the records of its kept checkpoints."""

    trial_id: str
    index: int
    dir_name: StoredName
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    last_result: dict[str, Any] | None = None
    checkpoint: StoredName | None = Field(
        None, description="Directory name of the trial's latest committed checkpoint."
    )
    num_failures: int = 0
    error: str | None = None
    error_type: str | None = None
    best_metric: float | None = None

    @classmethod
    def of(cls, trial: TrialState) -> TrialSummary:
        latest = trial.latest_checkpoint
        return cls(
            trial_id=trial.trial_id,
            index=trial.index,
            dir_name=trial.dir_name,
            config=trial.config,
            status=trial.status,
            last_result=trial.last_result,
            checkpoint=latest.dir_name if latest is not None else None,
            num_failures=trial.num_failures,
            error=trial.error,
            error_type=trial.error_type,
            best_metric=trial.best_metric,
        )

    def as_new_trial(self) -> TrialState:
        """The state of a trial that has no ``trial.json`` yet: it never started."""
        return TrialState(
            trial_id=self.trial_id,
            index=self.index,
            dir_name=self.dir_name,
            config=self.config,
            status=self.status,
            num_failures=self.num_failures,
            error=self.error,
            error_type=self.error_type,
        )


class _SummaryKey(_Model):
    """The fields of a `TrialSummary` that a `PackedSummary` keeps unpacked, and the names it
    joins into paths, checked as the file is read (validating only these skips building the
    config and the last result)."""

    index: int
    status: TrialStatus
    num_failures: int = 0
    dir_name: StoredName
    checkpoint: StoredName | None = None


class PackedSummary:
    """A `TrialSummary` kept as its JSON: what the driver holds of each trial it is not running,
    and what a ``ResultGrid`` holds of each trial, about the size of the JSON.

    ``index``, ``status`` and ``num_failures`` are at hand, for scheduling and counting;
    everything else is parsed from the JSON when asked for (:meth:`unpack`), each time: keep
    the unpacked summary rather than reading several properties in a loop. Immutable and safe
    to share between threads.

    Attributes:
        index: The trial's index in the experiment.
        status: The trial's status.
        num_failures: The trial's failures so far.
        data: The summary's JSON, as it appears in the snapshot.
    """

    __slots__ = ("index", "status", "num_failures", "data")

    index: int
    status: TrialStatus
    num_failures: int
    data: bytes

    def __init__(self, index: int, status: TrialStatus, num_failures: int, data: bytes):
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "num_failures", num_failures)
        object.__setattr__(self, "data", data)

    @classmethod
    def of(cls, trial: TrialState | TrialSummary) -> PackedSummary:
        summary = trial if isinstance(trial, TrialSummary) else TrialSummary.of(trial)
        data = summary.model_dump_json().encode()
        return cls(summary.index, summary.status, summary.num_failures, data)

    @classmethod
    def from_json(cls, data: bytes, where: str) -> tuple[PackedSummary, str]:
        """Packs the JSON of a summary as stored; returns it with the trial's directory name.

        Raises:
            DamagedStateError: ``data`` is not a summary (only the index, status and directory
                name are checked here; the rest when it is unpacked).
        """
        try:
            key = _SummaryKey.model_validate_json(data)
        except ValidationError as exc:
            raise _damaged(exc, f"A trial summary in {where} is damaged", where) from exc
        return cls(key.index, key.status, key.num_failures, data), key.dir_name

    def unpack(self) -> TrialSummary:
        """The summary, parsed and validated.

        Raises:
            DamagedStateError: the stored JSON is not a valid summary.
        """
        try:
            return TrialSummary.model_validate_json(self.data)
        except ValidationError as exc:
            raise _damaged(exc, f"The summary of trial {self.index} is damaged") from exc

    def with_status(self, status: TrialStatus) -> PackedSummary:
        return PackedSummary.of(self.unpack().model_copy(update={"status": status}))

    def whole(self, stored: TrialState | None) -> TrialState:
        """The trial's whole state, given its ``trial.json`` (None if it has none).

        That is ``stored`` as the driver last saw it: when the trial's worker died, the driver
        recorded the failure (counted, and the trial's end if it may not be retried) in the
        snapshot only. A trial that never started is the state this summary describes.
        """
        if stored is None:
            return self.unpack().as_new_trial()
        ended_unseen = self.status.is_finished() and not stored.status.is_finished()
        if ended_unseen or self.num_failures > stored.num_failures:
            summary = self.unpack()
            stored.num_failures = max(stored.num_failures, summary.num_failures)
            if ended_unseen:
                stored.status = summary.status
                stored.error, stored.error_type = summary.error, summary.error_type
        return stored

    @property
    def trial_id(self) -> str:
        return self.unpack().trial_id

    @property
    def dir_name(self) -> str:
        return self.unpack().dir_name

    @property
    def error(self) -> str | None:
        return self.unpack().error

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"PackedSummary is immutable; cannot set {name!r}.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PackedSummary) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedSummary, (self.index, self.status, self.num_failures, self.data))

    def __repr__(self) -> str:
        return f"PackedSummary(index={self.index}, status={self.status.value})"


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
    restore or an analysis read one file instead of one per trial when most trials are finished.
    It records each trial's `TrialSummary`; a `TrialState` given in ``trials`` is summarised.
    """

    schema_version: int = STATE_SCHEMA_VERSION
    name: str
    next_trial_index: int = 0
    trials: list[TrialSummary] = Field(default_factory=list)
    flow_runs: list[FlowRunRecord] = Field(default_factory=list)
    finished: bool = False
    updated_at: float = Field(default_factory=time.time)

    @field_validator("trials", mode="before")
    @classmethod
    def _summarise(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [TrialSummary.of(t) if isinstance(t, TrialState) else t for t in value]
        return value


M = TypeVar("M", bound=_Model)


def _state_1_to_2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 of the snapshot held each trial's whole `TrialState`: keep its summary."""

    def summary(trial: Any) -> Any:
        if not isinstance(trial, dict):
            return trial  # validation names the damage
        checkpoints = trial.get("checkpoints") or []
        latest = checkpoints[-1] if isinstance(checkpoints, list) and checkpoints else None
        out = {k: v for k, v in trial.items() if k in TrialSummary.model_fields}
        out["checkpoint"] = latest.get("dir_name") if isinstance(latest, dict) else None
        return out

    trials = raw.get("trials")
    return {
        **raw,
        "schema_version": 2,
        "trials": [summary(t) for t in trials] if isinstance(trials, list) else trials,
    }


def _trial_1_to_2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 checkpoint records do not list their files (their manifests do): ``files``
    stays None."""
    return {**raw, "schema_version": 2}


def _trial_2_to_3(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 2 wrote every reported result to a segment: it carries none."""
    return {**raw, "schema_version": 3}


# model -> {schema_version: function upgrading a raw document of that version to the next one}.
_MIGRATIONS: dict[type[_Model], dict[int, Any]] = {
    ExperimentState: {1: _state_1_to_2},
    TrialState: {1: _trial_1_to_2, 2: _trial_2_to_3},
}


def current_version(model: type[_Model]) -> int:
    """The schema_version ``model`` writes."""
    field = model.model_fields.get("schema_version")
    return int(field.default) if field is not None else SCHEMA_VERSION


def validation_problems(exc: ValidationError, limit: int = 3) -> str:
    """What a validation error found, on one line: ``field: message; ...`` (never the values,
    which may be large)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{'.'.join(map(str, e['loc'])) or 'the document'}: {e['msg']}" for e in errors]
    more = f" (and {len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def load_document(model: type[M], raw: Any, where: str) -> M:
    """Validates a raw JSON document as ``model``, upgrading older schema versions.

    Raises:
        UnsupportedSchemaVersionError: the document is from a newer prefect-tune.
        UnsafePathError: a name or path in the document could lead outside its directory.
        DamagedStateError: the document is not a valid ``model``.
    """
    if not isinstance(raw, dict):
        raise DamagedStateError(f"{where} is damaged: it is not a JSON object.", where)
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise DamagedStateError(
            f"{where} is damaged: it has an invalid schema_version {version!r}.", where
        )
    current = current_version(model)
    if version > current:
        raise UnsupportedSchemaVersionError(
            f"{where} was written with schema_version {version}, but this prefect-tune reads "
            f"versions up to {current}. Upgrade prefect-tune to read it."
        )
    for step in range(version, current):
        raw = _MIGRATIONS[model][step](raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _damaged(
            exc, f"{where} is damaged: it is not a valid {model.__name__}", where
        ) from exc


def load_document_json(model: type[M], data: bytes, where: str) -> M:
    """`load_document` of a document's JSON bytes; one parse when it is at the current version.

    Raises:
        UnsupportedSchemaVersionError: the document is from a newer prefect-tune.
        DamagedStateError: the document is not JSON or not a valid ``model``.
    """
    try:
        document = model.model_validate_json(data)
    except ValidationError:
        document = None  # the slow path below names the problem
    if document is not None and getattr(document, "schema_version", None) == current_version(model):
        return document
    try:
        raw = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError too
        raise DamagedStateError(
            f"{where} is damaged: it is not valid JSON ({exc}); it was cut short or edited.",
            where,
        ) from exc
    return load_document(model, raw, where)
