"""The workloads, one module each, imported only when selected.

Each module has ``NAME``, ``TITLE`` and ``run(ctx, size, rec)``; trainables are module-level
functions so that Dask workers import them by name. ``RAY`` lists the workloads that
``bench.ray_side`` also runs through Ray Tune.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "W1": "bench.workloads.w1_trivial",
    "W2": "bench.workloads.w2_reports",
    "W3": "bench.workloads.w3_checkpoints",
    "W4": "bench.workloads.w4_restore",
    "W5": "bench.workloads.w5_kill_restore",
    "W6": "bench.workloads.w6_s3_checkpoints",
    "W7": "bench.workloads.w7_errored",
    "W8": "bench.workloads.w8_bookkeeping",
}

TITLES = {
    "W1": "trivial trials, one report each",
    "W2": "many reports, no checkpoints",
    "W3": "checkpoints on local disk",
    "W4": "restore of a finished experiment",
    "W5": "driver killed half-way, restored (correctness)",
    "W6": "checkpoints on S3 (moto)",
    "W7": "errored trials: resume/restart/max_failures (correctness)",
    "W8": "bookkeeping overhead: 1 s trials on 16 single-thread workers",
}

RAY = ("W1", "W2", "W3", "W8")


def load(name: str) -> ModuleType:
    return importlib.import_module(MODULES[name])
