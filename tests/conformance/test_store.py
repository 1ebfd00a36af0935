"""The experiment store over every backend: state files, result history, checkpoint commit.

Runs through the ``storage_spec`` fixture, so memory, local, shared, S3 (moto server) and GCS
(emulator server) all get the same suite.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.config import CheckpointConfig
from prefect_tune.engine._trial_run import TrialRequest, run_trial
from prefect_tune.exceptions import (
    ExperimentNotFoundError,
    IncompleteCheckpointError,
    UnsupportedSchemaVersionError,
)
from prefect_tune.state import (
    AttemptRecord,
    CheckpointRecord,
    ExperimentDefinition,
    ExperimentState,
    ExperimentStore,
    TrialState,
    TrialStatus,
)
from prefect_tune.storage import Storage, layout
from tests import trainables


@pytest.fixture
def store(storage_spec) -> ExperimentStore:
    return ExperimentStore(Storage.open(storage_spec))


def a_definition() -> ExperimentDefinition:
    return ExperimentDefinition(
        name="exp",
        experiment_id="abcde",
        trainable="tests.trainables.quadratic",
        param_space={"x": {"type": "uniform", "lower": 0, "upper": 1}},
        num_samples=2,
        seed=7,
        total_trials=2,
        metric="loss",
        mode="min",
    )


def a_trial(index: int = 0) -> TrialState:
    return TrialState(
        trial_id=f"abcde_{index:05d}", index=index, dir_name=f"t_{index}", config={"x": 5.0}
    )


def make_checkpoint_dir(tmp_path, step: int) -> str:
    d = tmp_path / f"ckpt-src-{step}"
    (d / "sub").mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"step": step}))
    (d / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 39 + b"0123456789abcdef")
    return str(d)


def test_definition_and_state_round_trip(store):
    assert not store.exists()
    with pytest.raises(ExperimentNotFoundError):
        store.read_definition()
    assert store.read_state() is None
    definition = a_definition()
    store.write_definition(definition)
    assert store.exists()
    assert store.read_definition() == definition
    state = ExperimentState(name="exp", next_trial_index=1, trials=[a_trial()])
    store.write_state(state)
    loaded = store.read_state()
    assert loaded is not None and loaded.trials[0].config == {"x": 5.0}


def test_newer_schema_is_refused_by_name(store):
    store.storage.write_json(
        layout.EXPERIMENT_FILE, {**a_definition().model_dump(), "schema_version": 99}
    )
    with pytest.raises(UnsupportedSchemaVersionError, match="schema_version 99"):
        store.read_definition()


def test_load_trials_prefers_trial_files_for_unfinished(store):
    finished = a_trial(0).model_copy(update={"status": TrialStatus.TERMINATED})
    running = a_trial(1).model_copy(update={"status": TrialStatus.RUNNING})
    store.write_state(ExperimentState(name="exp", next_trial_index=2, trials=[finished, running]))
    # The worker of trial 1 got further than the snapshot; trial 2 is unknown to the snapshot.
    store.write_trial(running.model_copy(update={"status": TrialStatus.TERMINATED}))
    store.write_trial(a_trial(2).model_copy(update={"status": TrialStatus.RUNNING}))
    _, trials = store.load_trials()
    assert [(t.index, t.status) for t in trials] == [
        (0, TrialStatus.TERMINATED),
        (1, TrialStatus.TERMINATED),
        (2, TrialStatus.RUNNING),
    ]


def test_history_is_exact_after_a_resume(store):
    trial = a_trial()
    trial.attempts = [AttemptRecord(attempt=1), AttemptRecord(attempt=2, start_iteration=2)]
    store.write_results(
        trial.dir_name, 1, 1, [{"training_iteration": i, "v": "a1"} for i in (1, 2)]
    )
    store.write_results(
        trial.dir_name, 1, 2, [{"training_iteration": i, "v": "a1"} for i in (3, 4)]
    )
    store.write_results(
        trial.dir_name, 2, 1, [{"training_iteration": i, "v": "a2"} for i in (3, 4, 5)]
    )
    history = store.read_history(trial)
    assert [(r["training_iteration"], r["v"]) for r in history] == [
        (1, "a1"),
        (2, "a1"),
        (3, "a2"),
        (4, "a2"),
        (5, "a2"),
    ]


def test_checkpoint_commit_and_partial_checkpoints(store, tmp_path):
    trial = a_trial()
    src = make_checkpoint_dir(tmp_path, 1)
    name, size = store.upload_checkpoint(trial.dir_name, 0, src)
    assert name == "checkpoint_000000" and size > 10_000
    rel = layout.checkpoint_dir(trial.dir_name, 0)
    assert store.read_manifest(rel) == {"state.json": 11, "sub/weights.bin": 10_000}

    # Files without a manifest: never seen as committed.
    partial = layout.checkpoint_dir(trial.dir_name, 1)
    store.storage.write_bytes(f"{partial}/state.json", b"{}")
    with pytest.raises(IncompleteCheckpointError):
        store.read_manifest(partial)
    stored = Checkpoint._committed_in(store.storage.spec.child(partial))
    with pytest.raises(IncompleteCheckpointError):
        stored.to_directory(str(tmp_path / "out-partial"))

    # A committed checkpoint downloads whole, byte for byte.
    committed = Checkpoint._committed_in(store.storage.spec.child(rel))
    out = committed.to_directory(str(tmp_path / "out"))
    out_bytes = pathlib.Path(out, "sub", "weights.bin").read_bytes()
    assert out_bytes == pathlib.Path(src, "sub", "weights.bin").read_bytes()
    with committed.as_directory() as d:
        assert json.loads(pathlib.Path(d, "state.json").read_text()) == {"step": 1}

    # The trial commits only checkpoint 0: the partial one is garbage to collect.
    trial.checkpoints = []
    trial.checkpoints.append(CheckpointRecord(index=0, dir_name=name, training_iteration=1))
    assert store.remove_uncommitted_checkpoints(trial) == ["checkpoint_000001"]
    assert not store.storage.exists(f"{partial}/state.json")
    assert store.storage.exists(f"{rel}/state.json")


def test_trial_run_keeps_num_to_keep_best_checkpoints(store):
    store.write_definition(a_definition())
    trial = a_trial().model_copy(update={"config": {"x": 5.0, "steps": 5}})
    outcome = run_trial(
        TrialRequest(
            experiment=store.storage.spec,
            experiment_name="exp",
            trial=trial,
            trial_name="t",
            trainable=trainables.quadratic,
            metric="loss",
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="loss", checkpoint_score_order="min"
            ),
        )
    )
    final = outcome.trial
    assert final.status is TrialStatus.TERMINATED
    # loss = 4 / step: the lowest two are steps 4 and 5 (5 is also the latest).
    assert [c.training_iteration for c in final.checkpoints] == [4, 5]
    names = store.storage.list_dir(layout.trial_dir(final.dir_name))
    assert sorted(n for n in names if n.startswith("checkpoint_")) == [
        "checkpoint_000003",
        "checkpoint_000004",
    ]
    assert store.read_trial(final.dir_name) == final
    assert [r["training_iteration"] for r in store.read_history(final)] == [1, 2, 3, 4, 5]
