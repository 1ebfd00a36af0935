"""Versioned models of the stored experiment, and the store that reads and writes them."""

from prefect_tune.state._lease import DEFAULT_LEASE_TTL_S, Lease, LeaseHolder, read_lease
from prefect_tune.state._models import (
    SCHEMA_VERSION,
    AttemptRecord,
    CheckpointRecord,
    ExperimentDefinition,
    ExperimentState,
    FlowRunRecord,
    TrialState,
    TrialStatus,
    load_document,
)
from prefect_tune.state._store import ExperimentStore

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "Lease",
    "LeaseHolder",
    "read_lease",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "CheckpointRecord",
    "ExperimentDefinition",
    "ExperimentState",
    "ExperimentStore",
    "FlowRunRecord",
    "TrialState",
    "TrialStatus",
    "load_document",
]
