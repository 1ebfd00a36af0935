"""Where a path, its fsspec options and a `TuneStorage` block point: one rule for every entry point.

``Tuner`` (through ``RunConfig``), ``Tuner.restore``/``can_restore``, ``ResultGrid.from_path`` and
the ``prefect-tune`` command all name a storage location the same three ways, and all of them
resolve it here:

    >>> resolve_spec("s3://bucket/tune/exp", {"anon": True})
    StorageSpec(url='s3://bucket/tune/exp', options=<anon>)
    >>> block = TuneStorage(storage_path="s3://bucket/tune", credentials={"token": "t"})
    >>> resolve_spec("exp", storage=block)
    StorageSpec(url='s3://bucket/tune/exp', options=<token>)
    >>> resolve_spec("gs://other/exp", storage=block)
    StorageSpec(url='gs://other/exp', options=<token>)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import fsspec

from prefect_tune.exceptions import ConfigError
from prefect_tune.storage._block import TuneStorage
from prefect_tune.storage._errors import has_password, public_url
from prefect_tune.storage._filesystem import StorageSpec

#: The storage root when neither a path nor a block is given.
DEFAULT_STORAGE_PATH = "~/prefect_tune_results"

_BLOCK_WITH_OPTIONS = (
    "Give either a TuneStorage block (storage, --block) or storage options (storage_options, "
    "--option), not both: put the options in the block."
)


def refuse_block_with_options(
    storage: TuneStorage | str | None, storage_options: Mapping[str, Any] | None
) -> None:
    """Refuses a block together with storage options: the block carries its own.

    Args:
        storage: A TuneStorage block, or the name of one not loaded yet.
        storage_options: fsspec options given beside it.

    Raises:
        ConfigError: both were given.
    """
    if storage is not None and storage_options:
        raise ConfigError(_BLOCK_WITH_OPTIONS)


def _is_located(path: str) -> bool:
    """Whether ``path`` says where it is by itself: a URL, an absolute or a ``~`` path."""
    protocol, _ = fsspec.core.split_protocol(path)
    return protocol is not None or path.startswith("~") or os.path.isabs(path)


def resolve_spec(
    path: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    storage: TuneStorage | None = None,
) -> StorageSpec:
    """The storage location that ``path``, ``storage_options`` and ``storage`` name together.

    Without a block, ``path`` (a local path, a ``~`` path or a URL) is used as it is, with
    ``storage_options``; no path at all means :data:`DEFAULT_STORAGE_PATH`.

    With a block, a relative ``path`` is a name below the block's ``storage_path``; an absolute
    local path, a ``~`` path or a URL with a protocol is used as it is, reached with the block's
    options and credentials; an empty or missing ``path`` is the block's root.

    Args:
        path: A local or NFS path, a ``~`` path, an fsspec URL, or a name below the block's root.
        storage_options: fsspec options (endpoint, credentials) for ``path``, without a block.
        storage: A TuneStorage block: the root for relative paths and the options for all.

    Returns:
        The location with the options to open it (they may hold secrets: never log them).

    Raises:
        ConfigError: both ``storage`` and ``storage_options`` were given, or the path carries
            a password (``s3://KEY:SECRET@bucket``).
    """
    refuse_block_with_options(storage, storage_options)
    spec = _resolved(None if path is None else os.fspath(path), storage_options, storage)
    if has_password(spec.url):
        # Named without its secret: a path is shown in the UI, in events, logs and errors.
        raise ConfigError(
            f"The storage path {public_url(spec.url)} carries credentials before its '@'. A "
            "path is shown in the Prefect UI, events and logs, and s3fs and gcsfs do not read "
            "credentials from it: pass them in storage_options (key=..., secret=...) or in a "
            "TuneStorage block's credentials."
        )
    return spec


def _resolved(
    text: str | None, storage_options: Mapping[str, Any] | None, storage: TuneStorage | None
) -> StorageSpec:
    if storage is None:
        url = DEFAULT_STORAGE_PATH if text is None else text
        return StorageSpec(url, dict(storage_options or {}))
    root = storage.spec()
    if not text:
        return root
    if _is_located(text):
        return StorageSpec(text, root.options)
    return root.child(text)
