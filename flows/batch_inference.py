"""Downstream of tuning: score a batch of digits with the best checkpoint of a stored experiment.

It reads only what ``flows/tune_digits.py`` stored, through ``ResultGrid.from_path``, so it can
run anywhere that reaches the storage, long after the tuning flow ended::

    python flows/batch_inference.py ~/prefect_tune_results/digits --batch-size 200
    python flows/batch_inference.py digits --storage-block tuning   # a saved TuneStorage block
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from tune_digits import METRIC, MODE, load_checkpoint, load_splits

from prefect_tune import Checkpoint, ResultGrid, TuneStorage


@task(cache_policy=NO_CACHE)
def best_checkpoint(
    experiment_path: str, metric: str, mode: str, storage_block: str | None = None
) -> Checkpoint:
    """The best kept checkpoint by ``metric`` of the experiment's best trial by ``metric``."""
    if storage_block is not None:
        results = ResultGrid.from_path(experiment_path, storage=TuneStorage.load(storage_block))
    else:
        results = ResultGrid.from_path(os.path.expanduser(experiment_path))
    best = results.get_best_result(metric=metric, mode=mode)
    checkpoint = best.get_best_checkpoint(metric=metric, mode=mode)
    print(f"Best trial {best.trial_id} ({metric}={best.metrics[metric]:.4f}): {checkpoint.path}")
    return checkpoint


@task(cache_policy=NO_CACHE)
def score_batch(checkpoint: Checkpoint, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the checkpoint's model on one batch of labelled digits."""
    with checkpoint.as_directory() as directory:
        model, _ = load_checkpoint(directory)
    predictions = model.predict(images)
    return float(np.mean(predictions == labels))


@flow(name="digits-batch-inference", log_prints=True)
def batch_inference(
    experiment_path: str,
    batch_size: int = 200,
    metric: str = METRIC,
    mode: str = MODE,
    storage_block: str | None = None,
) -> dict[str, Any]:
    """Scores ``batch_size`` held-out test digits with the experiment's best checkpoint.

    Args:
        experiment_path: The experiment directory, ``<storage_path>/<experiment name>``; with
            ``storage_block``, the experiment's name is enough.
        batch_size: How many held-out test digits to score (all of them at most).
        metric: The metric that picks the best trial and checkpoint.
        mode: ``"max"`` or ``"min"``.
        storage_block: Name of a saved :class:`~prefect_tune.TuneStorage` block that holds
            the experiment (and the credentials to reach it).

    Returns:
        The checkpoint used, the batch size and the accuracy on the batch.
    """
    checkpoint = best_checkpoint(experiment_path, metric, mode, storage_block)
    data = load_splits()
    images, labels = data.x_test[:batch_size], data.y_test[:batch_size]
    accuracy = score_batch(checkpoint, images, labels)
    print(f"Accuracy on a batch of {len(labels)} held-out digits: {accuracy:.4f}")
    return {"checkpoint": checkpoint.path, "batch_size": len(labels), "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment_path", help="<storage_path>/<experiment name>")
    parser.add_argument("--batch-size", type=int, default=200, help="(default: %(default)s)")
    parser.add_argument(
        "--storage-block", default=None, help="name of a saved TuneStorage block holding it"
    )
    args = parser.parse_args()
    batch_inference(
        experiment_path=args.experiment_path,
        batch_size=args.batch_size,
        storage_block=args.storage_block,
    )


if __name__ == "__main__":
    main()
