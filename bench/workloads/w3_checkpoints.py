"""W3: trials that checkpoint large files, ``num_to_keep=2``, on local disk: checkpoint MiB/s.

Each checkpoint is one file of random bytes written to a local temporary directory by the
trainable (not timed as checkpointing: both sides pay it) and then committed with
``report(..., checkpoint=Checkpoint.from_directory(d))``.

Two rates, each against the same measure of the floor (raw fsspec ``put`` of the same bytes plus
the same deletions, as Dask tasks on the same workers with the same concurrency):

- commit MiB/s: checkpoint bytes / total time inside ``report()`` calls with a checkpoint
  (floor: inside ``put`` + ``rm``), summed over trials;
- wall MiB/s: checkpoint bytes / ``fit()`` wall (floor: ``client.map`` wall).

A third system, "floor in a trial", makes the floor's raw ``put`` + ``rm`` calls from inside a
prefect-tune trial instead of ``report(checkpoint=...)``: the same environment (a Prefect task
run on the same workers, with the Prefect server and the driver sharing the machine's cores) and
none of the commit's own work. Its ratio to the floor is what that environment costs; the ratio
of prefect-tune to it is what the commit itself costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import prefect_tune as tune
from bench import floor
from bench._common import PREFECT_TUNE, Recorder
from bench._payload import report_checkpoints
from bench.sizes import MIB

NAME = "W3"
IN_TRIAL = "floor in a trial (raw put from the trainable)"
TITLE = "checkpoints on local disk"


def trainable(config: dict[str, Any]) -> None:
    report_checkpoints(tune, config, prefix="bench-ckpt-")


def raw_put_trainable(config: dict[str, Any], options: dict[str, Any]) -> None:
    """W3's trainable with the floor's raw fsspec calls in place of ``report(checkpoint=...)``."""
    out = floor.put_checkpoints(
        tune.get_context().get_trial_dir(),
        options,
        0,
        int(config["checkpoints"]),
        int(config["size"]),
        int(config["num_to_keep"]),
    )
    tune.report({"score": float(config["checkpoints"]), "commit_s": out["put_s"]})


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

    def record(system: str, commit_s: float, wall_s: float | None) -> None:
        rec.add(
            workload,
            "commit MiB/s (time in report)",
            total_mib / commit_s,
            unit="MiB/s",
            better="higher",
            system=system,
        )
        if wall_s is not None:
            rec.add(
                workload,
                "wall MiB/s (fit wall)",
                total_mib / wall_s,
                unit="MiB/s",
                better="higher",
                system=system,
            )
            rec.add(workload, "wall time", wall_s, unit="s", better="lower", system=system)

    def record_cpu(system: str, timing: Any) -> None:
        for role, seconds in timing.cpu_during_s.items():
            rec.add(
                workload,
                f"CPU during fit(): {role}",
                seconds,
                unit="s",
                better="lower",
                system=system,
            )

    def tune_run(rep: int) -> None:
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
        record(PREFECT_TUNE, commit, timing.wall_s)
        record_cpu(PREFECT_TUNE, timing)
        print(
            f"  {workload} rep {rep + 1}: {total_mib:.0f} MiB in {timing.wall_s:.2f} s "
            f"({commit:.2f} s in report)",
            flush=True,
        )
        floor.remove_tree(root, options)

    def in_trial_run(rep: int) -> None:
        root = new_root(f"{workload.lower()}-raw-{rep}")
        tuner = tune.Tuner(
            tune.with_parameters(raw_put_trainable, options=options),
            param_space={
                "x": tune.uniform(0.0, 1.0),
                "size": nbytes,
                "checkpoints": checkpoints,
                "num_to_keep": keep,
            },
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=trials, seed=0),
            run_config=tune.RunConfig(
                name="exp", storage_path=root, storage_options=options or None
            ),
            task_runner=ctx.task_runner(),
        )
        timing = ctx.fit(tuner, f"{workload}-raw-rep{rep}")
        record(IN_TRIAL, sum(r.metrics["commit_s"] for r in timing.results), None)
        record_cpu(IN_TRIAL, timing)
        floor.remove_tree(root, options)

    def floor_run(rep: int) -> None:
        client = ctx.dask_client()
        root = new_root(f"{workload.lower()}-floor-{rep}")
        ctx.settle_server()
        start = time.perf_counter()
        outs = client.gather(
            [
                client.submit(
                    floor.put_checkpoints, root, options, i, checkpoints, nbytes, keep, pure=False
                )
                for i in range(trials)
            ]
        )
        record(floor_name, sum(o["put_s"] for o in outs), time.perf_counter() - start)
        floor.remove_tree(root, options)

    ctx.warm_up()
    systems = [tune_run, in_trial_run, floor_run] if ctx.floor else [tune_run]
    for rep in range(ctx.repeat):
        # Interleaved, first system rotating: what the machine does between runs (writeback
        # of earlier workloads' files, a server catching up) falls on each system alike.
        for i in range(len(systems)):
            systems[(rep + i) % len(systems)](rep)
    rec.note(
        workload,
        f"{trials} trials x {checkpoints} checkpoints x {size['mib']} MiB = {total_mib:.0f} MiB "
        f"per run, num_to_keep={keep}; 'time in report' sums over trials running "
        f"{ctx.concurrency} at a time (the floor likewise). The systems' runs are interleaved, "
        "the first of each round rotating.",
    )
    if ctx.floor:
        rec.note(
            workload,
            f"'{IN_TRIAL}': the floor's put + rm made by the trainable of a prefect-tune trial, "
            "which reports no checkpoint; same trials, workers and Prefect server as "
            "prefect-tune's runs.",
        )


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
