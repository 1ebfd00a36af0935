"""Checkpoint payloads shared by the trainables and the floors (imported on Dask/Ray workers)."""

from __future__ import annotations

import os

_PAYLOADS: dict[int, bytes] = {}


def payload(size: int) -> bytes:
    """``size`` random bytes, made once per process (incompressible, like model weights)."""
    data = _PAYLOADS.get(size)
    if data is None:
        data = _PAYLOADS[size] = os.urandom(size)
    return data


def write_checkpoint_dir(directory: str, size: int) -> str:
    """Writes one checkpoint file of ``size`` bytes into ``directory``; returns its path."""
    path = os.path.join(directory, "model.bin")
    with open(path, "wb") as handle:
        handle.write(payload(size))
    return path
