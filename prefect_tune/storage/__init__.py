"""Storage of experiments: one fsspec-backed interface, the stored layout, the TuneStorage block."""

from prefect_tune.storage import _layout as layout
from prefect_tune.storage._block import TuneStorage
from prefect_tune.storage._errors import redact
from prefect_tune.storage._filesystem import Storage, StorageSpec, join_url, normalize_url
from prefect_tune.storage._probe import read_probe

__all__ = [
    "Storage",
    "StorageSpec",
    "TuneStorage",
    "join_url",
    "layout",
    "normalize_url",
    "read_probe",
    "redact",
]
