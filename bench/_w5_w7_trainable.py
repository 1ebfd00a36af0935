"""The trainable of W5 and W7, and the side log that tells which iterations ran where.

``chained`` runs ``config["iterations"]`` iterations, each with a checkpoint. Its metrics
depend on the whole chain of earlier iterations (a running value and a hash chain carried
through the checkpoints), so a trial that resumed from a wrong or stale checkpoint, or skipped
or repeated an iteration's state update, ends with other final metrics than an uninterrupted
trial.

Each call of the trainable (one task run of a trial) appends its events to its own file of the
side log, a local directory outside the experiment's storage (the Dask workers run on this
host): ``begin`` (the iteration it resumed after, the Prefect flow run that submitted it), ``start`` and ``commit`` of every iteration
(``commit`` once ``report(..., checkpoint=...)`` returned, i.e. the checkpoint is committed) and
``raise`` for an injected failure. :func:`read_side_log` and :class:`Invocation` turn that into
the counts W5 and W7 record.

Failures are injected with flag files: trial ``x`` raises at iteration ``config["fail_at"]``
while ``<config["flags"]>/x<x>.flag`` exists; a flag whose content is ``once`` is removed as it
fires, so the trial's next run succeeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.runtime import flow_run

import prefect_tune as tune

STATE_FILE = "state.json"
#: The final metrics that must equal an uninterrupted run's (the others are timings, ids...).
DETERMINISTIC_METRICS = ("training_iteration", "value", "chain")


class InjectedFailure(RuntimeError):
    """Raised by :func:`chained` where a flag file asks for a failure."""


def flag_path(flags: str, x: int) -> Path:
    return Path(flags) / f"x{x}.flag"


def set_flag(flags: str, x: int, *, once: bool) -> None:
    """Makes trial ``x`` fail at ``fail_at``: once, or until :func:`clear_flags`."""
    os.makedirs(flags, exist_ok=True)
    flag_path(flags, x).write_text("once" if once else "always")


def clear_flags(flags: str) -> None:
    for path in Path(flags).glob("x*.flag"):
        path.unlink(missing_ok=True)


def next_state(value: float, chain: str, x: int, iteration: int) -> tuple[float, str]:
    """One iteration's work on the state carried from checkpoint to checkpoint."""
    value = 0.9 * value + (x + 1) / iteration
    chain = hashlib.sha256(f"{chain}:{x}:{iteration}".encode()).hexdigest()[:16]
    return value, chain


def _log(side_log: str, x: int, token: str, event: str, iteration: int, **extra: Any) -> None:
    line = {"x": x, "token": token, "event": event, "it": iteration, "t": time.time(), **extra}
    with open(Path(side_log) / f"x{x}-{token}.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")


def _maybe_fail(config: Mapping[str, Any], x: int, iteration: int) -> bool:
    """Whether a flag asks trial ``x`` to fail at this iteration (consuming a ``once`` flag)."""
    flags = config.get("flags")
    if not flags or iteration != config.get("fail_at"):
        return False
    path = flag_path(flags, x)
    try:
        once = path.read_text() == "once"
    except FileNotFoundError:
        return False
    if once:
        path.unlink(missing_ok=True)
    return True


def chained(config: dict[str, Any]) -> None:
    """``iterations`` iterations of :func:`next_state`, a checkpoint after each.

    Config: ``x`` (int, the trial's parameter), ``iterations``, ``sleep_s`` (work per
    iteration), ``side_log`` (directory), optionally ``flags`` (directory) and ``fail_at``.
    """
    x, side_log = int(config["x"]), config["side_log"]
    token = uuid.uuid4().hex[:12]
    attempt = tune.get_context().attempt
    done, value, chain = 0, 0.0, ""
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = json.loads(Path(directory, STATE_FILE).read_text())
        done, value, chain = int(state["iteration"]), float(state["value"]), state["chain"]
    _log(side_log, x, token, "begin", done, attempt=attempt, flow_run=flow_run.id)
    for iteration in range(done + 1, int(config["iterations"]) + 1):
        _log(side_log, x, token, "start", iteration)
        time.sleep(float(config["sleep_s"]))
        if _maybe_fail(config, x, iteration):
            _log(side_log, x, token, "raise", iteration)
            raise InjectedFailure(f"trial x={x}: injected failure at iteration {iteration}")
        value, chain = next_state(value, chain, x, iteration)
        with tempfile.TemporaryDirectory(prefix="bench-chain-") as directory:
            Path(directory, STATE_FILE).write_text(
                json.dumps({"iteration": iteration, "value": value, "chain": chain})
            )
            tune.report(
                {"value": value, "chain": chain, "attempt": attempt},
                checkpoint=tune.Checkpoint.from_directory(directory),
            )
        _log(side_log, x, token, "commit", iteration)


# -- reading the side log (in the bench process) -------------------------------------------------


@dataclass
class Invocation:
    """One call of :func:`chained`: one task run of one trial."""

    x: int
    token: str
    attempt: int = 0
    flow_run: str | None = None  # the Prefect flow run (driver) that submitted it
    resumed_after: int = 0  # the iteration of the checkpoint it started from (0: from scratch)
    began_at: float = 0.0
    starts: dict[int, float] = field(default_factory=dict)  # iteration -> time
    commits: dict[int, float] = field(default_factory=dict)
    raised: list[int] = field(default_factory=list)

    @property
    def uncommitted(self) -> int:
        """Iterations it started but did not commit: lost when it was cut short."""
        return len(set(self.starts) - set(self.commits))


def read_side_log(side_log: str) -> dict[int, list[Invocation]]:
    """Every invocation of every trial (by ``x``), oldest first; torn last lines are skipped."""
    found: dict[str, Invocation] = {}
    for path in Path(side_log).glob("x*-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            inv = found.setdefault(event["token"], Invocation(event["x"], event["token"]))
            if event["event"] == "begin":
                inv.attempt, inv.flow_run = event["attempt"], event["flow_run"]
                inv.resumed_after, inv.began_at = event["it"], event["t"]
            elif event["event"] == "start":
                inv.starts[event["it"]] = event["t"]
            elif event["event"] == "commit":
                inv.commits[event["it"]] = event["t"]
            elif event["event"] == "raise":
                inv.raised.append(event["it"])
    out: dict[int, list[Invocation]] = {}
    for inv in sorted(found.values(), key=lambda i: i.began_at):
        out.setdefault(inv.x, []).append(inv)
    return out


def committed_count(side_log: str) -> int:
    """Checkpoints committed so far, over all trials (each line is one event)."""
    total = 0
    for path in Path(side_log).glob("x*-*.jsonl"):
        total += path.read_text().count('"event": "commit"')
    return total


def reexecuted(invocations: Iterable[Invocation]) -> int:
    """Iteration runs beyond the first of the same iteration of the same trial."""
    runs: dict[tuple[int, int], int] = {}
    for inv in invocations:
        for iteration in inv.starts:
            runs[(inv.x, iteration)] = runs.get((inv.x, iteration), 0) + 1
    return sum(n - 1 for n in runs.values())


def committed_then_rerun(invocations: Iterable[Invocation]) -> int:
    """Iteration runs that began after an earlier run of the same iteration had committed it:
    a resume should start after the latest committed checkpoint, so this stays 0 (except for
    trials restarted from scratch on purpose)."""
    committed: dict[tuple[int, int], float] = {}
    invs = list(invocations)
    for inv in invs:
        for iteration, at in inv.commits.items():
            key = (inv.x, iteration)
            committed[key] = min(at, committed.get(key, at))
    return sum(
        1
        for inv in invs
        for iteration, at in inv.starts.items()
        if committed.get((inv.x, iteration), at) < at
    )


def matches(metrics: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    """Whether two final results agree on every deterministic metric."""
    return all(metrics.get(k) == reference.get(k) for k in DETERMINISTIC_METRICS)


def history_is_whole(result: Any, iterations: int) -> bool:
    """Whether ``result.metrics_dataframe`` has exactly one row per iteration 1..N."""
    frame = result.metrics_dataframe
    if "training_iteration" not in frame:
        return False
    return sorted(frame["training_iteration"].tolist()) == list(range(1, iterations + 1))
