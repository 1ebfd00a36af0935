"""An experiment driver in embedded mode (no ``PREFECT_API_URL``), run as its own process.

    python -m tests.embedded.driver --storage DIR --name exp --workers 16 --trials 32 [--hold DIR]
        [--sleep S] [--verbose N] [--fail I]

Top-level ``Tuner.fit()`` on a ``DaskTaskRunner`` local cluster of ``--workers`` single-thread
worker processes, so Prefect starts a temporary API server for this process. With ``--hold``,
each trial writes ``<hold>/<trial id>.started`` and then waits while ``<hold>/hold`` exists.
Each trial sleeps ``--sleep`` seconds; the trial of ``x == --fail`` raises. The driver prints the
final table of trials after ``fit()``.
"""

from __future__ import annotations

import argparse
import os
import time

import prefect_tune as tune


def trainable(config: dict) -> None:
    hold = config["hold"]
    if hold:
        open(os.path.join(hold, f"{tune.get_context().trial_id}.started"), "w").close()
        while os.path.exists(os.path.join(hold, "hold")):
            time.sleep(0.05)
    time.sleep(config["sleep"])
    if config["x"] == config["fail"]:
        raise ValueError(f"trial x={config['x']} fails on purpose")
    tune.report({"loss": config["x"]})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.embedded.driver")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--hold", default="")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument("--fail", type=int, default=-1)
    args = parser.parse_args()

    from prefect_dask import DaskTaskRunner

    results = tune.Tuner(
        trainable,
        param_space={
            "x": tune.grid_search(list(range(args.trials))),
            "hold": args.hold,
            "sleep": args.sleep,
            "fail": args.fail,
        },
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(name=args.name, storage_path=args.storage, verbose=args.verbose),
        task_runner=DaskTaskRunner(
            cluster_kwargs={"n_workers": args.workers, "threads_per_worker": 1}
        ),
    ).fit()
    table = results.get_dataframe()[["trial_id", "status", "config/x", "loss"]]
    print(table.to_string(index=False), flush=True)
    print(f"EMBEDDED-DONE trials={len(results)} errors={results.num_errors}", flush=True)


if __name__ == "__main__":
    main()
