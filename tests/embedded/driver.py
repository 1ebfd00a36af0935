"""An experiment driver in embedded mode (no ``PREFECT_API_URL``), run as its own process.

    python -m tests.embedded.driver --storage DIR --name exp --workers 16 --trials 32 [--hold DIR]

Top-level ``Tuner.fit()`` on a ``DaskTaskRunner`` local cluster of ``--workers`` single-thread
worker processes, so Prefect starts a temporary API server for this process. With ``--hold``,
each trial writes ``<hold>/<trial id>.started`` and then waits while ``<hold>/hold`` exists.
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
    tune.report({"loss": config["x"]})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.embedded.driver")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--hold", default="")
    args = parser.parse_args()

    from prefect_dask import DaskTaskRunner

    results = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search(list(range(args.trials))), "hold": args.hold},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(name=args.name, storage_path=args.storage),
        task_runner=DaskTaskRunner(
            cluster_kwargs={"n_workers": args.workers, "threads_per_worker": 1}
        ),
    ).fit()
    print(f"EMBEDDED-DONE trials={len(results)} errors={results.num_errors}", flush=True)


if __name__ == "__main__":
    main()
