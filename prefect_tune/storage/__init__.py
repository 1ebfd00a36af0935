"""Storage of experiments: one fsspec-backed interface, the stored layout, the TuneStorage block."""

from prefect_tune.storage import _layout as layout
from prefect_tune.storage._block import TuneStorage
from prefect_tune.storage._errors import public_url, redact
from prefect_tune.storage._filesystem import Storage, StorageSpec, join_url, normalize_url
from prefect_tune.storage._probe import read_probe
from prefect_tune.storage._resolve import (
    DEFAULT_STORAGE_PATH,
    refuse_block_with_options,
    resolve_spec,
)

__all__ = [
    "DEFAULT_STORAGE_PATH",
    "Storage",
    "StorageSpec",
    "TuneStorage",
    "join_url",
    "layout",
    "normalize_url",
    "read_probe",
    "public_url",
    "redact",
    "refuse_block_with_options",
    "resolve_spec",
]
