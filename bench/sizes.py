"""Workload sizes: ``SMALL`` (default, minutes on 2 cores) and ``FULL`` (DESIGN.md's sizes).

Standard library only: ``bench.ray_side`` reads it in a virtualenv without Prefect.
"""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024

SMALL: dict[str, dict[str, Any]] = {
    "W1": {"trials": 64},
    "W2": {"trials": 4, "reports": 500},
    # W3 at DESIGN's size (local disk is quick; fewer checkpoints make the rate too noisy).
    "W3": {"trials": 4, "checkpoints": 10, "mib": 16, "num_to_keep": 2},
    "W4": {"trials": [500, 2000, 10000]},
    # W5 at DESIGN's size. sleep_s: work per iteration; long enough that the trials the killed
    # driver leaves running are still running when the restored driver takes over.
    "W5": {"trials": 8, "iterations": 20, "sleep_s": 0.1},
    "W6": {"trials": 4, "checkpoints": 4, "mib": 16, "num_to_keep": 2},
    "W7": {"trials": 8, "iterations": 8, "fail_at": 4, "failing": 3, "sleep_s": 0.02},
    # W8 scaled down (ideal 20 s), run once: its runs are long. memory_trials: the untimed
    # tracemalloc run (0.01 s sleeps).
    "W8": {
        "trials": 320,
        "sleep_s": 1.0,
        "workers": 16,
        "repeat": 1,
        "memory_trials": 2000,
        "memory_sleep_s": 0.01,
    },
}

FULL: dict[str, dict[str, Any]] = {
    "W1": {"trials": 256},
    "W2": {"trials": 4, "reports": 2000},
    "W3": {"trials": 4, "checkpoints": 10, "mib": 16, "num_to_keep": 2},
    "W4": {"trials": [500, 2000, 10000]},
    "W5": {"trials": 8, "iterations": 20, "sleep_s": 0.2},
    "W6": {"trials": 4, "checkpoints": 10, "mib": 16, "num_to_keep": 2},
    "W7": {"trials": 8, "iterations": 20, "fail_at": 10, "failing": 3, "sleep_s": 0.1},
    "W8": {
        "trials": 1000,
        "sleep_s": 1.0,
        "workers": 16,
        "repeat": 1,
        "memory_trials": 10000,
        "memory_sleep_s": 0.01,
    },
}


def sizes(full: bool) -> dict[str, dict[str, Any]]:
    """A copy of the size table to use."""
    table = FULL if full else SMALL
    return {name: dict(params) for name, params in table.items()}
