"""Runs the benchmark workloads through prefect-tune (and the floors, and Ray Tune) and prints a table.

Usage (from the repository root)::

    python -m bench.run                      # small sizes, 3 repetitions, floors on
    python -m bench.run --full --repeat 5    # DESIGN.md's sizes
    python -m bench.run --only W1,W3 --compare ray --json bench/out/run.json

See bench/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import Recorder, format_table, machine  # noqa: E402
from bench._context import PREFECT_DBS  # noqa: E402
from bench.sizes import sizes  # noqa: E402
from bench.workloads import MODULES, TITLES  # noqa: E402
from bench.workloads import RAY as RAY_WORKLOADS  # noqa: E402
from tests._env import REPO_ROOT, settle_environment  # noqa: E402

DEFAULT_RAY_PYTHON = "/tmp/venv-ray/bin/python"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="prefect-tune benchmarks (DESIGN.md W1-W8) with floors and Ray Tune.",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each workload (default 3)")
    parser.add_argument("--full", action="store_true", help="DESIGN.md's sizes (default: small)")
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="W.KEY=VALUE",
        help="override a size, e.g. --set W1.trials=16 --set W4.trials=[500] (JSON values)",
    )
    parser.add_argument(
        "--compare",
        choices=["ray"],
        action="append",
        default=[],
        help="also run W1-W3 and W8 through Ray Tune (in a subprocess)",
    )
    parser.add_argument(
        "--ray-python",
        default=None,
        help=f"Python with ray[tune] (default: this one if it imports ray, else {DEFAULT_RAY_PYTHON})",
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the floors: plain Dask client.map, plain Prefect tasks, raw fsspec put",
    )
    parser.add_argument("--workdir", help="where experiments are stored (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--in-process-cluster",
        action="store_true",
        help="create the LocalCluster in the driver process (its scheduler then shares the "
        "driver's CPU and shows in its memory); default: in a child process",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile the driver during each timed fit() and write DIR/<run>.prof (slows it)",
    )
    parser.add_argument(
        "--prefect-log-level",
        default="WARNING",
        help="PREFECT_LOGGING_LEVEL for driver and workers (default WARNING, as in the tests)",
    )
    parser.add_argument(
        "--prefect-db",
        choices=PREFECT_DBS,
        default="harness",
        help="the Prefect API: 'harness' (prefect_test_harness, the default), 'sqlite' "
        "(prefect server start on SQLite) or 'postgresql' (prefect server start on a throw-away "
        "PostgreSQL cluster)",
    )
    parser.add_argument(
        "--fast-dispatch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="set PREFECT_TUNE_FAST_TRIAL_DISPATCH for the run (default: leave it as it is)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    selected = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(MODULES)
    unknown = [w for w in selected if w not in MODULES]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    args.selected = selected
    return args


def ray_python(explicit: str | None) -> str | None:
    """A Python that imports ray.tune: the given one, this one, or /tmp/venv-ray's."""
    candidates = [explicit] if explicit else [sys.executable, DEFAULT_RAY_PYTHON]
    for python in candidates:
        if python and os.path.exists(python):
            probe = subprocess.run(
                [python, "-c", "import ray.tune"], capture_output=True, text=True, timeout=120
            )
            if probe.returncode == 0:
                return python
    return None


def run_ray(args: argparse.Namespace, table: dict[str, Any], workdir: str, rec: Recorder) -> None:
    workloads = [w for w in args.selected if w in RAY_WORKLOADS]
    if not workloads:
        return
    python = ray_python(args.ray_python)
    if python is None:
        text = (
            "Ray Tune not run: no Python with ray[tune] found (tried "
            f"{args.ray_python or f'{sys.executable}, {DEFAULT_RAY_PYTHON}'})"
        )
        print(text, flush=True)
        for w in workloads:
            rec.note(w, text)
        return
    out = os.path.join(workdir, "ray-side.json")
    log = os.path.join(workdir, "ray-side.log")
    command = [
        python,
        "-m",
        "bench.ray_side",
        "--only",
        ",".join(workloads),
        "--repeat",
        str(args.repeat),
        "--sizes",
        json.dumps({w: table[w] for w in workloads}),
        "--workdir",
        os.path.join(workdir, "ray"),
        "--json",
        out,
    ]
    print(f"== Ray Tune ({python}); its logs go to {log}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=None, stderr=handle)
    if done.returncode != 0 or not os.path.exists(out):
        with open(log) as handle:
            tail = handle.read()[-3000:]
        print(f"Ray side failed (exit {done.returncode}); last log lines:\n{tail}", flush=True)
        for w in workloads:
            rec.note(w, f"Ray Tune run failed (exit {done.returncode}), see the log")
        return
    with open(out) as handle:
        rec.merge(json.load(handle))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="prefect-tune-bench-")
    os.makedirs(workdir, exist_ok=True)
    settle_environment(
        os.path.join(workdir, "prefect-home"),
        prefect_logging_level=args.prefect_log_level,
        quiet_dask=True,
    )

    from bench._context import BenchContext
    from bench.workloads import load

    if args.fast_dispatch is not None:
        os.environ["PREFECT_TUNE_FAST_TRIAL_DISPATCH"] = "true" if args.fast_dispatch else "false"

    table = sizes(args.full)
    for item in args.set:
        key, _, value = item.partition("=")
        workload, _, param = key.partition(".")
        if workload.upper() not in table or not param or not value:
            raise SystemExit(f"--set {item!r}: expected W<n>.<param>=<JSON value>")
        table[workload.upper()][param] = json.loads(value)
    rec = Recorder()
    rec.details["machine"] = machine()
    rec.details["command"] = " ".join(["python -m bench.run", *(argv or sys.argv[1:])])
    rec.details["sizes"] = {w: table[w] for w in args.selected}
    rec.details["prefect_db"] = args.prefect_db
    rec.details["fast_trial_dispatch"] = os.environ.get("PREFECT_TUNE_FAST_TRIAL_DISPATCH", "")
    rec.details["load_average_at_start"] = list(os.getloadavg())
    print(
        f"prefect-tune benchmarks: {', '.join(args.selected)}; sizes "
        f"{'full' if args.full else 'small'}; {args.repeat} runs each; Prefect API "
        f"{args.prefect_db}; work dir {workdir}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    started = time.perf_counter()
    ctx = BenchContext(
        rec,
        workdir,
        repeat=args.repeat,
        floor=args.floor,
        profile_dir=args.profile,
        in_process_cluster=args.in_process_cluster,
        prefect_db=args.prefect_db,
    )
    try:
        for name in args.selected:
            print(f"== {name}: {TITLES[name]} {table[name]}", flush=True)
            module_start = time.perf_counter()
            load(name).run(ctx, table[name], rec)
            rec.details.setdefault("workload_seconds", {})[name] = round(
                time.perf_counter() - module_start, 1
            )
    finally:
        ctx.close()
    if "ray" in args.compare:
        run_ray(args, table, workdir, rec)
    rec.details["total_seconds"] = round(time.perf_counter() - started, 1)
    rec.details["load_average_at_end"] = list(os.getloadavg())

    print()
    print(format_table(rec, TITLES))
    for workload in ("W1", "W8"):
        if f"{workload} breakdown" in rec.details:
            from bench._trace import format_breakdown

            print()
            print(format_breakdown(rec.details[f"{workload} breakdown"], workload))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(rec.to_json(), handle, indent=2)
        print(f"\nJSON written to {args.json}")
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\ntotal {rec.details['total_seconds']} s; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
