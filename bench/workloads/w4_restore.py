"""W4: restoring a finished experiment of 500 / 2 000 / 10 000 trials from local disk.

The stored experiment is written directly with ``ExperimentStore`` (fast, no Prefect or Dask):
its definition, every trial's ``trial.json`` (TERMINATED, with a last result, one checkpoint
record and one attempt) and a result segment, then the driver's ``experiment_state.json``
snapshot. Timed, each with a cold ``Storage._cache`` (the OS page cache is warm):

- ``ExperimentStore(...).load_summaries()``: what a restore reads before it can run anything;
- ``ResultGrid.from_path(path).get_best_result()``: analysing the experiment elsewhere;
- floor: ``json.loads`` of the same ``experiment_state.json`` bytes (no validation, no models).

Memory (tracemalloc, separate untimed calls): peak and retained bytes per trial of each.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from bench._common import Recorder

NAME = "W4"
TITLE = "restore of a finished experiment"


def trainable(config: dict[str, Any]) -> None:  # recorded in the definition, never run
    raise NotImplementedError


def _param_space() -> dict[str, Any]:
    import prefect_tune as tune

    return {
        "lr": tune.loguniform(1e-4, 1e-1),
        "layers": tune.choice([1, 2, 3, 4]),
        "optimizer": tune.choice(["adam", "sgd"]),
        "dropout": tune.uniform(0.0, 0.5),
    }


def _row(i: int, step: int, config: dict[str, Any], now: float) -> dict[str, Any]:
    """A result row as ``report()`` stores it: the trainable's metrics and the auto fields."""
    loss = 1.0 / (1 + step) + (i % 97) / 1000.0
    return {
        "loss": loss,
        "accuracy": 1.0 - loss / 2,
        "epoch": step,
        "training_iteration": step,
        "trial_id": f"bench_{i:05d}",
        "timestamp": int(now),
        "date": time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now)),
        "time_this_iter_s": 0.52,
        "time_total_s": 0.52 * step,
        "time_since_restore": 0.52 * step,
        "iterations_since_restore": step,
        "checkpoint_dir_name": f"checkpoint_{step - 1:06d}",
        "done": step == 5,
        "hostname": "bench-host",
        "pid": 12345,
        "config": config,
    }


def build(path: str, n: int) -> None:
    """Writes a finished experiment of ``n`` trials at ``path``."""
    import random

    from prefect_tune.engine import describe_param_space
    from prefect_tune.state import (
        AttemptRecord,
        CheckpointRecord,
        ExperimentDefinition,
        ExperimentState,
        ExperimentStore,
        FlowRunRecord,
        TrialState,
        TrialStatus,
    )
    from prefect_tune.storage import StorageSpec

    store = ExperimentStore(StorageSpec(path).open())
    store.write_definition(
        ExperimentDefinition(
            name=os.path.basename(path),
            experiment_id="bench",
            trainable=f"{__name__}.trainable",
            param_space=describe_param_space(_param_space()),
            num_samples=n,
            seed=0,
            total_trials=n,
            metric="loss",
            mode="min",
            tune_config={"metric": "loss", "mode": "min", "num_samples": n, "seed": 0},
            checkpoint_config={"num_to_keep": 2},
            failure_config={"max_failures": 0, "fail_fast": False},
        )
    )
    rng = random.Random(0)
    now = time.time()
    trials = []
    for i in range(n):
        config = {
            "lr": 10 ** rng.uniform(-4, -1),
            "layers": rng.choice([1, 2, 3, 4]),
            "optimizer": rng.choice(["adam", "sgd"]),
            "dropout": rng.uniform(0.0, 0.5),
        }
        rows = [_row(i, step, config, now) for step in range(1, 6)]
        dir_name = f"trainable_bench_{i:05d}"
        trial = TrialState(
            trial_id=f"bench_{i:05d}",
            index=i,
            dir_name=dir_name,
            config=config,
            status=TrialStatus.TERMINATED,
            last_result=rows[-1],
            checkpoints=[
                CheckpointRecord(
                    index=4,
                    dir_name="checkpoint_000004",
                    training_iteration=5,
                    metrics=rows[-1],
                    size_bytes=16 * 1024 * 1024,
                )
            ],
            next_checkpoint_index=5,
            attempts=[
                AttemptRecord(
                    attempt=1,
                    started_at=now - 3,
                    ended_at=now,
                    status=TrialStatus.TERMINATED,
                    flow_run_id="00000000-0000-0000-0000-000000000000",
                    task_run_id=f"00000000-0000-0000-0000-{i:012d}",
                    host="bench-host",
                )
            ],
        )
        store.write_trial(trial)
        store.write_results(dir_name, 1, 1, rows)
        trials.append(trial)
    store.write_state(
        ExperimentState(
            name=os.path.basename(path),
            next_trial_index=n,
            trials=trials,
            flow_runs=[FlowRunRecord(flow_run_id="00000000-0000-0000-0000-000000000000")],
            finished=True,
        )
    )


def _load_trials(path: str) -> Any:
    from prefect_tune.state import ExperimentStore
    from prefect_tune.storage import Storage, StorageSpec

    Storage._cache.clear()
    return ExperimentStore(StorageSpec(path).open()).load_summaries()


def _result_grid(path: str) -> Any:
    from prefect_tune import ResultGrid
    from prefect_tune.storage import Storage

    Storage._cache.clear()
    grid = ResultGrid.from_path(path)
    return grid, grid.get_best_result()


def _state_json(path: str) -> Any:
    from prefect_tune.storage import layout

    with open(os.path.join(path, layout.EXPERIMENT_STATE_FILE), "rb") as handle:
        return json.loads(handle.read())


def _timed(rec: Recorder, metric: str, load: Callable[[str], Any], path: str, **system: str) -> Any:
    """``load(path)``, its wall time recorded as ``metric``."""
    start = time.perf_counter()
    out = load(path)
    rec.add(NAME, metric, time.perf_counter() - start, unit="s", better="lower", **system)
    return out


def _record_memory(
    rec: Recorder, label: str, n: int, load: Callable[[str], Any], path: str
) -> None:
    """Peak and retained memory per trial of ``load(path)``, what it returns being held."""
    from bench._context import traced_memory

    with traced_memory() as mem:
        kept = load(path)
    for kind in ("peak", "retained"):
        rec.add(
            NAME,
            f"{label} {kind} memory / trial (N={n})",
            mem[kind] / n / 1024,
            unit="KiB",
            better="lower",
        )
    del kept


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    from prefect_tune.storage import layout

    for n in size["trials"]:
        path = os.path.join(ctx.new_dir("w4"), f"exp-{n}")
        start = time.perf_counter()
        build(path, n)
        rec.add_setup(
            f"W4 build of {n} finished trials (written directly)", time.perf_counter() - start
        )
        state_bytes = os.path.getsize(os.path.join(path, layout.EXPERIMENT_STATE_FILE))
        rec.add(
            NAME,
            f"experiment_state.json size / trial (N={n})",
            state_bytes / n / 1024,
            unit="KiB",
            better=None,
        )
        for _ in range(ctx.repeat):
            _, trials = _timed(rec, f"restore: load_summaries (N={n})", _load_trials, path)
            assert len(trials) == n
            metric = f"ResultGrid.from_path + get_best_result (N={n})"
            grid, best = _timed(rec, metric, _result_grid, path)
            assert len(grid) == n and best.metrics["loss"] is not None
            if ctx.floor:
                metric, floor = f"restore: load_summaries (N={n})", "floor: json.loads snapshot"
                raw = _timed(rec, metric, _state_json, path, system=floor)
                assert len(raw["trials"]) == n
            del trials, grid, best
        _record_memory(rec, "load_summaries", n, _load_trials, path)
        _record_memory(rec, "ResultGrid", n, _result_grid, path)
        print(f"  W4 N={n}: done", flush=True)
    rec.note(
        NAME,
        "restore = ExperimentStore.load_summaries() (snapshot + trial dir listing), cold "
        "Storage._cache, warm OS page cache; Tuner.restore() itself is not measured yet "
        "(being added).",
    )
