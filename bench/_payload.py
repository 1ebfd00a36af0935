"""Checkpoint payloads shared by the trainables and the floors (imported on Dask/Ray workers).

Standard library only: ``bench.ray_side`` imports it in a virtualenv without Prefect.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

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


def report_checkpoints(tune: Any, config: dict[str, Any], prefix: str) -> None:
    """W3's trainable, for prefect-tune and for Ray Tune alike (``tune`` is ``prefect_tune`` or
    ``ray.tune``: the same names).

    Commits ``config["checkpoints"]`` checkpoints of one ``config["size"]``-byte file, each
    written first to a new local directory (named ``prefix...``) and reported with
    ``tune.report(..., checkpoint=tune.Checkpoint.from_directory(d))``. Every report carries the
    seconds spent so far inside those calls as ``commit_s``, and a last report the total.
    """
    size = int(config["size"])
    commit_s = 0.0
    checkpoints = int(config["checkpoints"])
    for step in range(checkpoints):
        local = tempfile.mkdtemp(prefix=prefix)
        try:
            write_checkpoint_dir(local, size)
            start = time.perf_counter()
            tune.report(
                {"score": float(step), "commit_s": commit_s},
                checkpoint=tune.Checkpoint.from_directory(local),
            )
            commit_s += time.perf_counter() - start
        finally:
            shutil.rmtree(local, ignore_errors=True)
    tune.report({"score": float(checkpoints), "commit_s": commit_s})
