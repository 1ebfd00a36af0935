"""Versioned models of the stored experiment, and the store that reads and writes them."""

from prefect_tune.state._lease import DEFAULT_LEASE_TTL_S, Lease, LeaseHolder, read_lease
from prefect_tune.state._models import (
    SCHEMA_VERSION,
    STATE_SCHEMA_VERSION,
    TRIAL_SCHEMA_VERSION,
    AttemptRecord,
    CarriedResults,
    CheckpointRecord,
    ExperimentDefinition,
    ExperimentState,
    ExploitRecord,
    FlowRunRecord,
    PackedSummary,
    TrialState,
    TrialStatus,
    TrialSummary,
    load_document,
    load_document_json,
)
from prefect_tune.state._store import ExperimentStore, local_checkpoint_files

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "Lease",
    "LeaseHolder",
    "read_lease",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "CarriedResults",
    "CheckpointRecord",
    "ExperimentDefinition",
    "ExperimentState",
    "ExperimentStore",
    "ExploitRecord",
    "FlowRunRecord",
    "PackedSummary",
    "STATE_SCHEMA_VERSION",
    "TRIAL_SCHEMA_VERSION",
    "TrialState",
    "TrialStatus",
    "TrialSummary",
    "load_document",
    "load_document_json",
    "local_checkpoint_files",
]
