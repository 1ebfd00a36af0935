"""W5: 8 trials x 20 iterations with checkpoints; the driver is killed half-way and the
experiment restored: correctness (every trial finishes, resumes from its latest checkpoint, no
iteration lost or repeated) and the restore's time.

Not yet: it needs ``Tuner.restore`` (being added). To slot it in, replace :func:`run` with:
start the driver as a subprocess (``python -m bench.workloads.w5_kill_restore --drive ...``),
kill it after half the iterations are committed, restore in this process, and record
``rec.add(NAME, "restore -> finished", seconds, unit="s", better="lower")`` plus a pass/fail
count; keep ``NAME`` and ``run``'s signature.
"""

from __future__ import annotations

from typing import Any

from bench._common import Recorder

NAME = "W5"
TITLE = "driver killed half-way, restored (correctness)"
NOT_YET = "not yet: needs Tuner.restore (restore features being added)"


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    print(f"  {NAME}: {NOT_YET}", flush=True)
    rec.note(NAME, NOT_YET)
