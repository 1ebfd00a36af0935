"""Downstream of tuning: score a batch of digits with a checkpoint of a stored experiment.

It reads only what ``flows/tune_digits.py`` stored, so it can run anywhere that reaches the
storage, long after the tuning flow ended. It takes the checkpoint three ways:

- ``checkpoint_uri``: one checkpoint, as the ``prefect-tune.experiment.completed`` event names
  it (the deployment trigger in ``deployments/prefect.yaml`` passes it), opened with
  ``Checkpoint.from_uri``, which checks it against its experiment first;
- ``experiment_uri`` (the event's other field) or ``experiment_path``: the best kept checkpoint
  of the experiment's best trial, through ``ResultGrid.from_path``;
- with ``storage_block``, the credentials (and, for a relative path, the root) of a saved
  ``TuneStorage`` block.

It writes the predictions beside the experiment, ``<experiment>/predictions/<flow run id>.csv``
(one write: the file is whole or absent), and publishes a table artifact of the scores,
``digits-scores-<experiment slug>``, with no storage option or credential in it::

    python flows/batch_inference.py ~/prefect_tune_results/digits --batch-size 200
    python flows/batch_inference.py digits --storage-block tuning   # a saved TuneStorage block
    python flows/batch_inference.py --checkpoint-uri \\
        ~/prefect_tune_results/digits/trials/train_digits_fc1d5_00003/checkpoint_000009
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
from typing import Any, NamedTuple

import numpy as np
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from tune_digits import METRIC, MODE, load_checkpoint, load_splits

from prefect_tune import Checkpoint, ResultGrid, TuneStorage
from prefect_tune.exceptions import CheckpointError, ConfigError
from prefect_tune.storage import Storage, StorageSpec, layout, normalize_url, resolve_spec


class Located(NamedTuple):
    """The checkpoint to score with and the experiment it belongs to."""

    checkpoint: Checkpoint
    experiment: StorageSpec  # with the options that reach it: never log or return it whole
    trial_id: str | None  # known when the best trial was picked here


def _given(value: str | None) -> str | None:
    """None for a parameter left unset: a deployment trigger renders a missing payload field
    (or a None parameter) as text, "None" or ""."""
    return None if value is None or value.strip() in ("", "None", "null") else value


def artifact_key(experiment_name: str) -> str:
    """``digits-scores-<slug>``: Prefect artifact keys are lower-case letters, digits, dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", experiment_name.lower()).strip("-") or "experiment"
    return f"digits-scores-{slug}"


# Results are not persisted: a checkpoint and a spec carry the storage options (credentials).
@task(cache_policy=NO_CACHE, persist_result=False)
def locate_checkpoint(
    checkpoint_uri: str | None,
    experiment: str | None,
    metric: str,
    mode: str,
    storage_block: str | None,
) -> Located:
    """The checkpoint named by ``checkpoint_uri``, else the best of ``experiment``'s best trial.

    Raises:
        ConfigError: neither was given, or the checkpoint is not one of ``experiment``.
        CheckpointNotFoundError, CheckpointOutsideExperimentError, IncompleteCheckpointError:
            from ``Checkpoint.from_uri`` (nothing is read beyond small state files).
    """
    storage = TuneStorage.load(storage_block) if storage_block is not None else None
    if checkpoint_uri is not None:
        checkpoint = Checkpoint.from_uri(_local(checkpoint_uri, storage), storage=storage)
        experiment_url = checkpoint.path.rsplit("/", 3)[0]
        if experiment is not None:
            given = normalize_url(resolve_spec(_local(experiment, storage), storage=storage).url)
            if given != experiment_url:
                raise ConfigError(
                    f"batch_inference: checkpoint_uri {checkpoint.path} is not a checkpoint of "
                    f"experiment_uri {given}; give one of them, or both of one experiment."
                )
        spec = resolve_spec(experiment_url, storage=storage)
        print(f"Checkpoint {checkpoint.path} of experiment {experiment_url}")
        return Located(checkpoint, spec, None)
    if experiment is None:
        raise ConfigError(
            "batch_inference: give checkpoint_uri, or experiment_uri / experiment_path."
        )
    spec = resolve_spec(_local(experiment, storage), storage=storage)
    results = ResultGrid.from_path(spec.url, storage_options=spec.options)
    best = results.get_best_result(metric=metric, mode=mode)
    checkpoint = best.get_best_checkpoint(metric=metric, mode=mode)
    print(f"Best trial {best.trial_id} ({metric}={best.metrics[metric]:.4f}): {checkpoint.path}")
    return Located(checkpoint, spec, best.trial_id)


def _local(path: str, storage: TuneStorage | None) -> str:
    """``~`` expanded for a local path; a block's relative names are left to the block."""
    return path if storage is not None and not path.startswith("~") else os.path.expanduser(path)


class Scored(NamedTuple):
    labels: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray


@task(cache_policy=NO_CACHE, persist_result=False)
def score_batch(checkpoint: Checkpoint, images: np.ndarray, labels: np.ndarray) -> Scored:
    """The checkpoint's model's predictions on one batch of labelled digits.

    Raises:
        CheckpointError: the checkpoint does not hold a model ``tune_digits`` saved.
    """
    with checkpoint.as_directory() as directory:
        try:
            model, _ = load_checkpoint(directory)
            proba = model.predict_proba(images)
        except Exception as exc:  # a pickle of anything, or of nothing: say which checkpoint
            raise CheckpointError(
                f"Checkpoint {checkpoint.path} does not hold a digits model that can score "
                f"({type(exc).__name__}: {exc})."
            ) from exc
    predictions = model.classes_[proba.argmax(axis=1)]
    return Scored(labels, predictions, proba.max(axis=1))


def predictions_csv(scored: Scored) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "label", "prediction", "confidence"])
    for i, (label, predicted, confidence) in enumerate(
        zip(scored.labels, scored.predictions, scored.confidence, strict=True)
    ):
        writer.writerow([i, int(label), int(predicted), f"{confidence:.6f}"])
    return out.getvalue().encode()


def scores_table(scored: Scored) -> list[dict[str, Any]]:
    """One row per digit, then ``all``: how many, how many right, accuracy, mean confidence."""
    rows = []
    groups = [(str(d), scored.labels == d) for d in np.unique(scored.labels)]
    for name, mask in [*groups, ("all", np.ones(len(scored.labels), dtype=bool))]:
        right = int(np.sum(scored.predictions[mask] == scored.labels[mask]))
        count = int(np.sum(mask))
        rows.append(
            {
                "digit": name,
                "count": count,
                "correct": right,
                "accuracy": round(right / count, 4),
                "mean_confidence": round(float(np.mean(scored.confidence[mask])), 4),
            }
        )
    return rows


@flow(name="digits-batch-inference", log_prints=True)
def batch_inference(
    experiment_path: str | None = None,
    batch_size: int = 200,
    metric: str = METRIC,
    mode: str = MODE,
    storage_block: str | None = None,
    checkpoint_uri: str | None = None,
    experiment_uri: str | None = None,
) -> dict[str, Any]:
    """Scores ``batch_size`` held-out test digits with a checkpoint of a stored experiment.

    Args:
        experiment_path: The experiment directory, ``<storage_path>/<experiment name>``; with
            ``storage_block``, the experiment's name is enough.
        batch_size: How many held-out test digits to score (all of them at most).
        metric: The metric that picks the best trial and checkpoint (without a checkpoint_uri).
        mode: ``"max"`` or ``"min"``.
        storage_block: Name of a saved :class:`~prefect_tune.TuneStorage` block that holds
            the experiment (and the credentials to reach it).
        checkpoint_uri: One checkpoint, ``<experiment>/trials/<trial dir>/checkpoint_<n>``,
            as the ``prefect-tune.experiment.completed`` event names it: scored with as it is.
        experiment_uri: The experiment, as that event names it (``experiment_path`` by
            another name); with ``checkpoint_uri``, it must be that checkpoint's experiment.

    Returns:
        The checkpoint used, the predictions' URI, the batch size and the accuracy.

    Raises:
        ConfigError: no checkpoint or experiment given, one not of the other, a bad batch size.
        CheckpointNotFoundError, CheckpointOutsideExperimentError, IncompleteCheckpointError,
        CheckpointError: the checkpoint does not exist, is not an experiment's, or is damaged;
            nothing is written then.
    """
    from prefect.runtime import flow_run

    storage_block, checkpoint_uri = _given(storage_block), _given(checkpoint_uri)
    experiment_uri, experiment_path = _given(experiment_uri), _given(experiment_path)
    if experiment_uri and experiment_path and experiment_uri != experiment_path:
        raise ConfigError("batch_inference: give experiment_uri or experiment_path, not both.")
    experiment = experiment_uri or experiment_path
    metric, mode = _given(metric) or METRIC, _given(mode) or MODE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_inference: batch_size must be a positive int, got {batch_size!r}")
    if mode not in ("min", "max"):
        raise ConfigError(f"batch_inference: mode must be 'min' or 'max', got {mode!r}.")

    located = locate_checkpoint(checkpoint_uri, experiment, metric, mode, storage_block)
    data = load_splits()
    images, labels = data.x_test[:batch_size], data.y_test[:batch_size]
    scored = score_batch(located.checkpoint, images, labels)

    experiment_storage = Storage.open(located.experiment)
    rel = layout.predictions_file(str(flow_run.id))
    experiment_storage.write_bytes(rel, predictions_csv(scored))  # one write: whole or absent
    predictions_uri = experiment_storage.uri(rel)
    table = scores_table(scored)
    accuracy = table[-1]["accuracy"]
    name = located.experiment.url.rstrip("/").rpartition("/")[2]
    create_table_artifact(
        table=table,
        key=artifact_key(name),
        description=(
            f"Batch of {len(labels)} held-out digits scored with checkpoint "
            f"`{located.checkpoint.path}` of experiment `{name}`: accuracy {accuracy:.4f}. "
            f"Predictions: `{predictions_uri}`."
        ),
    )
    print(f"Accuracy on a batch of {len(labels)} held-out digits: {accuracy:.4f}")
    print(f"Predictions written to {predictions_uri}")
    return {
        "checkpoint": located.checkpoint.path,
        "trial_id": located.trial_id,
        "predictions": predictions_uri,
        "batch_size": len(labels),
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "experiment_path", nargs="?", default=None, help="<storage_path>/<experiment name>"
    )
    parser.add_argument("--checkpoint-uri", default=None, help="one checkpoint of an experiment")
    parser.add_argument("--batch-size", type=int, default=200, help="(default: %(default)s)")
    parser.add_argument(
        "--storage-block", default=None, help="name of a saved TuneStorage block holding it"
    )
    args = parser.parse_args()
    batch_inference(
        experiment_path=args.experiment_path,
        checkpoint_uri=args.checkpoint_uri,
        batch_size=args.batch_size,
        storage_block=args.storage_block,
    )


if __name__ == "__main__":
    main()
