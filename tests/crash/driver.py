"""A crash-suite experiment driver, run as its own process so that tests can SIGKILL it.

    python -m tests.crash.driver --storage /tmp/store --name exp --side-log /tmp/side

runs ``Tuner(crash_trainable, ...).fit()`` for the experiment ``--name`` under ``--storage``
(``RunConfig(resume="auto")``: a second run of the same command resumes the first), with its own
local Dask cluster of two single-threaded worker processes, which inherit this process's
environment (``PREFECT_API_URL``, ``PYTHONPATH``) and die with its process group
(``DaskTaskRunner`` starts the cluster when the experiment's flow run begins). At the end
it prints one JSON line, the :func:`summary` of the experiment. The same arguments always
define the same experiment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

SUMMARY_PREFIX = "CRASH-SUMMARY "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.crash.driver")
    parser.add_argument("--storage", required=True, help="storage_path: a local path or s3://...")
    parser.add_argument("--storage-options", default="{}", help="fsspec options as JSON")
    parser.add_argument("--name", required=True, help="the experiment's name")
    parser.add_argument("--side-log", required=True, help="local directory of the side logs")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--sleep", type=float, default=0.1, help="seconds of work per iteration")
    parser.add_argument("--payload-files", type=int, default=2)
    parser.add_argument("--payload-kib", type=int, default=4)
    parser.add_argument("--max-failures", type=int, default=0)
    parser.add_argument(
        "--search",
        choices=["grid", "optuna"],
        default="grid",
        help="grid: one grid value of x per trial; optuna: x drawn by OptunaSearch(seed=0) "
        "from uniform(0, trials - 1), --trials of them",
    )
    parser.add_argument(
        "--fail-upload",
        default=None,
        help='JSON {"x": [...], "iteration": k, "after_files": n}: fail those uploads once',
    )
    parser.add_argument(
        "--scheduler",
        choices=["fifo", "asha", "median", "pbt"],
        default="fifo",
        help="asha: ASHAScheduler(max_t=iterations, grace_period=1, reduction_factor=3); "
        "median: MedianStoppingRule(time_attr='training_iteration', grace_period=3, "
        "min_samples_required=2); pbt: PopulationBasedTraining over the trainable "
        "tests.trainables.pbt_climb, one lr of pbt_lrs(trials) per trial (see pbt_scheduler)",
    )
    parser.add_argument(
        "--slow-exploit",
        type=float,
        default=0.0,
        help="seconds the driver waits after copying a donor's checkpoint for a PBT exploit "
        "(before it commits the copy), and again after that commit (before it tells the "
        "scheduler): widens both windows so a test can kill the driver in them",
    )
    parser.add_argument(
        "--stop-iter", type=int, default=0, help="RunConfig(stop=MaximumIterationStopper(n))"
    )
    parser.add_argument(
        "--delay-lease",
        type=float,
        default=0.0,
        help="seconds to wait after the driver announced itself, before it takes the lease "
        "(widens that window so a test can kill the driver in it)",
    )
    return parser.parse_args(argv)


def xs(trials: int) -> list[float]:
    """The trials' parameters: one grid value per trial."""
    return [float(i) for i in range(trials)]


def pbt_lrs(trials: int) -> list[float]:
    """The learning rates of a PBT experiment: one per trial, 10 ** -3 upward by half decades."""
    return [round(10 ** (-3 + k / 2), 6) for k in range(trials)]


def pbt_scheduler(args: argparse.Namespace) -> Any:
    from prefect_tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining(
        time_attr="training_iteration",  # metric and mode: TuneConfig's (score, max)
        perturbation_interval=2,
        hyperparam_mutations={"lr": pbt_lrs(args.trials)},
        quantile_fraction=0.25,
        seed=0,
    )


def param_space(args: argparse.Namespace) -> dict[str, Any]:
    import prefect_tune as tune

    if args.scheduler == "pbt":
        return {
            "lr": tune.grid_search(pbt_lrs(args.trials)),
            "steps": args.iterations,
            "sleep_s": args.sleep,
            "side_log": args.side_log,
        }

    x: Any = (
        tune.grid_search(xs(args.trials))
        if args.search == "grid"
        else tune.uniform(0.0, float(args.trials - 1))
    )
    space: dict[str, Any] = {
        "x": x,
        "iterations": args.iterations,
        "sleep_s": args.sleep,
        "side_log": args.side_log,
        "payload_files": args.payload_files,
        "payload_kib": args.payload_kib,
    }
    if args.fail_upload:
        space["fail_upload"] = json.loads(args.fail_upload)
    return space


def decision_cores(args: argparse.Namespace) -> tuple[Any, Any]:
    """The scheduler and the Stopper the arguments ask for (None: none)."""
    from prefect_tune.schedulers import ASHAScheduler, MedianStoppingRule
    from prefect_tune.stopper import MaximumIterationStopper

    scheduler: Any = None
    if args.scheduler == "asha":
        scheduler = ASHAScheduler(max_t=args.iterations, grace_period=1, reduction_factor=3)
    elif args.scheduler == "pbt":
        scheduler = pbt_scheduler(args)
    elif args.scheduler == "median":
        scheduler = MedianStoppingRule(
            time_attr="training_iteration", grace_period=3, min_samples_required=2
        )
    stopper = MaximumIterationStopper(args.stop_iter) if args.stop_iter else None
    return scheduler, stopper


def summary(results: Any, started: float) -> dict[str, Any]:
    """What the run ended with: each trial's status and last user metrics, and the flow runs."""
    from prefect_tune.storage import layout

    state = results._store.storage.read_json(layout.EXPERIMENT_STATE_FILE)
    return {
        "elapsed_s": time.monotonic() - started,
        "num_terminated": results.num_terminated,
        "num_errors": results.num_errors,
        "flow_runs": [run["flow_run_id"] for run in state["flow_runs"]],
        "trials": {
            r.trial_id: {
                "status": r.status.value,
                "x": r.config.get("x"),
                "metrics": {k: r.metrics.get(k) for k in ("loss", "score", "step", "lr")},
                "training_iteration": r.metrics.get("training_iteration"),
            }
            for r in results
        },
    }


def _phase(started: float, what: str) -> None:
    print(
        f"crash driver: {what} at {time.monotonic() - started:.2f} s", file=sys.stderr, flush=True
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    from prefect_dask import DaskTaskRunner

    from prefect_tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
    from prefect_tune.testing import local_cluster_kwargs
    from tests.crash.trainables import crash_trainable

    search_alg, num_samples = None, 1
    if args.search == "optuna":
        from prefect_tune.search.optuna import OptunaSearch

        search_alg, num_samples = OptunaSearch(seed=0), args.trials

    _phase(started, "imported")
    if args.delay_lease:
        from prefect_tune.state import LeaseHolder

        acquire = LeaseHolder.acquire

        def delayed_acquire(self: LeaseHolder) -> Any:
            time.sleep(args.delay_lease)
            return acquire(self)

        LeaseHolder.acquire = delayed_acquire  # type: ignore[method-assign]
    if args.slow_exploit:
        from prefect_tune.engine import _controller
        from prefect_tune.state import ExperimentStore

        copy, make = ExperimentStore.copy_checkpoint, _controller.make_exploit

        def slow_copy(self: ExperimentStore, *a: Any, **kw: Any) -> Any:
            copied = copy(self, *a, **kw)
            time.sleep(args.slow_exploit)
            return copied

        def slow_make(*a: Any, **kw: Any) -> Any:
            made = make(*a, **kw)
            time.sleep(args.slow_exploit)
            return made

        ExperimentStore.copy_checkpoint = slow_copy  # type: ignore[method-assign]
        _controller.make_exploit = slow_make  # type: ignore[assignment]
    scheduler, stopper = decision_cores(args)
    trainable: Any = crash_trainable
    metric, mode = "loss", "min"
    if args.scheduler == "pbt":
        from tests.trainables import pbt_climb

        trainable, metric, mode = pbt_climb, "score", "max"
    tuner = Tuner(
        trainable,
        param_space=param_space(args),
        tune_config=TuneConfig(
            metric=metric,
            mode=mode,
            seed=0,
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
        ),
        run_config=RunConfig(
            stop=stopper,
            name=args.name,
            storage_path=args.storage,
            storage_options=json.loads(args.storage_options) or None,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=args.max_failures),
        ),
        task_runner=DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(2, 1)),
    )
    results = tuner.fit()
    _phase(started, "fit returned")
    print(SUMMARY_PREFIX + json.dumps(summary(results, started)), flush=True)
    return 0 if results.num_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
