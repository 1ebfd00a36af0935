"""Proving that a process can read the experiment's storage (run on every Dask worker)."""

from __future__ import annotations

from prefect_tune.storage._filesystem import Storage, StorageSpec


def read_probe(spec: StorageSpec, rel: str, token: str) -> str | None:
    """Reads the marker ``rel`` under ``spec``; returns None when it holds ``token``, else why not.

    Opens a fresh Storage (not the per-process cache) so a stale listing cannot hide a problem.
    """
    try:
        data = Storage(spec).read_bytes(rel)
    except FileNotFoundError:
        return "the marker is not there (this worker sees another directory)"
    except Exception as exc:  # every failure is an answer here, not an error
        return f"{type(exc).__name__}: {exc}"
    if data.decode(errors="replace") != token:
        return "the marker has other content: this worker sees a different directory"
    return None
