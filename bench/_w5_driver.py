"""W5's experiment driver, a process of its own so that the bench can SIGKILL it half-way.

    python -m bench._w5_driver --address tcp://127.0.0.1:PORT --storage DIR --name exp \\
        --side-log DIR --trials 8 --iterations 20 --sleep-s 0.05

runs :func:`bench.workloads.w5_kill_restore.make_tuner`'s experiment on the bench's Dask cluster
(``DaskTaskRunner(address=...)``, as ``BenchContext.task_runner`` does) and reports to the
Prefect API in ``PREFECT_API_URL``, which the bench sets in this process's environment (with
``PREFECT_HOME`` and ``PYTHONPATH`` inherited from ``tests._env.settle_environment``).
Prints ``W5-DRIVER fitting`` when ``fit()`` starts and ``W5-DRIVER done <json>`` if it ever
returns.
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench._w5_driver")
    parser.add_argument("--address", required=True, help="the Dask scheduler's address")
    parser.add_argument("--storage", required=True, help="storage_path (local directory)")
    parser.add_argument("--name", required=True, help="the experiment's name")
    parser.add_argument("--side-log", required=True, help="the trainable's side-log directory")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--sleep-s", type=float, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from prefect_dask import DaskTaskRunner

    from bench.workloads.w5_kill_restore import make_tuner

    tuner = make_tuner(
        storage=args.storage,
        name=args.name,
        side_log=args.side_log,
        trials=args.trials,
        iterations=args.iterations,
        sleep_s=args.sleep_s,
        task_runner=DaskTaskRunner(address=args.address),
    )
    print("W5-DRIVER fitting", flush=True)
    results = tuner.fit()
    done = {"num_terminated": results.num_terminated, "num_errors": results.num_errors}
    print(f"W5-DRIVER done {json.dumps(done)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
