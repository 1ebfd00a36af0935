"""Tune a scikit-learn classifier on the digits data set, one checkpoint per epoch.

The trainable below is written as for Ray Tune; only the imports differ. Each trial trains an
``SGDClassifier`` one ``partial_fit`` epoch at a time, reports validation loss and accuracy, and
checkpoints the model every epoch, so a resumed trial continues from its latest epoch.

Run it (``make demo`` does this with a temporary local Prefect server)::

    python flows/tune_digits.py --storage-path ~/prefect_tune_results --name digits

Then score a batch of digits with the best checkpoint::

    python flows/batch_inference.py ~/prefect_tune_results/digits
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
from typing import Any, NamedTuple

import numpy as np
from prefect import flow
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

import prefect_tune as tune
from prefect_tune import (
    Checkpoint,
    CheckpointConfig,
    ResultGrid,
    RunConfig,
    TuneConfig,
    Tuner,
    TuneStorage,
)
from prefect_tune.exceptions import ConfigError
from prefect_tune.prefect.recovery import refuse_crash_loop, resolve_name

MODEL_FILE = "model.pkl"
PROGRESS_FILE = "progress.json"
METRIC, MODE = "acc", "max"


class Splits(NamedTuple):
    """The digits data, split once with a fixed seed so every trial and flow sees the same rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_splits() -> Splits:
    """Train (60%), validation (20%, ranks the trials) and held-out test (20%) rows."""
    images, labels = load_digits(return_X_y=True)
    images = images / 16.0  # pixel intensities are 0..16; SGD wants features on a unit scale
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.25, random_state=0, stratify=y_rest
    )
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test)


def save_checkpoint(directory: str, model: SGDClassifier, epochs_done: int) -> None:
    """Writes the model and the number of epochs it has been trained for into ``directory``."""
    with open(os.path.join(directory, MODEL_FILE), "wb") as f:
        pickle.dump(model, f)
    with open(os.path.join(directory, PROGRESS_FILE), "w") as f:
        json.dump({"epochs_done": epochs_done}, f)


def load_checkpoint(directory: str) -> tuple[SGDClassifier, int]:
    """The model and its epoch count from a directory written by :func:`save_checkpoint`.

    The model is a pickle: load checkpoints only from storage you trust.
    """
    with open(os.path.join(directory, MODEL_FILE), "rb") as f:
        model = pickle.load(f)
    with open(os.path.join(directory, PROGRESS_FILE)) as f:
        epochs_done = int(json.load(f)["epochs_done"])
    return model, epochs_done


def train_digits(config: dict[str, Any]) -> None:
    """The trainable: one ``partial_fit`` epoch per ``report()``, with a checkpoint each time."""
    data = load_splits()
    classes = np.unique(data.y_train)
    model = SGDClassifier(
        loss="log_loss",  # gives predict_proba, hence a validation log-loss for every trial
        penalty=config["penalty"],
        alpha=config["alpha"],
        learning_rate=config["learning_rate"],
        eta0=config["eta0"],
        random_state=0,
    )
    epochs_done = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a resumed trial: continue from its latest committed epoch
        with checkpoint.as_directory() as directory:
            model, epochs_done = load_checkpoint(directory)

    for epoch in range(epochs_done, config["epochs"]):
        model.partial_fit(data.x_train, data.y_train, classes=classes)
        proba = model.predict_proba(data.x_val)
        metrics = {
            "loss": float(log_loss(data.y_val, proba, labels=classes)),
            "acc": float(accuracy_score(data.y_val, classes[proba.argmax(axis=1)])),
        }
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(directory, model, epoch + 1)
            # Once report() returns the checkpoint is committed, so the directory can go.
            tune.report(metrics, checkpoint=Checkpoint.from_directory(directory))


def trials_table(results: ResultGrid) -> str:
    """One row per trial: its sampled config and last reported metrics, best first."""
    df = results.get_dataframe()
    config_columns = [c for c in df.columns if c.startswith("config/") and c != "config/epochs"]
    wanted = ["trial_id", "status", *config_columns, "training_iteration", "loss", "acc"]
    table = df[[c for c in wanted if c in df.columns]]
    if METRIC in table.columns:
        table = table.sort_values(METRIC, ascending=(MODE == "min"))
    table = table.rename(columns={c: c.removeprefix("config/") for c in config_columns})
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def experiment_name() -> str:
    """The experiment's name for this flow run: ``name`` with ``{date}`` resolved.

    The date is the UTC date of the run's scheduled start, so a nightly run is named after its
    night even when it starts late, and a re-run of a crashed run keeps its name.
    """
    from prefect.runtime import flow_run

    return resolve_name(flow_run.parameters.get("name", "digits"), flow_run.scheduled_start_time)


def flow_run_name() -> str:
    return f"tune-{experiment_name()}"


@flow(name="tune-digits", flow_run_name=flow_run_name, log_prints=True)
def tune_digits(
    storage_path: str | None = "~/prefect_tune_results",
    name: str = "digits",
    num_samples: int = 4,
    epochs: int = 10,
    max_concurrent_trials: int = 2,
    dask_address: str | None = None,
    storage_block: str | None = None,
    max_crash_resumes: int = 3,
) -> dict[str, Any]:
    """Tunes the digits classifier, then scores the best checkpoint on the held-out test split.

    Args:
        storage_path: Where experiments are stored: a local or NFS path, or an fsspec URL.
            Ignored (may be None) when ``storage_block`` is given.
        name: The experiment's name, its directory under ``storage_path``. ``{date}`` in it is
            replaced by the UTC date of the run's scheduled start (``digits-{date}``: a new
            experiment every night; a re-run the same day resumes that day's experiment).
        num_samples: Samples of the search space; each is run for both grid values of
            ``penalty``, so this makes ``2 * num_samples`` trials.
        epochs: Epochs (reports, checkpoints) per trial.
        max_concurrent_trials: Trials running at once.
        dask_address: A running Dask scheduler (``tcp://host:8786``); a local cluster when None.
        storage_block: Name of a saved :class:`~prefect_tune.TuneStorage` block holding the
            experiments (with its credentials), instead of ``storage_path``.
        max_crash_resumes: In a deployment, refuse to run (``CrashLoopError``) after this many
            crashed runs in a row of this experiment; 0 never refuses.

    Returns:
        The experiment path, the best trial's config and metrics, its checkpoint and test accuracy.
    """
    # A deployment trigger renders every parameter as text: an unset one comes back as "None".
    storage_block = None if storage_block in (None, "", "None") else storage_block
    dask_address = None if dask_address in (None, "", "None") else dask_address
    name = experiment_name()
    refuse_crash_loop(name, max_crash_resumes)
    storage: TuneStorage | None = None
    if storage_block is not None:
        storage = TuneStorage.load(storage_block)
        storage_path = None
    elif storage_path is None:
        raise ConfigError("tune_digits: give storage_path or storage_block.")
    else:
        storage_path = os.path.expanduser(storage_path)
    task_runner = None
    if dask_address is not None:
        from prefect_dask import DaskTaskRunner

        task_runner = DaskTaskRunner(address=dask_address)

    tuner = Tuner(
        train_digits,
        param_space={
            "alpha": tune.loguniform(1e-5, 1e-2),
            "eta0": tune.loguniform(1e-3, 1e-1),
            "learning_rate": tune.choice(["constant", "invscaling"]),
            "penalty": tune.grid_search(["l2", "elasticnet"]),
            "epochs": epochs,
        },
        tune_config=TuneConfig(
            metric=METRIC,
            mode=MODE,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent_trials,
            seed=0,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute=METRIC,
                checkpoint_score_order=MODE,
            ),
        ),
        task_runner=task_runner,
    )
    results = tuner.fit()

    print(
        f"Experiment {name!r} at {results.experiment_path}: {len(results)} trials, "
        f"{results.num_terminated} terminated, {results.num_errors} errored.\n"
        f"{trials_table(results)}"
    )
    for result in results:
        if result.error is not None:
            print(f"Trial {result.trial_id} errored: {result.error}")

    best = results.get_best_result()
    if best.checkpoint is None:
        raise RuntimeError(f"The best trial ({best.path}) stored no checkpoint.")
    best_metrics = {k: best.metrics.get(k) for k in ("training_iteration", "loss", "acc")}
    best_config = {k: v for k, v in best.config.items() if k != "epochs"}
    print(
        f"Best trial: {best.path}\n"
        f"  config:     {best_config}\n"
        f"  metrics:    {best_metrics}\n"
        f"  checkpoint: {best.checkpoint.path}"
    )

    data = load_splits()
    with best.checkpoint.as_directory() as directory:
        model, epochs_done = load_checkpoint(directory)
    test_acc = float(model.score(data.x_test, data.y_test))
    print(
        f"Model loaded from that checkpoint ({epochs_done} epochs): accuracy {test_acc:.4f} "
        f"on the {len(data.y_test)} held-out test digits."
    )
    return {
        "experiment_path": results.experiment_path,
        "best_config": best_config,
        "best_metrics": best_metrics,
        "best_checkpoint": best.checkpoint.path,
        "test_accuracy": test_acc,
        "num_errors": results.num_errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--storage-path",
        default="~/prefect_tune_results",
        help="local or NFS path, or fsspec URL (s3://..., gs://...) (default: %(default)s)",
    )
    parser.add_argument("--name", default="digits", help="experiment name (default: %(default)s)")
    parser.add_argument(
        "--num-samples",
        type=int,
        default=4,
        help="samples of the search space; x2 grid values = trials (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=int, default=10, help="epochs per trial (default: %(default)s)"
    )
    parser.add_argument(
        "--max-concurrent-trials", type=int, default=2, help="(default: %(default)s)"
    )
    parser.add_argument(
        "--dask-address", default=None, help="Dask scheduler address; a local cluster if omitted"
    )
    parser.add_argument(
        "--storage-block", default=None, help="name of a saved TuneStorage block (not the path)"
    )
    args = parser.parse_args()
    summary = tune_digits(
        storage_path=args.storage_path,
        name=args.name,
        num_samples=args.num_samples,
        epochs=args.epochs,
        max_concurrent_trials=args.max_concurrent_trials,
        dask_address=args.dask_address,
        storage_block=args.storage_block,
    )
    return 1 if summary["num_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
