"""A checkpointing trainable whose side log tells which iterations ran where, and its readers.

:func:`chained` runs ``config["iterations"]`` iterations, each with a checkpoint. Its state, a
running value (:func:`next_value`) and a hash chain (:func:`next_chain`), is carried from
checkpoint to checkpoint, so a trial that resumed from a wrong or stale checkpoint, or skipped
or repeated an iteration's state update, ends with other final metrics than an uninterrupted
one. It reports ``loss`` (the value), ``score`` (``x * step``), ``step``, ``chain`` and
``attempt``; :func:`expected_metrics` gives the first three of an uninterrupted trial.

Every event of a trial is appended as one JSON line to ``<side_log>/<trial_id>.jsonl``, a local
directory outside the experiment's storage (the Dask workers run on this host); a line is one
``write()``, so a kill an instant later cannot lose it, and two task runs of one trial append
to the same file without tearing each other's lines. Each line has the trial's ``trial_id``
and ``x``, the ``token`` of the call (one task run), its ``attempt``, ``pid``, ``event``,
``iteration`` and ``time``. The events, in the order a call logs them:

- ``begin`` (a trial from scratch, ``iteration`` 0) or ``restore`` (``iteration``: the
  checkpoint's, ``checkpoint``: its path), both with the submitting Prefect ``flow_run``; or
  ``bad_restore`` (``error``) when the checkpoint given is not one the trial committed;
- for each iteration: ``run`` as it starts; ``raise`` for an injected failure; ``armed`` when
  an upload fault is set for its checkpoint; ``committed`` once ``report(..., checkpoint=...)``
  returned, i.e. the checkpoint is committed.

Faults, from the config:

- ``flags`` (a directory) and ``fail_at``: trial ``x`` raises :class:`InjectedFailure` at
  iteration ``fail_at`` while the flag file of :func:`set_flag` exists; a ``once`` flag is
  removed as it fires, so the trial's next run succeeds;
- ``fail_upload`` = ``{"x": [...], "iteration": k, "after_files": n}``: the first upload of the
  checkpoint of iteration ``k`` of those trials is made to fail after ``n`` files, by the
  ``arm_upload_fault`` the caller passes (a trainable of its own wraps :func:`chained`).

:func:`read_side_log` gives one trial's events; :func:`read_invocations` groups every trial's
events by call (:class:`Invocation`), and the functions after it count what a restore re-ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.runtime import flow_run

import prefect_tune as tune
from prefect_tune.exceptions import ConfigError

__all__ = [
    "DETERMINISTIC_METRICS",
    "CorruptCheckpointError",
    "InjectedFailure",
    "Invocation",
    "chained",
    "clear_flags",
    "committed_count",
    "committed_then_rerun",
    "expected_metrics",
    "history_is_whole",
    "matches",
    "next_chain",
    "next_value",
    "payload",
    "read_invocations",
    "read_side_log",
    "reexecuted",
    "set_flag",
]

STATE_FILE = "state.json"
#: The final metrics that must equal an uninterrupted run's (the others are timings, ids...).
DETERMINISTIC_METRICS = ("training_iteration", "loss", "chain")


class InjectedFailure(RuntimeError):
    """Raised by :func:`chained` where a flag file asks for a failure."""


class CorruptCheckpointError(RuntimeError):
    """The checkpoint a trial was given to resume from is not the one its trial committed."""


# -- the trainable's state ----------------------------------------------------------------------


def next_value(value: float, x: float, step: int) -> float:
    """The value a trial carries from one iteration to the next (through its checkpoints)."""
    return 0.9 * value + (x - 3.0) ** 2 / step


def next_chain(chain: str, x: float, step: int) -> str:
    """The hash chain a trial carries along: it tells every earlier iteration's ``x`` and step."""
    return hashlib.sha256(f"{chain}:{x}:{step}".encode()).hexdigest()[:16]


def expected_metrics(x: float, iterations: int) -> list[dict[str, float]]:
    """What an uninterrupted trial reports (``loss``, ``score``, ``step``), iteration by
    iteration."""
    rows, value = [], 0.0
    for step in range(1, iterations + 1):
        value = next_value(value, x, step)
        rows.append({"loss": value, "score": x * step, "step": step})
    return rows


def payload(x: float, step: int, index: int, kib: int) -> bytes:
    """The deterministic content of payload file ``index`` of the checkpoint of ``step``."""
    block = hashlib.sha256(f"{x!r}:{step}:{index}".encode()).digest()
    return block * (kib * 1024 // len(block))


def _payload_shape(config: Mapping[str, Any]) -> tuple[int, int]:
    return int(config.get("payload_files", 0)), int(config.get("payload_kib", 0))


def _write_checkpoint(
    directory: str, config: Mapping[str, Any], step: int, value: float, chain: str
) -> None:
    with open(os.path.join(directory, STATE_FILE), "w") as handle:
        json.dump({"step": step, "value": value, "chain": chain, "x": config["x"]}, handle)
    files, kib = _payload_shape(config)
    for index in range(files):
        with open(os.path.join(directory, f"payload_{index}.bin"), "wb") as handle:
            handle.write(payload(config["x"], step, index, kib))


def _read_checkpoint(directory: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's state, after checking every file is whole and belongs to its step."""
    try:
        with open(os.path.join(directory, STATE_FILE)) as handle:
            state = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{STATE_FILE} unreadable in {directory}: {exc}") from exc
    if state.get("x") != config["x"]:
        raise CorruptCheckpointError(f"checkpoint of another trial: {state}")
    files, kib = _payload_shape(config)
    for index in range(files):
        path = os.path.join(directory, f"payload_{index}.bin")
        want = payload(config["x"], state["step"], index, kib)
        got = Path(path).read_bytes() if os.path.exists(path) else b""
        if got != want:
            raise CorruptCheckpointError(
                f"payload_{index}.bin of step {state['step']} has {len(got)} bytes, "
                f"expected {len(want)} of its own content"
            )
    return state


# -- injected failures --------------------------------------------------------------------------


def _flag_path(flags: str, x: float) -> Path:
    return Path(flags) / f"x{x}.flag"


def set_flag(flags: str, x: float, *, once: bool) -> None:
    """Makes trial ``x`` fail at ``fail_at``: once, or until :func:`clear_flags`."""
    os.makedirs(flags, exist_ok=True)
    _flag_path(flags, x).write_text("once" if once else "always")


def clear_flags(flags: str) -> None:
    """Removes every flag: no trial fails any more."""
    for path in Path(flags).glob("x*.flag"):
        path.unlink(missing_ok=True)


def _flagged(config: Mapping[str, Any], step: int) -> bool:
    """Whether a flag asks the trial to fail at this iteration (consuming a ``once`` flag)."""
    flags = config.get("flags")
    if not flags or step != config.get("fail_at"):
        return False
    path = _flag_path(flags, config["x"])
    try:
        once = path.read_text() == "once"
    except FileNotFoundError:
        return False
    if once:
        path.unlink(missing_ok=True)
    return True


# -- the trainable ------------------------------------------------------------------------------


class _SideLog:
    """The side log of one call of the trainable."""

    def __init__(self, directory: str, trial_id: str, x: float, attempt: int) -> None:
        self.path = _side_log_path(directory, trial_id)
        self.fields = {"trial_id": trial_id, "x": x, "token": uuid.uuid4().hex[:12]}
        self.attempt = attempt

    def write(self, event: str, iteration: int, **extra: Any) -> None:
        line = {
            **self.fields,
            "event": event,
            "iteration": iteration,
            "pid": os.getpid(),
            "attempt": self.attempt,
            "time": time.time(),
            **extra,
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(line) + "\n")


def chained(
    config: dict[str, Any], *, arm_upload_fault: Callable[[str, int], None] | None = None
) -> None:
    """``config["iterations"]`` iterations of :func:`next_value` and :func:`next_chain`, a
    checkpoint after each, every step in the side log.

    Args:
        config: ``x`` (the trial's parameter), ``iterations``, ``sleep_s`` (work per
            iteration), ``side_log`` (directory); optionally ``payload_files`` x
            ``payload_kib`` (checkpoint files besides the state, checked on restore),
            ``flags`` and ``fail_at``, ``fail_upload`` (see the module docstring).
        arm_upload_fault: Called as ``arm_upload_fault(marker, after_files)`` to make the next
            upload into a destination containing ``marker`` fail after ``after_files`` files;
            needed by ``fail_upload``.

    Raises:
        CorruptCheckpointError: The checkpoint to resume from is not the trial's own.
        InjectedFailure: Where a flag asks for it.
        ConfigError: ``fail_upload`` without ``arm_upload_fault``.
    """
    context = tune.get_context()
    trial_id = context.get_trial_id()
    log = _SideLog(config["side_log"], trial_id, config["x"], context.attempt)
    start, value, chain = 0, 0.0, ""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        log.write("begin", 0, flow_run=flow_run.id)
    else:
        try:
            with checkpoint.as_directory() as directory:
                state = _read_checkpoint(directory, config)
        except Exception as exc:
            log.write("bad_restore", -1, error=repr(exc))
            raise
        start, value, chain = int(state["step"]), float(state["value"]), state["chain"]
        log.write("restore", start, checkpoint=checkpoint.path, flow_run=flow_run.id)
    fault = config.get("fail_upload")
    for step in range(start + 1, int(config["iterations"]) + 1):
        log.write("run", step)
        time.sleep(float(config["sleep_s"]))
        if _flagged(config, step):
            log.write("raise", step)
            raise InjectedFailure(f"trial x={config['x']}: injected failure at iteration {step}")
        value, chain = next_value(value, config["x"], step), next_chain(chain, config["x"], step)
        if (
            fault
            and config["x"] in fault["x"]
            and step == fault["iteration"]
            and not any(e["event"] == "armed" for e in read_side_log(log.path.parent, trial_id))
        ):
            if arm_upload_fault is None:
                raise ConfigError("config['fail_upload'] needs chained(..., arm_upload_fault=...)")
            trial_dir = context.get_trial_dir().rstrip("/").rsplit("/", 1)[-1]
            arm_upload_fault(f"{trial_dir}/checkpoint_", int(fault["after_files"]))
            log.write("armed", step)
        with tempfile.TemporaryDirectory(prefix="chained-ckpt-") as directory:
            _write_checkpoint(directory, config, step, value, chain)
            tune.report(
                {
                    "loss": value,
                    "score": config["x"] * step,
                    "step": step,
                    "chain": chain,
                    "attempt": context.attempt,
                },
                checkpoint=tune.Checkpoint.from_directory(directory),
            )
        log.write("committed", step)


# -- reading the side log -----------------------------------------------------------------------


def _side_log_path(side_log: str | os.PathLike[str], trial_id: str) -> Path:
    """The file of one trial's events."""
    return Path(side_log) / f"{trial_id}.jsonl"


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a last line torn by a kill
            continue
    return events


def read_side_log(side_log: str | os.PathLike[str], trial_id: str) -> list[dict[str, Any]]:
    """Every event a trial logged, in order (a last line torn by a kill is dropped)."""
    path = _side_log_path(side_log, trial_id)
    return _events(path) if path.exists() else []


@dataclass
class Invocation:
    """One call of :func:`chained`: one task run of one trial."""

    x: float
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


def read_invocations(side_log: str | os.PathLike[str]) -> dict[Any, list[Invocation]]:
    """Every call of every trial (by ``x``), oldest first."""
    found: dict[str, Invocation] = {}
    for path in Path(side_log).glob("*.jsonl"):
        for event in _events(path):
            inv = found.get(event["token"])
            if inv is None:
                inv = found[event["token"]] = Invocation(
                    event["x"], event["token"], event["attempt"], began_at=event["time"]
                )
            kind, iteration, at = event["event"], event["iteration"], event["time"]
            if kind in ("begin", "restore"):
                inv.flow_run, inv.resumed_after = event["flow_run"], iteration
            elif kind == "run":
                inv.starts[iteration] = at
            elif kind == "committed":
                inv.commits[iteration] = at
            elif kind == "raise":
                inv.raised.append(iteration)
    out: dict[Any, list[Invocation]] = {}
    for inv in sorted(found.values(), key=lambda i: i.began_at):
        out.setdefault(inv.x, []).append(inv)
    return out


def committed_count(side_log: str | os.PathLike[str]) -> int:
    """Checkpoints committed so far, over all trials (each line is one event)."""
    total = 0
    for path in Path(side_log).glob("*.jsonl"):
        total += path.read_text().count('"event": "committed"')
    return total


def reexecuted(invocations: Iterable[Invocation]) -> int:
    """Iteration runs beyond the first of the same iteration of the same trial."""
    runs: dict[tuple[Any, int], int] = {}
    for inv in invocations:
        for iteration in inv.starts:
            runs[(inv.x, iteration)] = runs.get((inv.x, iteration), 0) + 1
    return sum(n - 1 for n in runs.values())


def committed_then_rerun(invocations: Iterable[Invocation]) -> int:
    """Iteration runs that began after an earlier run of the same iteration had committed it:
    a resume should start after the latest committed checkpoint, so this stays 0 (except for
    trials restarted from scratch on purpose)."""
    committed: dict[tuple[Any, int], float] = {}
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
