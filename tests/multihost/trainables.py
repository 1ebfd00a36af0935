"""Trainables of the multi-host tests (a module of their own: the Dask workers import it)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from typing import Any

import prefect_tune as tune
from prefect_tune import Checkpoint


def stepped(config: dict[str, Any]) -> None:
    """Reports ``config["steps"]`` steps, a checkpoint each, resuming after its checkpoint's step.

    Unless the file ``config["gate"]`` exists, it holds after step ``config["hold_at"]``: it
    writes ``<marks>/held-<x>`` (holding the hostname) and waits for the gate, so that a test
    can kill its worker or its driver there. ``config["sleep"]`` seconds pass at each step.
    """
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            start = json.load(fh)["step"]
    gate = config.get("gate")
    for step in range(start + 1, int(config.get("steps", 4)) + 1):
        time.sleep(float(config.get("sleep", 0)))
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"step": step}, fh)
            tune.report(
                {"loss": float(config["x"]) / step, "step": step, "host": socket.gethostname()},
                checkpoint=Checkpoint.from_directory(d),
            )
        if gate and step == int(config.get("hold_at", 2)) and not os.path.exists(gate):
            marker = os.path.join(config["marks"], f"held-{config['x']}")
            with open(marker + ".tmp", "w") as fh:
                fh.write(socket.gethostname())
            os.replace(marker + ".tmp", marker)
            deadline = time.monotonic() + 240
            while not os.path.exists(gate):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gate {gate} never opened")
                time.sleep(0.05)


def where(config: dict[str, Any]) -> None:
    """Sleeps ``config["sleep"]`` seconds and reports its host and when it ran."""
    started = time.time()
    time.sleep(float(config.get("sleep", 0.3)))
    tune.report(
        {
            "loss": float(config["x"]),
            "host": socket.gethostname(),
            "started": started,
            "ended": time.time(),
        }
    )
