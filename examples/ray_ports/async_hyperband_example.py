#!/usr/bin/env python
"""Ray Tune's ``python/ray/tune/examples/async_hyperband_example.py`` (Apache-2.0), ported to
prefect-tune by changing its imports only: ``from ray import tune`` and
``from ray.tune.schedulers import AsyncHyperBandScheduler`` become the two lines below, and
``ray.init()`` goes (the Dask cluster is ``Tuner``'s ``task_runner``, a local one by default).

``with_resources(..., {"cpu": 1, "gpu": 0})`` asks each trial for one Dask ``CPU`` resource: the
cluster's workers must have one, as Ray's nodes do (``dask worker ... --resources CPU=1``, or
``DASK_DISTRIBUTED__WORKER__RESOURCES='{"CPU": 1}'`` for the default local cluster).

    DASK_DISTRIBUTED__WORKER__RESOURCES='{"CPU": 1}' python examples/ray_ports/async_hyperband_example.py --smoke-test
"""

import argparse
import time

import prefect_tune as tune  # was: from ray import tune
from prefect_tune.schedulers import AsyncHyperBandScheduler  # was: from ray.tune.schedulers


def evaluation_fn(step, width, height):
    time.sleep(0.1)
    return (0.1 + width * step / 100) ** (-1) + height * 0.1


def easy_objective(config):
    # Hyperparameters
    width, height = config["width"], config["height"]

    for step in range(config["steps"]):
        # Iterative training function - can be an arbitrary training procedure
        intermediate_score = evaluation_fn(step, width, height)
        # Feed the score back back to Tune.
        tune.report({"iterations": step, "mean_loss": intermediate_score})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke-test", action="store_true", help="Finish quickly for testing")
    args, _ = parser.parse_known_args()

    # AsyncHyperBand enables aggressive early stopping of bad trials.
    scheduler = AsyncHyperBandScheduler(grace_period=5, max_t=100)

    # 'training_iteration' is incremented every time `trainable.step` is called
    stopping_criteria = {"training_iteration": 1 if args.smoke_test else 9999}

    tuner = tune.Tuner(
        tune.with_resources(easy_objective, {"cpu": 1, "gpu": 0}),
        run_config=tune.RunConfig(
            name="asynchyperband_test",
            stop=stopping_criteria,
            verbose=1,
        ),
        tune_config=tune.TuneConfig(
            metric="mean_loss", mode="min", scheduler=scheduler, num_samples=20
        ),
        param_space={  # Hyperparameter space
            "steps": 100,
            "width": tune.uniform(10, 100),
            "height": tune.uniform(0, 100),
        },
    )
    results = tuner.fit()
    print("Best hyperparameters found were: ", results.get_best_result().config)
