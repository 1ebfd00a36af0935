"""Stored state is untrusted input: hostile and damaged experiments, over every backend.

An experiment is often read from a bucket or a share that others write. Each case here builds
a real experiment with the project's own models and code (a session commits the checkpoints,
`ExperimentStore` writes the snapshot), then edits it as an attacker or an accident would: the
raw JSON loaded, one field changed, the bytes written back. So the cases keep working when the
schema grows. Each asserts what a user sees: the named error, the file it names, and that
nothing outside the experiment (a sibling directory, a file next to a download's target) was
read, written or deleted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import prefect_tune as tune
from prefect_tune.checkpoint import Checkpoint
from prefect_tune.config import CheckpointConfig, FailureConfig, RunConfig
from prefect_tune.engine import (
    BasicVariantGenerator,
    ResumePolicy,
    ThreadTrialExecutor,
    TuneController,
    activated,
)
from prefect_tune.exceptions import (
    CheckpointError,
    ConfigError,
    StateError,
    TrialError,
    UnsafePathError,
)
from prefect_tune.results import ResultGrid
from prefect_tune.state import (
    AttemptRecord,
    ExperimentState,
    ExperimentStore,
    TrialState,
    TrialStatus,
)
from prefect_tune.storage import Storage, StorageSpec, layout
from tests import trainables
from tests._experiment_store import a_definition, a_session, a_trial, make_checkpoint_dir, run_in

# -- builders ---------------------------------------------------------------------------------

VICTIM_FILE = "victim/keep.txt"  # beside the experiment, below the same storage root
VICTIM_BYTES = b"not the experiment's"


def an_experiment(storage_spec: StorageSpec) -> tuple[ExperimentStore, Storage]:
    """An experiment at ``<root>/exp``, and the root with a victim's file beside it."""
    root = storage_spec.open()
    root.write_bytes(VICTIM_FILE, VICTIM_BYTES)
    return ExperimentStore(storage_spec.child("exp").open()), root


def victim_untouched(root: Storage) -> bool:
    return root.walk_files("victim") == {"keep.txt": len(VICTIM_BYTES)} and (
        root.read_bytes(VICTIM_FILE) == VICTIM_BYTES
    )


def a_started_trial() -> TrialState:
    return a_trial().model_copy(
        update={"status": TrialStatus.RUNNING, "attempts": [AttemptRecord(attempt=1)]}
    )


def with_a_checkpoint(store: ExperimentStore, tmp_path: Path) -> TrialState:
    """Trial ``t_0`` with one checkpoint committed by a real session, and the snapshot."""
    store.write_definition(a_definition())
    trial = a_started_trial()
    store.write_trial(trial)
    session = a_session(store, trial)
    with activated(session):
        tune.report(
            {"loss": 1.0}, checkpoint=Checkpoint.from_directory(make_checkpoint_dir(tmp_path, 1))
        )
    session.close()
    stored = store.read_trial(trial.dir_name)
    assert stored is not None and [c.dir_name for c in stored.checkpoints] == ["checkpoint_000000"]
    store.write_state(ExperimentState(name="exp", next_trial_index=1, trials=[stored]))
    return stored


def edit_json(storage: Storage, rel: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Loads a stored JSON document, lets ``edit`` change it, writes its bytes back."""
    raw = json.loads(storage.read_bytes(rel))
    edit(raw)
    storage.write_bytes(rel, json.dumps(raw).encode())


def plant(storage: Storage, rel: str, data: bytes) -> None:
    """Stores an object at a path `Storage` itself refuses, as an attacker's own client would."""
    # A backend may refuse the key: the attack then has no object to read.
    with contextlib.suppress(Exception):
        storage.fs.pipe_file(f"{storage.root}/{rel}", data)


def the_checkpoint(store: ExperimentStore) -> Checkpoint:
    """The trial's latest checkpoint, as a user reading the experiment gets it."""
    result = ResultGrid.from_path(store.uri, storage_options=store.storage.spec.options)[0]
    checkpoint = result.checkpoint
    assert checkpoint is not None
    return checkpoint


TRIAL_FILE = layout.trial_file("t_0")
CHECKPOINT_DIR = layout.checkpoint_dir("t_0", 0)
ESCAPE = "../../../outside/evil.sh"  # from a download's target: three levels up
EVIL = b"#!/bin/sh\nrm -rf ~\n"


# -- item 1: no path read from storage leads outside its directory ---------------------------


@pytest.mark.parametrize(
    "rel",
    ["../victim/keep.txt", "a/../../victim/keep.txt", "/victim/keep.txt", "a//b", "a\\..\\b", "."],
)
def test_storage_refuses_every_path_that_could_leave_its_root(storage_spec, tmp_path, rel):
    store, root = an_experiment(storage_spec)
    storage = store.storage
    local = tmp_path / "local.txt"
    local.write_bytes(b"local")
    calls: list[Callable[[], Any]] = [
        lambda: storage.read_bytes(rel),
        lambda: storage.write_bytes(rel, b"overwritten"),
        lambda: storage.exists(rel),
        lambda: storage.list_dir(rel),
        lambda: storage.walk_files(rel),
        lambda: storage.delete(rel),
        lambda: storage.delete_files([rel]),
        lambda: storage.put_files([(str(local), rel)]),
        lambda: storage.get_files([(rel, str(tmp_path / "got.txt"))]),
    ]
    for call in calls:
        with pytest.raises(UnsafePathError, match=f"Below {storage.url}: the path"):
            call()
    assert victim_untouched(root)
    assert not (tmp_path / "got.txt").exists()


def test_a_checkpoint_listing_a_file_outside_is_refused_before_anything_is_written(
    storage_spec, tmp_path, tmp_path_factory
):
    store, _ = an_experiment(storage_spec)
    with_a_checkpoint(store, tmp_path)
    edit_json(
        store.storage,
        TRIAL_FILE,
        lambda raw: raw["checkpoints"][0]["files"].update({ESCAPE: len(EVIL)}),
    )
    plant(store.storage, f"{CHECKPOINT_DIR}/{ESCAPE}", EVIL)
    downloads = tmp_path_factory.mktemp("downloads")
    target = downloads / "a" / "b" / "target"

    for read in (
        lambda: the_checkpoint(store).to_directory(target),
        lambda: the_checkpoint(store).as_directory().__enter__(),
    ):
        with pytest.raises(UnsafePathError) as raised:
            read()
        message = str(raised.value)
        assert store.storage.uri(TRIAL_FILE) in message and repr(ESCAPE) in message
        assert "checkpoints[0].files" in message
    assert list(downloads.rglob("evil.sh")) == []
    assert not target.exists()  # refused before the target was made


def test_a_version_1_manifest_listing_a_file_outside_is_refused(
    storage_spec, tmp_path, tmp_path_factory
):
    # A version 1 trial state committed a checkpoint by the manifest in its directory.
    store, _ = an_experiment(storage_spec)
    stored = with_a_checkpoint(store, tmp_path)
    files = dict(stored.checkpoints[0].files or {})

    def version_1(raw: dict[str, Any]) -> None:
        raw["schema_version"] = 1
        del raw["checkpoints"][0]["files"]

    edit_json(store.storage, TRIAL_FILE, version_1)
    manifest = layout.manifest_file(CHECKPOINT_DIR)
    store.storage.write_json(manifest, {"files": {**files, ESCAPE: len(EVIL)}})
    plant(store.storage, f"{CHECKPOINT_DIR}/{ESCAPE}", EVIL)
    downloads = tmp_path_factory.mktemp("downloads")

    with pytest.raises(UnsafePathError) as raised:
        the_checkpoint(store).to_directory(downloads / "a" / "b" / "target")
    assert store.storage.uri(manifest) in str(raised.value) and repr(ESCAPE) in str(raised.value)
    assert list(downloads.rglob("evil.sh")) == []


def _snapshot_dir_name(raw: dict[str, Any]) -> None:
    raw["trials"][0]["dir_name"] = "../../victim"


def _snapshot_checkpoint(raw: dict[str, Any]) -> None:
    raw["trials"][0]["checkpoint"] = "../../../victim"


def _trial_dir_name(raw: dict[str, Any]) -> None:
    raw["dir_name"] = "../../victim"


def _record_dir_name(raw: dict[str, Any]) -> None:
    raw["checkpoints"][0]["dir_name"] = "../../../victim"


HOSTILE_NAMES = {
    "snapshot-trial-dir": (layout.EXPERIMENT_STATE_FILE, _snapshot_dir_name, "trials[0].dir_name"),
    "snapshot-checkpoint": (
        layout.EXPERIMENT_STATE_FILE,
        _snapshot_checkpoint,
        "trials[0].checkpoint",
    ),
    "trial-dir": (TRIAL_FILE, _trial_dir_name, "dir_name"),
    "checkpoint-dir": (TRIAL_FILE, _record_dir_name, "checkpoints[0].dir_name"),
}


def restore(store: ExperimentStore, policy: ResumePolicy) -> None:
    """``Tuner.restore`` of the experiment, with the engine's in-process executor."""
    definition = store.read_definition()
    TuneController(
        store=store,
        definition=definition,
        generator=BasicVariantGenerator({"x": 5.0}, definition.num_samples, seed=0),
        trainable=trainables.quadratic,
        executor=ThreadTrialExecutor(1),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        failure_config=FailureConfig(),
        policy=policy,
        trainable_name="quadratic",
    ).run()


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_a_hostile_directory_name_is_refused_when_the_experiment_is_read(
    storage_spec, tmp_path, case
):
    # The trial was running when its driver died: a restore resumes it (writing its state and
    # results where its name says), and reads its trial.json, which the snapshot cannot show
    # as finished. Edited in the snapshot, the name rules once the trial's own directory is
    # gone.
    rel, edit, field = HOSTILE_NAMES[case]
    store, root = an_experiment(storage_spec)
    with_a_checkpoint(store, tmp_path)
    edit_json(store.storage, rel, edit)
    if rel == layout.EXPERIMENT_STATE_FILE:
        store.storage.delete(layout.trial_dir("t_0"))
    before = store.storage.walk_files()

    for read in (
        lambda: restore(store, ResumePolicy()),
        lambda: ResultGrid.from_path(store.uri, storage_options=store.storage.spec.options),
    ):
        with pytest.raises(UnsafePathError) as raised:
            read()
        message = str(raised.value)
        assert store.storage.uri(rel) in message and f"{field}: " in message
        assert "'..' segment" in message
        assert isinstance(raised.value, StateError)

    assert victim_untouched(root)
    after = store.storage.walk_files()
    after.pop(layout.LEASE_FILE, None)  # taken and released by the restore
    before.pop(layout.LEASE_FILE, None)
    assert after == before


# -- item 1: links in a reported checkpoint, and in stored checkpoints -----------------------


def _stored_files(store: ExperimentStore) -> dict[str, int]:
    return store.storage.walk_files(layout.trial_dir("t_0"))


def test_a_link_to_a_file_inside_the_checkpoint_is_uploaded_as_that_file(store, tmp_path):
    store.write_definition(a_definition())
    trial = a_started_trial()
    store.write_trial(trial)
    source = Path(make_checkpoint_dir(tmp_path, 1))
    (source / "latest.json").symlink_to("state.json")  # relative, inside
    (source / "sub" / "weights.link").symlink_to(source / "sub" / "weights.bin")  # absolute
    session = a_session(store, trial)
    with activated(session):
        tune.report({"loss": 1.0}, checkpoint=Checkpoint.from_directory(source))
    session.close()

    stored = store.read_trial(trial.dir_name)
    assert stored is not None and stored.latest_checkpoint is not None
    assert stored.latest_checkpoint.files == {
        "state.json": 11,
        "latest.json": 11,
        "sub/weights.bin": 10_000,
        "sub/weights.link": 10_000,
    }
    target = Path(session.resume_checkpoint.to_directory(tmp_path / "restored"))
    assert (target / "latest.json").read_bytes() == (source / "state.json").read_bytes()
    assert (target / "sub" / "weights.link").read_bytes() == (
        source / "sub" / "weights.bin"
    ).read_bytes()
    if store.storage.local_files:  # stored as a file, not as a link
        stored_link = Path(store.storage.full_path(f"{CHECKPOINT_DIR}/latest.json"))
        assert stored_link.is_file() and not stored_link.is_symlink()


@pytest.mark.parametrize("link", ["outside", "dangling", "directory", "directory-inside"])
def test_any_other_link_in_a_reported_checkpoint_is_refused_and_nothing_is_committed(
    store, tmp_path, link
):
    store.write_definition(a_definition())
    trial = a_started_trial()
    store.write_trial(trial)
    committed_before = store.storage.read_bytes(TRIAL_FILE)
    secret = tmp_path / "home" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("password")
    source = Path(make_checkpoint_dir(tmp_path, 1))
    name = source / "sub" / "extra"
    {
        "outside": lambda: name.symlink_to(secret),
        "dangling": lambda: name.symlink_to(source / "nothing-here"),
        "directory": lambda: name.symlink_to(secret.parent, target_is_directory=True),
        "directory-inside": lambda: name.symlink_to(source, target_is_directory=True),
    }[link]()

    session = a_session(store, trial)
    with activated(session), pytest.raises(CheckpointError) as raised:
        tune.report({"loss": 1.0}, checkpoint=Checkpoint.from_directory(source))
    session.close()
    assert str(name) in str(raised.value) and "Nothing was committed" in str(raised.value)
    assert store.storage.read_bytes(TRIAL_FILE) == committed_before
    assert [rel for rel in _stored_files(store) if rel != layout.TRIAL_FILE] == []


def _local_only(store: ExperimentStore) -> None:
    if not store.storage.local_files:
        pytest.skip("only a local or NFS path has links")


@pytest.mark.parametrize("replaced", ["file", "checkpoint-directory"])
def test_a_stored_checkpoint_replaced_by_a_link_outside_is_never_copied_out(
    store, tmp_path, tmp_path_factory, replaced
):
    # Someone with write access to a shared experiment replaces a committed checkpoint's file
    # (or its whole directory) by a link to a private file of whoever reads it next, with the
    # sizes its trial's state lists. Reading it must not copy that file: not to a download,
    # and not back into shared storage when the trainable reports get_checkpoint() again.
    _local_only(store)
    stored = with_a_checkpoint(store, tmp_path)
    files = dict(stored.checkpoints[0].files or {})
    home = tmp_path_factory.mktemp("home")
    (home / "sub").mkdir()
    (home / "state.json").write_bytes(b"S" * files["state.json"])
    (home / "sub" / "weights.bin").write_bytes(b"W" * files["sub/weights.bin"])
    if replaced == "file":
        path = Path(store.storage.full_path(f"{CHECKPOINT_DIR}/state.json"))
        path.unlink()
        path.symlink_to(home / "state.json")
    else:
        path = Path(store.storage.full_path(CHECKPOINT_DIR))
        store.storage.delete(CHECKPOINT_DIR)
        path.symlink_to(home, target_is_directory=True)
    committed_before = store.storage.read_bytes(TRIAL_FILE)
    downloads = tmp_path_factory.mktemp("downloads")

    with pytest.raises(UnsafePathError, match="symbolic link"):
        the_checkpoint(store).to_directory(downloads / "target")
    with (
        pytest.raises(UnsafePathError, match="symbolic link"),
        the_checkpoint(store).as_directory(),
    ):
        pass
    assert list(downloads.rglob("*.json")) == []

    session = a_session(store, stored)
    with activated(session), pytest.raises(UnsafePathError, match="symbolic link"):
        tune.report({"loss": 0.5}, checkpoint=tune.get_checkpoint())
    session.close()
    assert store.storage.read_bytes(TRIAL_FILE) == committed_before
    assert not any(rel.startswith("checkpoint_000001") for rel in _stored_files(store))


# -- item 3: experiment names are names, not patterns ------------------------------------------


@pytest.mark.parametrize("name", ["exp*", "exp?", "exp[1]", "exp]", "a\nb", "a\x00b", "tab\there"])
def test_an_experiment_name_with_a_pattern_or_control_character_is_refused(name):
    with pytest.raises(ConfigError, match=r"RunConfig\(name=\.\.\.\): is a directory name"):
        RunConfig(name=name)


def test_deleting_a_name_with_glob_characters_deletes_that_name_only(storage_spec):
    # RunConfig refuses such names; a storage path or a listing may still hold one.
    root = storage_spec.open()
    for rel in ("exp*/experiment.json", "exp*/trials/t/trial.json", "exp-important/a.json"):
        root.write_bytes(rel, b"{}")
    root.write_bytes("expA", b"a file")
    root.write_bytes("a?", b"a file")
    root.write_bytes("ab", b"a file")

    Storage.open(storage_spec.child("exp*")).delete("")  # what resume="overwrite" deletes
    root.delete("a?")

    assert root.list_dir("") == ["ab", "exp-important", "expA"]
    assert root.walk_files("exp-important") == {"a.json": 2}


# -- item 6: a checkpoint is never committed empty or unreadable ------------------------------


@pytest.mark.parametrize("source", ["missing", "empty", "only-directories"])
def test_a_checkpoint_with_no_file_is_refused_and_the_report_records_nothing(
    store, tmp_path, source
):
    store.write_definition(a_definition())
    trial = a_started_trial()
    store.write_trial(trial)
    committed_before = store.storage.read_bytes(TRIAL_FILE)
    directory = tmp_path / "checkpoint"
    if source != "missing":
        directory.mkdir()
    if source == "only-directories":
        (directory / "a" / "b").mkdir(parents=True)
    expected = "does not exist" if source == "missing" else "needs at least one"

    session = a_session(store, trial)
    with activated(session):
        with pytest.raises(CheckpointError, match=expected) as raised:
            tune.report({"loss": 1.0}, checkpoint=Checkpoint(str(directory)))
        assert str(directory) in str(raised.value)
        assert store.storage.read_bytes(TRIAL_FILE) == committed_before
        assert _stored_files(store) == {layout.TRIAL_FILE: len(committed_before)}
        # Nothing of the refused report was recorded: the next one is the trial's first.
        tune.report({"loss": 0.5})
    session.flush(write_state=True)
    session.close()
    stored = store.read_trial(trial.dir_name)
    assert stored is not None and stored.checkpoints == []
    assert [r["training_iteration"] for r in store.read_history(stored)] == [1]
    assert stored.last_result is not None and stored.last_result["loss"] == 0.5


def test_a_missing_checkpoint_fails_the_trial_with_a_checkpoint_error(store):
    # What a user sees of the same mistake in a whole trial run.
    store.write_definition(a_definition())

    def trainable(config):
        tune.report({"loss": 1.0}, checkpoint=Checkpoint("/does/not/exist"))

    with pytest.raises(TrialError) as raised:
        run_in(store, a_trial(), trainable)
    assert isinstance(raised.value.__cause__, CheckpointError)
    stored = store.read_trial("t_0")
    assert stored is not None and stored.status is TrialStatus.ERROR
    assert stored.error_type == "CheckpointError" and stored.checkpoints == []
    assert not any(rel.startswith("checkpoint_") for rel in _stored_files(store))
