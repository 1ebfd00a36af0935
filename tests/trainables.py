"""Trainables used by the tests. A module of its own so that Dask worker processes import it."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

import prefect_tune as tune
from prefect_tune import Checkpoint


def quadratic(config: dict[str, Any]) -> None:
    """Deterministic: loss = (x - 3)^2 / step, acc = 1 / (1 + loss); a checkpoint every step.

    The checkpoint stores the step so a resume continues after it; ``config["steps"]`` (default 5)
    sets the number of steps.
    """
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            start = json.load(fh)["step"]
    steps = int(config.get("steps", 5))
    for step in range(start + 1, steps + 1):
        loss = (config["x"] - 3.0) ** 2 / step
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"step": step, "x": config["x"]}, fh)
            with open(os.path.join(d, "weights.bin"), "wb") as fh:
                fh.write(bytes([step % 256]) * 1024)
            tune.report(
                {"loss": loss, "acc": 1.0 / (1.0 + loss), "step": step},
                checkpoint=Checkpoint.from_directory(d),
            )


def no_checkpoints(config: dict[str, Any]) -> None:
    """Reports ``config["n"]`` results without checkpoints."""
    for i in range(int(config.get("n", 3))):
        tune.report({"score": config.get("x", 0) * (i + 1)})


def raises_at(config: dict[str, Any]) -> None:
    """Checkpoints every step and raises at step ``config["fail_at"]`` (if set)."""
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            start = json.load(fh)["step"]
    for step in range(start + 1, int(config.get("steps", 5)) + 1):
        if config.get("fail_at") == step:
            raise ValueError(f"boom at step {step}")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"step": step}, fh)
            tune.report({"loss": float(step)}, checkpoint=Checkpoint.from_directory(d))


def reports_wrong_metric(config: dict[str, Any]) -> None:
    tune.report({"accuracy": 0.5})


def records_context(config: dict[str, Any]) -> None:
    ctx = tune.get_context()
    tune.report(
        {
            "loss": 0.0,
            "ctx_trial_id": ctx.get_trial_id(),
            "ctx_experiment": ctx.get_experiment_name(),
            "ctx_trial_dir": ctx.get_trial_dir(),
        }
    )


def flaky(config: dict[str, Any]) -> None:
    """Checkpoints every step; logs every step it runs; raises when told to.

    Config keys: ``steps`` (default 6); ``key`` (names this trial's files); ``log_dir`` (a line
    ``<key> <step>`` is appended to ``<log_dir>/<key>.log`` for every step run); ``fail_at``
    (after reporting this step, raise if the file ``<poison_dir>/<key>`` exists);
    ``fail_once`` (delete that file before raising, so the next attempt goes through);
    ``sleep`` (seconds per step).
    """
    import time

    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            start = json.load(fh)["step"]
    key = str(config["key"])
    for step in range(start + 1, int(config.get("steps", 6)) + 1):
        if config.get("log_dir"):
            with open(os.path.join(config["log_dir"], f"{key}.log"), "a") as fh:
                fh.write(f"{key} {step}\n")
        time.sleep(float(config.get("sleep", 0)))
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"step": step}, fh)
            tune.report({"loss": 1.0 / step, "step": step}, checkpoint=Checkpoint.from_directory(d))
        poison = os.path.join(str(config.get("poison_dir", "")), key)
        if config.get("fail_at") == step and config.get("poison_dir") and os.path.exists(poison):
            if config.get("fail_once"):
                os.unlink(poison)
            raise RuntimeError(f"trial {key} failed after step {step}")


def uses_bound_data(config: dict[str, Any], data: list[int]) -> None:
    tune.report({"loss": float(sum(data)) * config["scale"]})


def timed_sleep(config: dict[str, Any]) -> None:
    """Sleeps ``config["sleep_s"]`` and reports when it started and ended (wall clock)."""
    import time

    started = time.time()
    time.sleep(float(config["sleep_s"]))
    tune.report({"loss": float(config.get("x", 0)), "started": started, "ended": time.time()})


def gated(config: dict[str, Any]) -> None:
    """Reports ``config["steps"]`` (default 2) steps, a checkpoint each; after step
    ``config["hold_at"]`` (default 1) it creates ``<marks>/held-<x>`` and waits until the file
    ``config["gate"]`` exists, so that a test holds the trial there while it tries something."""
    import time

    held = False
    for step in range(1, int(config.get("steps", 2)) + 1):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"step": step, "x": config["x"]}, fh)
            tune.report(
                {"loss": float(config["x"]) / step, "step": step},
                checkpoint=Checkpoint.from_directory(d),
            )
        if step == int(config.get("hold_at", 1)) and not held:
            held = True
            with open(os.path.join(config["marks"], f"held-{config['x']}"), "w"):
                pass
            deadline = time.monotonic() + float(config.get("hold_timeout_s", 300))
            while not os.path.exists(config["gate"]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gate {config['gate']} never opened")
                time.sleep(0.02)


def exits_with(config: dict[str, Any]) -> None:
    """Reports once, then calls ``sys.exit(config["code"])``, as a script's trainable might."""
    import sys

    tune.report({"loss": 1.0})
    sys.exit(config["code"])


def interrupted(config: dict[str, Any]) -> None:
    """Reports once, then raises KeyboardInterrupt, as Ctrl-C in the trainable's thread would."""
    tune.report({"loss": 1.0})
    raise KeyboardInterrupt


def returns_without_reporting(config: dict[str, Any]) -> None:
    """Does its work and returns without calling ``report()`` (a ported Ray script that still
    calls Ray's report does that)."""


BOWL_STEPS = 27


def bowl(config):
    """loss = (x - 0.3)^2 + 1/step, for ``steps`` (default 27) steps: every step ranks trials
    alike, and the optimum is x = 0.3. Checkpoints every step; appends each step it runs to
    ``side_log`` (a file), if given."""
    import os
    import tempfile

    start = tune.get_checkpoint()
    step = 0
    if start is not None:
        with start.as_directory() as d, open(os.path.join(d, "step")) as f:
            step = int(f.read())
    while step < config.get("steps", BOWL_STEPS):
        step += 1
        if config.get("side_log"):
            with open(config["side_log"], "a") as log:
                log.write(f"{config['x']} {step}\n")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "step"), "w") as f:
                f.write(str(step))
            tune.report(
                {"loss": (config["x"] - 0.3) ** 2 + 1.0 / step, "step": step},
                checkpoint=tune.Checkpoint.from_directory(d),
            )


def dips(config: dict[str, Any]) -> None:
    """loss = x + |step - low| over ``steps`` steps (default 5), a checkpoint every step: its
    best loss (x, at step ``low``) is not its last one (x + steps - low)."""
    for step in range(1, int(config.get("steps", 5)) + 1):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"step": step}, fh)
            tune.report(
                {"loss": float(config["x"]) + abs(step - int(config["low"]))},
                checkpoint=Checkpoint.from_directory(d),
            )


class CountingTrainable(tune.Trainable):
    """A class trainable: ``value`` grows by ``x`` each step, for ``steps`` steps (``done``
    then). Logs ``setup``, ``step N``, ``load N`` and ``cleanup`` to ``config["log"]`` (a
    file), and raises once at step ``fail_at`` while the file ``config["flag"]`` exists."""

    def setup(self, config):
        self.value = 0.0
        self._log("setup")

    def _log(self, line):
        with open(self.config["log"], "a") as handle:
            handle.write(line + "\n")

    def step(self):
        import os

        step = self.iteration + 1
        flag = self.config.get("flag")
        if step == self.config.get("fail_at") and flag and os.path.exists(flag):
            os.remove(flag)
            raise RuntimeError(f"injected failure at step {step}")
        self.value += self.config["x"]
        self._log(f"step {step}")
        return {"value": self.value, "done": step >= self.config["steps"]}

    def save_checkpoint(self, checkpoint_dir):
        import os

        with open(os.path.join(checkpoint_dir, "weights.txt"), "w") as handle:
            handle.write(repr(self.value))
        return {"value": self.value}

    def load_checkpoint(self, checkpoint):
        self.value = checkpoint["value"]
        self._log(f"load {self.iteration}")

    def cleanup(self):
        self._log("cleanup")


def branin_value(x1: float, x2: float) -> float:
    """The Branin function: minimum 0.397887 at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475)."""
    import math

    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def branin(config: dict[str, Any]) -> None:
    """One report of Branin at ``(x1, x2)``. With ``side_log`` (a directory), writes
    ``<trial_id>.json`` with the process-wide start and end of the call (``time.time()``) and
    appends the trial id to ``runs.log`` each time it starts."""
    import time

    context = tune.get_context()
    log = config.get("side_log")
    started = time.time()
    if log:
        with open(os.path.join(log, "runs.log"), "a") as f:
            f.write(context.get_trial_id() + "\n")
    if config.get("hold_s"):
        time.sleep(config["hold_s"])
    tune.report({"loss": branin_value(config["x1"], config["x2"])})
    if log:
        with open(os.path.join(log, f"{context.get_trial_id()}.json"), "w") as f:
            json.dump({"start": started, "end": time.time(), "config": config}, f)


def talks(config: dict[str, Any]) -> None:
    """Prints and logs lines that name its trial and process, around a short wait (so trials
    on one worker overlap), then reports once."""
    context = tune.get_context()
    where = f"trial {context.trial_id} in process {os.getpid()}"
    logger = logging.getLogger("tests.trainables.talks")
    logger.setLevel(logging.INFO)  # Python's default for a logger is WARNING
    print(f"first print from {where}")
    logger.info("info from %s", where)
    time.sleep(float(config.get("wait_s", 0.5)))
    logger.warning("warning from %s", where)
    print(f"second print from {where}")
    tune.report({"loss": float(config.get("x", 0))})


def print_is_builtin() -> bool:
    """Whether ``print`` in this process is Python's own (run on workers with ``Client.run``)."""
    import builtins

    return getattr(builtins.print, "__module__", None) == "builtins"


def pbt_gain(lr: float) -> float:
    """What one step of :func:`pbt_climb` adds to its score: 1 at lr = 0.1, less away from it."""
    import math

    return max(0.0, 1.0 - abs(math.log10(lr) - math.log10(0.1)) / 3.0)


def _pbt_log(config: dict[str, Any], line: dict[str, Any]) -> None:
    side_log = config.get("side_log")
    if side_log:
        os.makedirs(side_log, exist_ok=True)
        path = os.path.join(side_log, f"{line['trial_id']}.jsonl")
        with open(path, "a") as handle:  # one write per line: a kill cannot tear it
            handle.write(json.dumps({**line, "pid": os.getpid(), "time": time.time()}) + "\n")


def pbt_climb(config: dict[str, Any]) -> None:
    """A population based training objective: ``score`` grows by :func:`pbt_gain` of ``lr``
    each step, carried from checkpoint to checkpoint with the trial that wrote it (``owner``)
    and the ``lr`` of every step so far (``lrs``).

    Config: ``lr``, ``steps`` (default 12), ``sleep_s`` (default 0), ``checkpoint`` (default
    True; False reports none), ``side_log`` (a local directory: each task run logs ``begin``
    or ``restore`` with the checkpoint's owner and step, then ``run`` for each step).
    """
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    lr = float(config["lr"])
    start, score, owner, lrs = 0, 0.0, trial_id, []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            state = json.load(fh)
        start, score, owner, lrs = state["step"], state["score"], state["owner"], state["lrs"]
    base = {"trial_id": trial_id, "attempt": ctx.attempt, "lr": lr}
    if checkpoint is None:
        _pbt_log(config, {**base, "event": "begin", "step": 0})
    else:
        _pbt_log(config, {**base, "event": "restore", "step": start, "owner": owner})
    for step in range(start + 1, int(config.get("steps", 12)) + 1):
        _pbt_log(config, {**base, "event": "run", "step": step})
        time.sleep(float(config.get("sleep_s", 0.0)))
        score += pbt_gain(lr)
        lrs = [*lrs, lr]
        metrics = {"score": score, "lr": lr, "step": step, "owner": owner}
        if not config.get("checkpoint", True):
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"step": step, "score": score, "owner": trial_id, "lrs": lrs}, fh)
            tune.report(metrics, checkpoint=Checkpoint.from_directory(d))
        owner = trial_id
