"""``Checkpoint.from_uri``: a checkpoint named by its URI (as the ``completed`` event carries it),
checked against its stored experiment before use, on every storage backend."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

import prefect_tune as tune
from prefect_tune import Checkpoint, TuneStorage
from prefect_tune.exceptions import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointOutsideExperimentError,
    DamagedStateError,
    IncompleteCheckpointError,
)
from prefect_tune.storage import StorageSpec, layout
from tests import trainables
from tests._experiment_store import make_controller


@pytest.fixture
def stored(storage_spec: StorageSpec) -> dict[str, Any]:
    """A finished experiment ``exp`` of one trial of three reports, its last two checkpoints kept."""
    spec = storage_spec.child("exp")
    store, controller = make_controller(
        spec,
        trainables.quadratic,
        {"x": 5.0, "steps": 3},
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    (row,) = controller.run()
    trial = store.read_trial(row.dir_name)
    assert trial is not None and [c.dir_name for c in trial.checkpoints] == [
        "checkpoint_000001",
        "checkpoint_000002",
    ]
    return {
        "root": storage_spec,
        "spec": spec,
        "store": store,
        "trial": trial,
        "uri": store.storage.uri(layout.checkpoint_dir(trial.dir_name, 2)),
    }


def _everything(spec: StorageSpec) -> dict[str, bytes]:
    storage = spec.open()
    return {rel: storage.read_bytes(rel) for rel in storage.walk_files()}


def test_a_committed_checkpoint_opens_from_its_uri(stored: dict[str, Any], tmp_path: Any) -> None:
    ckpt = Checkpoint.from_uri(stored["uri"], stored["spec"].options)
    assert ckpt.path == stored["uri"]
    target = ckpt.to_directory(str(tmp_path / "out"))
    with open(os.path.join(target, "state.json")) as f:
        assert json.load(f) == {"step": 3, "x": 5.0}  # the third report: index 2
    with ckpt.as_directory() as d, open(os.path.join(d, "weights.bin"), "rb") as f:
        assert f.read() == bytes([3]) * 1024


def test_a_block_reaches_the_uri_and_a_name_below_its_root(stored: dict[str, Any]) -> None:
    root: StorageSpec = stored["root"]
    block = TuneStorage(storage_path=root.url, storage_options=root.options)
    by_url = Checkpoint.from_uri(stored["uri"], storage=block)
    rel = f"exp/{layout.checkpoint_dir(stored['trial'].dir_name, 1)}"
    by_name = Checkpoint.from_uri(rel, storage=block)
    with by_url.as_directory() as a, open(os.path.join(a, "state.json")) as f:
        assert json.load(f)["step"] == 3
    with by_name.as_directory() as b, open(os.path.join(b, "state.json")) as f:
        assert json.load(f)["step"] == 2


@pytest.mark.parametrize(
    "change, error, words",
    [
        ("checkpoint_000099", CheckpointNotFoundError, "keeps no checkpoint_000099"),
        (
            "checkpoint_000000",
            CheckpointNotFoundError,
            "kept: checkpoint_000001, checkpoint_000002",
        ),
        ("no-such-trial", CheckpointNotFoundError, "has no trial 'no-such-trial'"),
        ("not-a-checkpoint", CheckpointOutsideExperimentError, "trials/<trial dir>/checkpoint_"),
        ("dotdot", CheckpointOutsideExperimentError, "is not a checkpoint of an experiment"),
        ("no-experiment", CheckpointOutsideExperimentError, "no experiment is stored at"),
    ],
)
def test_a_uri_that_names_no_kept_checkpoint_is_refused_by_name(
    stored: dict[str, Any], change: str, error: type[Exception], words: str
) -> None:
    uri: str = stored["uri"]
    experiment, trial_dir = stored["store"].storage.uri(), stored["trial"].dir_name
    if change.startswith("checkpoint_"):
        uri = f"{experiment}/trials/{trial_dir}/{change}"
    elif change == "no-such-trial":
        uri = f"{experiment}/trials/no-such-trial/checkpoint_000002"
    elif change == "not-a-checkpoint":
        uri = f"{experiment}/trials/{trial_dir}"
    elif change == "dotdot":
        uri = f"{experiment}/trials/../checkpoint_000002"
    elif change == "no-experiment":
        uri = f"{stored['root'].url}/elsewhere/trials/{trial_dir}/checkpoint_000002"
    before = _everything(stored["root"])
    with pytest.raises(error) as caught:
        Checkpoint.from_uri(uri, stored["spec"].options)
    assert isinstance(caught.value, CheckpointError)
    assert words in str(caught.value)
    assert _everything(stored["root"]) == before


@pytest.mark.parametrize("damage", ["deleted", "truncated", "trial-json"])
def test_a_damaged_checkpoint_is_refused_before_any_payload_is_read(
    stored: dict[str, Any], damage: str
) -> None:
    storage = stored["store"].storage
    ckpt_rel = layout.checkpoint_dir(stored["trial"].dir_name, 2)
    if damage == "deleted":
        storage.delete(f"{ckpt_rel}/weights.bin")
    elif damage == "truncated":
        storage.write_bytes(f"{ckpt_rel}/weights.bin", b"\x02" * 10)
    else:
        storage.write_bytes(
            layout.trial_file(stored["trial"].dir_name), b'{"schema_version": 2, "tri'
        )
    before = _everything(stored["root"])
    expected = DamagedStateError if damage == "trial-json" else IncompleteCheckpointError
    with pytest.raises(expected) as caught:
        Checkpoint.from_uri(stored["uri"], stored["spec"].options)
    what = "trial.json" if damage == "trial-json" else "weights.bin"
    assert what in str(caught.value)
    assert _everything(stored["root"]) == before
