"""W7: errored trials with ``resume_errored`` / ``restart_errored`` / ``max_failures``:
correctness (which trials run again, from where, how many failures are counted).

Not yet: it needs ``Tuner.restore(resume_errored=..., restart_errored=...)`` (being added). To
slot it in, replace :func:`run`: run a trainable that fails at a configured step, restore with
each policy, and record the outcome counts with ``rec.add(NAME, ..., better=None)``; keep
``NAME`` and ``run``'s signature.
"""

from __future__ import annotations

from typing import Any

from bench._common import Recorder

NAME = "W7"
TITLE = "errored trials: resume/restart/max_failures (correctness)"
NOT_YET = "not yet: needs Tuner.restore(resume_errored=..., restart_errored=...)"


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    print(f"  {NAME}: {NOT_YET}", flush=True)
    rec.note(NAME, NOT_YET)
