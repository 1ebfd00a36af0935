"""The crash suite's trainable: deterministic, a checkpoint every iteration, and a side log.

A module of its own (importable as ``tests.crash.trainables``) so that Dask worker processes
import it. The side log is how the tests prove what ran: every iteration a trial executes
appends a line to ``<side_log>/<trial_id>.jsonl`` on the local disk (never the experiment's
storage), flushed and fsynced before the iteration goes on, so a SIGKILL an instant later
cannot lose it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import prefect_tune as tune
from prefect_tune import Checkpoint
from tests.crash import faults

STATE_FILE = "state.json"


class CorruptCheckpointError(RuntimeError):
    """The checkpoint a trial was given to resume from is not the one its trial committed."""


def side_log_path(side_log: str | os.PathLike[str], trial_id: str) -> Path:
    return Path(side_log) / f"{trial_id}.jsonl"


def write_side_log(
    side_log: str, trial_id: str, x: float, event: str, iteration: int, **extra: Any
) -> None:
    """Appends one event of trial ``trial_id`` (parameter ``x``) durably (flush + fsync)."""
    line = {
        "trial_id": trial_id,
        "x": x,
        "event": event,
        "iteration": iteration,
        "pid": os.getpid(),
        "attempt": tune.get_context().attempt,
        "time": time.time(),
        **extra,
    }
    with open(side_log_path(side_log, trial_id), "a") as handle:
        handle.write(json.dumps(line) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_side_log(side_log: str | os.PathLike[str], trial_id: str) -> list[dict[str, Any]]:
    """Every event a trial logged, in order (a last line torn by a kill is dropped)."""
    path = side_log_path(side_log, trial_id)
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def next_value(value: float, x: float, step: int) -> float:
    """The state the trial carries from one iteration to the next (through its checkpoints)."""
    return 0.9 * value + (x - 3.0) ** 2 / step


def expected_metrics(x: float, iterations: int) -> list[dict[str, float]]:
    """What an uninterrupted trial reports, iteration by iteration."""
    rows, value = [], 0.0
    for step in range(1, iterations + 1):
        value = next_value(value, x, step)
        rows.append({"loss": value, "score": x * step, "step": step})
    return rows


def payload(x: float, step: int, index: int, kib: int) -> bytes:
    """The deterministic content of payload file ``index`` of the checkpoint of ``step``."""
    block = hashlib.sha256(f"{x!r}:{step}:{index}".encode()).digest()
    return block * (kib * 1024 // len(block))


def _write_checkpoint(directory: str, config: dict[str, Any], step: int, value: float) -> None:
    with open(os.path.join(directory, STATE_FILE), "w") as handle:
        json.dump({"step": step, "value": value, "x": config["x"]}, handle)
    for index in range(int(config["payload_files"])):
        with open(os.path.join(directory, f"payload_{index}.bin"), "wb") as handle:
            handle.write(payload(config["x"], step, index, int(config["payload_kib"])))


def _read_checkpoint(directory: str, config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's state, after checking every file is whole and belongs to its step."""
    try:
        with open(os.path.join(directory, STATE_FILE)) as handle:
            state = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{STATE_FILE} unreadable in {directory}: {exc}") from exc
    if state.get("x") != config["x"]:
        raise CorruptCheckpointError(f"checkpoint of another trial: {state}")
    for index in range(int(config["payload_files"])):
        path = os.path.join(directory, f"payload_{index}.bin")
        want = payload(config["x"], state["step"], index, int(config["payload_kib"]))
        got = Path(path).read_bytes() if os.path.exists(path) else b""
        if got != want:
            raise CorruptCheckpointError(
                f"payload_{index}.bin of step {state['step']} has {len(got)} bytes, "
                f"expected {len(want)} of its own content"
            )
    return state


def crash_trainable(config: dict[str, Any]) -> None:
    """``config["iterations"]`` iterations of :func:`next_value`, a checkpoint after each.

    Config keys: ``x`` (the trial's parameter), ``iterations``, ``sleep_s`` (work per
    iteration), ``side_log`` (directory), ``payload_files`` x ``payload_kib`` (checkpoint size),
    and optionally ``fail_upload`` = ``{"x": [...], "iteration": k, "after_files": n}``: the
    first upload of the checkpoint of iteration ``k`` of those trials fails half-way, after
    ``n`` files (see :mod:`tests.crash.faults`).
    """
    context = tune.get_context()
    trial_id = context.get_trial_id()
    side_log = config["side_log"]
    start, value = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        try:
            with checkpoint.as_directory() as directory:
                state = _read_checkpoint(directory, config)
        except Exception as exc:
            write_side_log(side_log, trial_id, config["x"], "bad_restore", -1, error=repr(exc))
            raise
        start, value = int(state["step"]), float(state["value"])
        write_side_log(
            side_log, trial_id, config["x"], "restore", start, checkpoint=checkpoint.path
        )
    fault = config.get("fail_upload")
    for step in range(start + 1, int(config["iterations"]) + 1):
        time.sleep(float(config["sleep_s"]))
        value = next_value(value, config["x"], step)
        write_side_log(side_log, trial_id, config["x"], "run", step)
        if (
            fault
            and config["x"] in fault["x"]
            and step == fault["iteration"]
            and not any(e["event"] == "armed" for e in read_side_log(side_log, trial_id))
        ):
            trial_dir = context.get_trial_dir().rstrip("/").rsplit("/", 1)[-1]
            faults.arm(f"{trial_dir}/checkpoint_", after_files=int(fault["after_files"]))
            write_side_log(side_log, trial_id, config["x"], "armed", step)
        with tempfile.TemporaryDirectory(prefix="crash-ckpt-") as directory:
            _write_checkpoint(directory, config, step, value)
            tune.report(
                {"loss": value, "score": config["x"] * step, "step": step},
                checkpoint=Checkpoint.from_directory(directory),
            )
        write_side_log(side_log, trial_id, config["x"], "committed", step)
