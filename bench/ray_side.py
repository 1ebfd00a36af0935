"""W1-W3 and W8 through Ray Tune, for ``python -m bench.run --compare ray`` (run in a Python with
Ray).

Imports only the standard library, Ray and the standard-library parts of ``bench``, so it runs in
a virtualenv that has ``ray[tune]`` but not Prefect (e.g. ``/tmp/venv-ray``). The trainables do
the same work as prefect-tune's (``tune.report``, ``tune.Checkpoint``) and record the same
timings; the Ray runtime (``ray.init``) starts once, outside every timed ``fit()``.
W1 and W8 use Ray's best configuration for short trials, ``reuse_actors=True``. W1-W3 run on
``ray.init(num_cpus=2)`` (as the bench's 2 Dask worker threads), W8 on a runtime of its own with
``num_cpus=16`` (its 16 single-thread workers), started outside the timed ``fit()`` too.

Usage::

    python -m bench.ray_side --only W1,W2,W3 --repeat 3 --sizes '{"W1": {"trials": 64}}' \\
        --workdir /tmp/x --json /tmp/x/ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ray import tune  # noqa: E402

from bench._common import RAY, Recorder  # noqa: E402
from bench._payload import report_checkpoints  # noqa: E402
from bench.sizes import MIB  # noqa: E402

CONCURRENCY = 2  # ray.init(num_cpus=2), one CPU per trial: the same as 2 Dask worker threads


def w1_trainable(config: dict[str, Any]) -> None:
    t_start = time.time()
    score = config["x"] * 2.0
    tune.report({"score": score, "t_start": t_start, "t_report": time.time()})


def w2_trainable(config: dict[str, Any]) -> None:
    reports = int(config["reports"])
    start = time.perf_counter()
    for step in range(reports):
        tune.report({"score": config["x"] * step, "loop_s": time.perf_counter() - start})


def w3_trainable(config: dict[str, Any]) -> None:
    report_checkpoints(tune, config, prefix="bench-ray-ckpt-")


def _fit(
    trainable: Any, param_space: dict[str, Any], trials: int, name: str, storage: str, **kwargs: Any
) -> tuple[Any, float]:
    checkpoint_config = kwargs.pop("checkpoint_config", None)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=trials, **kwargs),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=0,
            **({"checkpoint_config": checkpoint_config} if checkpoint_config else {}),
        ),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    if results.num_errors:
        raise RuntimeError(f"Ray {name}: {results.num_errors} errored trials: {results.errors[0]}")
    return results, wall


def run_w1(size: dict[str, Any], repeat: int, storage: str, rec: Recorder) -> None:
    trials = int(size["trials"])
    for rep in range(repeat):
        _, wall = _fit(
            w1_trainable,
            {"x": tune.uniform(0.0, 1.0)},
            trials,
            f"w1-{rep}",
            storage,
            reuse_actors=True,
        )
        rec.add("W1", "wall time", wall, unit="s", better="lower", system=RAY)
        rec.add("W1", "throughput", trials / wall, unit="trials/s", better="higher", system=RAY)
        rec.add(
            "W1",
            "overhead per trial (wall/trials x concurrency)",
            wall / trials * CONCURRENCY * 1000,
            unit="ms",
            better="lower",
            system=RAY,
        )
        print(f"  [ray] W1 rep {rep + 1}: {trials} trials in {wall:.2f} s", flush=True)
    rec.note("W1", "Ray Tune with reuse_actors=True (its best configuration for short trials).")
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        rec.note("W1", "Ray Tune with OptunaSearch not run: optuna is not installed beside Ray.")
        return
    from bench._common import search_time

    system = f"{RAY}, OptunaSearch"
    for rep in range(repeat):
        with search_time(
            OptunaSearch, ("suggest", "on_trial_result", "on_trial_complete")
        ) as spent:
            _, wall = _fit(
                w1_trainable,
                {"x": tune.uniform(0.0, 1.0)},
                trials,
                f"w1-optuna-{rep}",
                storage,
                reuse_actors=True,
                search_alg=OptunaSearch(seed=0),
            )
        rec.add("W1", "wall time", wall, unit="s", better="lower", system=system)
        rec.add("W1", "throughput", trials / wall, unit="trials/s", better="higher", system=system)
        rec.add(
            "W1",
            "search cost per trial (driver)",
            spent["s"] / trials * 1000,
            unit="ms",
            better="lower",
            system=system,
        )
        print(f"  [ray] W1 rep {rep + 1}, OptunaSearch: {wall:.2f} s", flush=True)


def run_w2(size: dict[str, Any], repeat: int, storage: str, rec: Recorder) -> None:
    trials, reports = int(size["trials"]), int(size["reports"])
    for rep in range(repeat):
        results, wall = _fit(
            w2_trainable,
            {"x": tune.uniform(0.0, 1.0), "reports": reports},
            trials,
            f"w2-{rep}",
            storage,
        )
        loop = sum(r.metrics["loop_s"] for r in results)
        rec.add("W2", "wall time", wall, unit="s", better="lower", system=RAY)
        rec.add(
            "W2",
            "reports/s (fit wall)",
            trials * reports / wall,
            unit="reports/s",
            better="higher",
            system=RAY,
        )
        rec.add(
            "W2",
            "reports/s (in trainable, per trial)",
            trials * (reports - 1) / loop,
            unit="reports/s",
            better="higher",
            system=RAY,
        )
        print(f"  [ray] W2 rep {rep + 1}: {trials * reports} reports in {wall:.2f} s", flush=True)


def run_w3(size: dict[str, Any], repeat: int, storage: str, rec: Recorder) -> None:
    trials, checkpoints = int(size["trials"]), int(size["checkpoints"])
    nbytes, keep = int(size["mib"]) * MIB, int(size["num_to_keep"])
    total_mib = trials * checkpoints * nbytes / MIB
    for rep in range(repeat):
        results, wall = _fit(
            w3_trainable,
            {"x": tune.uniform(0.0, 1.0), "size": nbytes, "checkpoints": checkpoints},
            trials,
            f"w3-{rep}",
            storage,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
        )
        commit = sum(r.metrics["commit_s"] for r in results)
        rec.add(
            "W3",
            "commit MiB/s (time in report)",
            total_mib / commit,
            unit="MiB/s",
            better="higher",
            system=RAY,
        )
        rec.add(
            "W3",
            "wall MiB/s (fit wall)",
            total_mib / wall,
            unit="MiB/s",
            better="higher",
            system=RAY,
        )
        rec.add("W3", "wall time", wall, unit="s", better="lower", system=RAY)
        print(
            f"  [ray] W3 rep {rep + 1}: {total_mib:.0f} MiB in {wall:.2f} s "
            f"({commit:.2f} s in report)",
            flush=True,
        )
        shutil.rmtree(os.path.join(storage, f"w3-{rep}"), ignore_errors=True)


def w8_trainable(config: dict[str, Any]) -> None:
    t_start = time.time()
    time.sleep(config["sleep_s"])
    tune.report({"score": config["x"], "t_start": t_start, "t_end": time.time()})


def run_w8(size: dict[str, Any], repeat: int, storage: str, rec: Recorder) -> None:
    trials, sleep_s, workers = int(size["trials"]), float(size["sleep_s"]), int(size["workers"])
    ideal = trials * sleep_s / workers
    for rep in range(int(size.get("repeat", repeat))):
        called_at = time.time()
        results, _ = _fit(
            w8_trainable,
            {"x": tune.uniform(0.0, 1.0), "sleep_s": sleep_s},
            trials,
            f"w8-{rep}",
            storage,
            reuse_actors=True,
            max_concurrent_trials=workers,
        )
        returned_at = time.time()
        stamps = [(r.metrics["t_start"], r.metrics["t_end"]) for r in results]
        first = min(a for a, _ in stamps)
        last = max(b for _, b in stamps)
        span, wall = last - first, returned_at - called_at
        rows = (
            ("span / ideal", span / ideal, "x"),
            ("fit() / ideal", wall / ideal, "x"),
            ("span", span, "s"),
            ("fit() wall", wall, "s"),
            ("fit() start -> first trial start", first - called_at, "s"),
            ("last trial end -> fit() returned", returned_at - last, "s"),
            (
                "worker slot idle per trial ((slots x span - work) / trials)",
                (workers * span - trials * sleep_s) / trials * 1000,
                "ms",
            ),
        )
        for metric, value, unit in rows:
            rec.add("W8", metric, value, unit=unit, better="lower", system=RAY)
        print(
            f"  [ray] W8 rep {rep + 1}: span {span:.1f} s ({span / ideal:.3f}x), fit() {wall:.1f}"
            f" s ({wall / ideal:.3f}x), load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        shutil.rmtree(os.path.join(storage, f"w8-{rep}"), ignore_errors=True)
    rec.note(
        "W8",
        f"Ray Tune: reuse_actors=True, ray.init(num_cpus={workers}) before fit() (not timed), "
        "max_concurrent_trials as prefect-tune's.",
    )


RUNNERS = {"W1": run_w1, "W2": run_w2, "W3": run_w3, "W8": run_w8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_side")
    parser.add_argument("--only", default="W1,W2,W3")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", required=True, help="JSON: workload -> size parameters")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    sizes = json.loads(args.sizes)
    os.makedirs(args.workdir, exist_ok=True)

    import logging

    import ray

    rec = Recorder()
    rec.details["ray_version"] = ray.__version__
    selected = [w.strip() for w in args.only.split(",") if w.strip()]
    # W1-W3 share a 2-CPU runtime; W8 gets one of its own, with as many CPUs as its workers.
    groups = [
        (CONCURRENCY, [w for w in selected if w != "W8"]),
        (int(sizes.get("W8", {}).get("workers", 16)), [w for w in selected if w == "W8"]),
    ]
    for num_cpus, names in groups:
        if not names:
            continue
        start = time.perf_counter()
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        rec.add_setup(f"Ray runtime start (ray.init, {num_cpus} CPUs)", time.perf_counter() - start)
        try:
            # Warm-up, as on the prefect-tune side: worker start and imports stay out of the
            # numbers (W8: one trial per CPU, so that every actor has started).
            start = time.perf_counter()
            _fit(
                w1_trainable,
                {"x": tune.uniform(0.0, 1.0)},
                2 if num_cpus == CONCURRENCY else 2 * num_cpus,
                f"warm-up-{num_cpus}",
                args.workdir,
                reuse_actors=True,
            )
            rec.add_setup(f"Ray warm-up experiment ({num_cpus} CPUs)", time.perf_counter() - start)
            for name in names:
                RUNNERS[name](
                    sizes[name], args.repeat, os.path.join(args.workdir, name.lower()), rec
                )
        finally:
            ray.shutdown()
    with open(args.json, "w") as handle:
        json.dump(rec.to_json(), handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
