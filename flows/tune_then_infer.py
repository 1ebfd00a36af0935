"""Tune, then score: the digits experiment and batch inference with its best checkpoint, chained
in one pipeline flow.

``tune_digits`` runs as a subflow (the experiment is its own subflow below it, as ever), then
``batch_inference`` runs as a second subflow with the best kept checkpoint of the best trial,
passed by URI as the ``prefect-tune.experiment.completed`` event would pass it to the deployed
``digits-batch-inference`` flow. The other way to chain them is that deployment's trigger (see
``deployments/prefect.yaml``)::

    python flows/tune_then_infer.py --storage-path ~/prefect_tune_results --name digits-chain
"""

from __future__ import annotations

import argparse
from typing import Any

from batch_inference import batch_inference
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from tune_digits import METRIC, MODE, tune_digits

from prefect_tune import ResultGrid, TuneStorage


@task(cache_policy=NO_CACHE, persist_result=False)
def best_checkpoint_uri(experiment_path: str, storage_block: str | None) -> str:
    """The URI of the best kept checkpoint (by ``acc``) of the experiment's best trial."""
    storage = TuneStorage.load(storage_block) if storage_block is not None else None
    results = ResultGrid.from_path(experiment_path, storage=storage)
    best = results.get_best_result(metric=METRIC, mode=MODE)
    return best.get_best_checkpoint(metric=METRIC, mode=MODE).path


@flow(name="tune-then-infer", log_prints=True)
def tune_then_infer(
    storage_path: str | None = "~/prefect_tune_results",
    name: str = "digits",
    num_samples: int = 4,
    epochs: int = 10,
    max_concurrent_trials: int = 2,
    dask_address: str | None = None,
    storage_block: str | None = None,
    batch_size: int = 200,
) -> dict[str, Any]:
    """Tunes the digits classifier, then scores a batch with its best checkpoint.

    Args:
        storage_path, name, num_samples, epochs, max_concurrent_trials, dask_address,
            storage_block: as for ``tune_digits``.
        batch_size: Held-out digits to score, as for ``batch_inference``.

    Returns:
        ``tuning``: what ``tune_digits`` returned; ``inference``: what ``batch_inference``
        returned (the checkpoint, the predictions' URI, the accuracy).
    """
    tuning = tune_digits(
        storage_path=storage_path,
        name=name,
        num_samples=num_samples,
        epochs=epochs,
        max_concurrent_trials=max_concurrent_trials,
        dask_address=dask_address,
        storage_block=storage_block,
        max_crash_resumes=0,  # no crash trigger re-runs this pipeline: nothing to count
    )
    checkpoint_uri = best_checkpoint_uri(tuning["experiment_path"], storage_block)
    inference = batch_inference(
        checkpoint_uri=checkpoint_uri,
        experiment_uri=tuning["experiment_path"],
        storage_block=storage_block,
        batch_size=batch_size,
    )
    return {"tuning": tuning, "inference": inference}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage-path", default="~/prefect_tune_results")
    parser.add_argument("--name", default="digits", help="experiment name (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-concurrent-trials", type=int, default=2)
    parser.add_argument("--dask-address", default=None)
    parser.add_argument("--storage-block", default=None)
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()
    tune_then_infer(
        storage_path=args.storage_path,
        name=args.name,
        num_samples=args.num_samples,
        epochs=args.epochs,
        max_concurrent_trials=args.max_concurrent_trials,
        dask_address=args.dask_address,
        storage_block=args.storage_block,
        batch_size=args.batch_size,
    )


if __name__ == "__main__":
    main()
