"""This example demonstrates the usage of Optuna with Ray Tune.

It also checks that it is usable with a separate scheduler.

Requires the Optuna library to be installed (`pip install optuna`).

Port of Ray Tune's ``python/ray/tune/examples/optuna_example.py`` (Apache-2.0, the Ray
authors) to prefect-tune: the imports are the change, and ``ray.init`` goes (the Tuner starts
a local Dask cluster, or takes ``task_runner=DaskTaskRunner(address=...)``), so
``--server-address`` is accepted and ignored. Run it with::

    pip install 'prefect-tune[optuna]'
    python examples/optuna_example.py --smoke-test
"""

import time

import prefect_tune as tune  # was: from ray import tune
from prefect_tune import session  # was: from ray.air import session
from prefect_tune.schedulers import AsyncHyperBandScheduler  # was: ray.tune.schedulers
from prefect_tune.search import ConcurrencyLimiter  # was: ray.tune.search
from prefect_tune.search.optuna import OptunaSearch  # was: ray.tune.search.optuna


def evaluation_fn(step, width, height):
    return (0.1 + width * step / 100) ** (-1) + height * 0.1


def easy_objective(config):
    # Hyperparameters
    width, height = config["width"], config["height"]

    for step in range(config["steps"]):
        # Iterative training function - can be any arbitrary training procedure
        intermediate_score = evaluation_fn(step, width, height)
        # Feed the score back back to Tune.
        session.report({"iterations": step, "mean_loss": intermediate_score})
        time.sleep(0.1)


def run_optuna_tune(smoke_test=False):
    algo = OptunaSearch()
    algo = ConcurrencyLimiter(algo, max_concurrent=4)
    scheduler = AsyncHyperBandScheduler()
    tuner = tune.Tuner(
        easy_objective,
        tune_config=tune.TuneConfig(
            metric="mean_loss",
            mode="min",
            search_alg=algo,
            scheduler=scheduler,
            num_samples=10 if smoke_test else 100,
        ),
        param_space={
            "steps": 100,
            "width": tune.uniform(0, 20),
            "height": tune.uniform(-100, 100),
            # This is an ignored parameter.
            "activation": tune.choice(["relu", "tanh"]),
        },
    )
    results = tuner.fit()

    print("Best hyperparameters found were: ", results.get_best_result().config)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke-test", action="store_true", help="Finish quickly for testing")
    parser.add_argument(
        "--server-address",
        type=str,
        default=None,
        required=False,
        help="The address of server to connect to if using Ray Client.",
    )
    args, _ = parser.parse_known_args()

    run_optuna_tune(smoke_test=args.smoke_test)
