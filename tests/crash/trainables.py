"""The crash suite's trainable: :func:`prefect_tune.testing.side_log.chained` with its upload
faults.

A module of its own (importable as ``tests.crash.trainables``) so that Dask worker processes
import it, and with it :mod:`tests.crash.faults`, which wraps the storage upload primitives of
the importing process. The side log is how the tests prove what ran: every iteration a trial
executes appends a line to ``<side_log>/<trial_id>.jsonl`` on the local disk (never the
experiment's storage) before the iteration goes on.
"""

from __future__ import annotations

from typing import Any

from prefect_tune.testing.side_log import chained
from tests.crash import faults


def crash_trainable(config: dict[str, Any]) -> None:
    """:func:`~prefect_tune.testing.side_log.chained`, whose ``fail_upload`` faults are
    :func:`tests.crash.faults.arm`'s.

    Config keys: ``x`` (the trial's parameter), ``iterations``, ``sleep_s`` (work per
    iteration), ``side_log`` (directory), ``payload_files`` x ``payload_kib`` (checkpoint size),
    and optionally ``fail_upload`` = ``{"x": [...], "iteration": k, "after_files": n}``: the
    first upload of the checkpoint of iteration ``k`` of those trials fails half-way, after
    ``n`` files (see :mod:`tests.crash.faults`).
    """
    chained(config, arm_upload_fault=faults.arm)
