"""W3: trials that checkpoint large files, ``num_to_keep=2``, on local disk: checkpoint MiB/s.

Each checkpoint is one file of random bytes written to a local temporary directory by the
trainable (not timed as checkpointing: both sides pay it) and then committed with
``report(..., checkpoint=Checkpoint.from_directory(d))``.

Two rates, each against the same measure of the floor (raw fsspec ``put`` of the same bytes plus
the same deletions, as Dask tasks on the same workers with the same concurrency):

- commit MiB/s: checkpoint bytes / total time inside ``report()`` calls with a checkpoint
  (floor: inside ``put`` + ``rm``), summed over trials;
- wall MiB/s: checkpoint bytes / ``fit()`` wall (floor: ``client.map`` wall).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import prefect_tune as tune
from bench import floor
from bench._common import Recorder
from bench._payload import write_checkpoint_dir
from bench.sizes import MIB

NAME = "W3"
TITLE = "checkpoints on local disk"


def trainable(config: dict[str, Any]) -> None:
    size = int(config["size"])
    commit_s = 0.0
    checkpoints = int(config["checkpoints"])
    for step in range(checkpoints):
        local = tempfile.mkdtemp(prefix="bench-ckpt-")
        try:
            write_checkpoint_dir(local, size)
            start = time.perf_counter()
            tune.report(
                {"score": float(step), "commit_s": commit_s},
                checkpoint=tune.Checkpoint.from_directory(local),
            )
            commit_s += time.perf_counter() - start
        finally:
            shutil.rmtree(local, ignore_errors=True)
    tune.report({"score": float(checkpoints), "commit_s": commit_s})


def run_checkpoints(
    ctx: Any,
    size: dict[str, Any],
    rec: Recorder,
    *,
    workload: str,
    new_root: Callable[[str], str],
    options: dict[str, Any],
    floor_name: str,
) -> None:
    """Runs the checkpoint workload against storage roots made by ``new_root(label)``."""
    trials, checkpoints = int(size["trials"]), int(size["checkpoints"])
    nbytes, keep = int(size["mib"]) * MIB, int(size["num_to_keep"])
    total_mib = trials * checkpoints * nbytes / MIB
    ctx.warm_up()
    for rep in range(ctx.repeat):
        root = new_root(f"{workload.lower()}-{rep}")
        tuner = tune.Tuner(
            trainable,
            param_space={"x": tune.uniform(0.0, 1.0), "size": nbytes, "checkpoints": checkpoints},
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=trials, seed=0),
            run_config=tune.RunConfig(
                name="exp",
                storage_path=root,
                storage_options=options or None,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
            ),
            task_runner=ctx.task_runner(),
        )
        timing = ctx.fit(tuner, f"{workload}-rep{rep}")
        commit = sum(r.metrics["commit_s"] for r in timing.results)
        for result in timing.results:
            kept = [m["training_iteration"] for _, m in result.best_checkpoints]
            assert kept == list(range(checkpoints - keep + 1, checkpoints + 1)), kept
        rec.add(
            workload,
            "commit MiB/s (time in report)",
            total_mib / commit,
            unit="MiB/s",
            better="higher",
        )
        rec.add(
            workload,
            "wall MiB/s (fit wall)",
            total_mib / timing.wall_s,
            unit="MiB/s",
            better="higher",
        )
        rec.add(workload, "wall time", timing.wall_s, unit="s", better="lower")
        print(
            f"  {workload} rep {rep + 1}: {total_mib:.0f} MiB in {timing.wall_s:.2f} s "
            f"({commit:.2f} s in report)",
            flush=True,
        )
        floor.remove_tree(root, options)
    rec.note(
        workload,
        f"{trials} trials x {checkpoints} checkpoints x {size['mib']} MiB = {total_mib:.0f} MiB "
        f"per run, num_to_keep={keep}; 'time in report' sums over trials running "
        f"{ctx.concurrency} at a time (the floor likewise).",
    )
    if not ctx.floor:
        return
    client = ctx.dask_client()
    for rep in range(ctx.repeat):
        root = new_root(f"{workload.lower()}-floor-{rep}")
        start = time.perf_counter()
        outs = client.gather(
            [
                client.submit(
                    floor.put_checkpoints, root, options, i, checkpoints, nbytes, keep, pure=False
                )
                for i in range(trials)
            ]
        )
        wall = time.perf_counter() - start
        spent = sum(o["put_s"] for o in outs)
        rec.add(
            workload,
            "commit MiB/s (time in report)",
            total_mib / spent,
            unit="MiB/s",
            better="higher",
            system=floor_name,
        )
        rec.add(
            workload,
            "wall MiB/s (fit wall)",
            total_mib / wall,
            unit="MiB/s",
            better="higher",
            system=floor_name,
        )
        rec.add(workload, "wall time", wall, unit="s", better="lower", system=floor_name)
        floor.remove_tree(root, options)


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    run_checkpoints(
        ctx,
        size,
        rec,
        workload=NAME,
        new_root=lambda label: ctx.new_dir(label),
        options={},
        floor_name="floor: fsspec put (local)",
    )
