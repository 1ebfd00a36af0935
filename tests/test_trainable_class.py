"""Class trainables (``prefect_tune.Trainable``) through ``Tuner.fit()`` on Dask: Ray Tune's
methods called in Ray Tune's order, checkpoints by ``CheckpointConfig(checkpoint_frequency)``,
and a failed trial resumed from its latest checkpoint through ``load_checkpoint``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import prefect_tune as tune
from prefect_tune import CheckpointConfig, ConfigError, FailureConfig, RunConfig, TuneConfig, Tuner
from tests import trainables

pytestmark = pytest.mark.slow


def tuner(tmp_path, runner, config, **checkpoints):
    return Tuner(
        trainables.CountingTrainable,
        param_space=config,
        tune_config=TuneConfig(metric="value", mode="max"),
        run_config=RunConfig(
            name=f"class-{uuid.uuid4().hex[:6]}",
            storage_path=str(tmp_path),
            checkpoint_config=CheckpointConfig(**checkpoints),
            failure_config=FailureConfig(max_failures=1),
        ),
        task_runner=runner,
    )


def test_a_class_trainable_runs_checkpoints_and_resumes(prefect_api, runner, tmp_path):
    log, flag = tmp_path / "log.txt", tmp_path / "flag"
    flag.write_text("fail once")
    config = {"x": 2.0, "steps": 6, "fail_at": 5, "log": str(log), "flag": str(flag)}
    results = tuner(tmp_path, runner, config, checkpoint_frequency=2).fit()
    (result,) = results
    assert not results.errors and result.metrics["value"] == 12.0
    assert list(result.metrics_dataframe["training_iteration"]) == [1, 2, 3, 4, 5, 6]
    assert list(result.metrics_dataframe["value"]) == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    # The first task run failed at step 5; the second resumed from the checkpoint of step 4,
    # given save_checkpoint's dict, and cleanup ran after each.
    assert log.read_text().splitlines() == [
        "setup",
        *(f"step {i}" for i in range(1, 5)),
        "cleanup",
        "setup",
        "load 4",
        "step 5",
        "step 6",
        "cleanup",
    ]
    # checkpoint_frequency=2: the latest checkpoint is the one of step 6.
    with result.checkpoint.as_directory() as directory:
        assert Path(directory, "weights.txt").read_text() == "12.0"


def test_checkpoint_at_end_and_no_frequency(prefect_api, runner, tmp_path):
    log = tmp_path / "log.txt"
    config = {"x": 1.0, "steps": 3, "log": str(log)}
    (result,) = tuner(tmp_path, runner, config, checkpoint_at_end=True).fit()
    assert len(result.metrics_dataframe) == 3 and result.checkpoint is not None
    with result.checkpoint.as_directory() as directory:
        assert Path(directory, "weights.txt").read_text() == "3.0"


def test_class_trainable_refusals(tmp_path):
    class NotATrainable:
        def __init__(self, config):
            pass

    with pytest.raises(ConfigError, match="subclass prefect_tune.Trainable"):
        Tuner(NotATrainable, run_config=RunConfig(storage_path=str(tmp_path)))
    with pytest.raises(ConfigError, match="class trainables"):
        Tuner(
            trainables.bowl,
            run_config=RunConfig(
                storage_path=str(tmp_path),
                checkpoint_config=CheckpointConfig(checkpoint_frequency=2),
            ),
        )
    assert issubclass(trainables.CountingTrainable, tune.Trainable)
