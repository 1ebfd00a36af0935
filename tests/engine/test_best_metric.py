"""A trial's best metric (``TrialState.best_metric``, shown in the leaderboard) is the best of its
history, the exact one: rows a resume replaced never count."""

from __future__ import annotations

import tempfile
import uuid

import pytest

import prefect_tune as tune
from prefect_tune import Checkpoint
from prefect_tune.exceptions import TrialError
from prefect_tune.state import ExperimentStore, TrialStatus
from prefect_tune.storage import StorageSpec
from tests._experiment_store import a_trial, run_in


def reports(losses: list[float], checkpoint_at: set[int], fail: bool):
    def trainable(config):
        for i, loss in enumerate(losses, start=1):
            if i in checkpoint_at:
                with tempfile.TemporaryDirectory() as d:
                    with open(f"{d}/step", "w") as fh:
                        fh.write(str(i))
                    tune.report({"loss": loss}, checkpoint=Checkpoint.from_directory(d))
            else:
                tune.report({"loss": loss})
        if fail:
            raise RuntimeError("boom")

    return trainable


@pytest.fixture
def memory_store() -> ExperimentStore:
    return ExperimentStore(StorageSpec(f"memory://best-{uuid.uuid4().hex}").open())


def test_best_metric_by_mode(memory_store):
    trial = a_trial()
    outcome = run_in(memory_store, trial, reports([3.0, 1.0, 2.0], set(), False), mode="min")
    stored = memory_store.read_trial(trial.dir_name)
    assert outcome.trial.status is TrialStatus.TERMINATED
    assert (stored.best_metric, stored.best_iteration) == (1.0, 2)
    other = a_trial(1)
    run_in(memory_store, other, reports([3.0, float("nan"), 2.0], set(), False), mode="max")
    stored = memory_store.read_trial(other.dir_name)
    assert (stored.best_metric, stored.best_iteration) == (3.0, 1)  # NaN never best


def test_best_metric_forgets_rows_a_resume_replaced(memory_store):
    trial = a_trial()
    # Best (1.0) at iteration 2, after the only checkpoint (iteration 1); then the trial fails.
    with pytest.raises(TrialError, match="boom"):
        run_in(memory_store, trial, reports([5.0, 1.0, 3.0], {1}, True), mode="min")
    failed = memory_store.read_trial(trial.dir_name)
    assert failed.status is TrialStatus.ERROR and failed.best_metric == 1.0
    # Resumed from iteration 1: iterations 2 and 3 are reported anew, and the old 1.0 is gone.
    run_in(memory_store, failed, reports([4.0, 6.0], set(), False), mode="min")
    resumed = memory_store.read_trial(trial.dir_name)
    history = [row["loss"] for row in memory_store.read_history(resumed)]
    assert history == [5.0, 4.0, 6.0]
    assert (resumed.best_metric, resumed.best_iteration) == (4.0, 2) == (min(history), 2)
