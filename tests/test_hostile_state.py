"""Stored state is untrusted input: hostile and damaged experiments, over every backend.

An experiment is often read from a bucket or a share that others write. Each case here builds
a real experiment with the project's own models and code (a session commits the checkpoints,
`ExperimentStore` writes the snapshot), then edits it as an attacker or an accident would: the
raw JSON loaded, one field changed, the bytes written back. So the cases keep working when the
schema grows. Each asserts what a user sees: the named error, the file it names, and that
nothing outside the experiment (a sibling directory, a file next to a download's target) was
read, written or deleted.

The second half of this module damages experiments as a careless user (or a full disk) leaves
them: files cut short, edited or deleted, in their raw bytes. What must hold:

- every reader names the damaged file (:class:`DamagedStateError`, ``path`` and message), never a
  bare JSON error; ``prefect-tune ls`` lists the healthy experiments beside a damaged one;
- a restore that meets damage writes nothing: every stored byte is as it was;
- a committed checkpoint whose files were deleted is an :class:`IncompleteCheckpointError` naming
  it, in the user's code too;
- a lease that stays unreadable stops the trials' writes, and its driver's, once no one can tell
  whether another driver holds the experiment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

import prefect_tune as tune
from prefect_tune import ResultGrid, Tuner
from prefect_tune.checkpoint import Checkpoint
from prefect_tune.cli import main
from prefect_tune.config import CheckpointConfig, FailureConfig, RunConfig
from prefect_tune.engine import (
    BasicVariantGenerator,
    Decision,
    ExperimentFence,
    ResumePolicy,
    ThreadTrialExecutor,
    TuneController,
    activated,
)
from prefect_tune.exceptions import (
    CheckpointError,
    ConfigError,
    DamagedStateError,
    IncompleteCheckpointError,
    LeaseLostError,
    StateError,
    TrialError,
    UnsafePathError,
)
from prefect_tune.state import (
    AttemptRecord,
    ExperimentState,
    ExperimentStore,
    Lease,
    LeaseHolder,
    TrialState,
    TrialStatus,
)
from prefect_tune.storage import Storage, StorageSpec, layout
from tests import trainables
from tests._experiment_store import (
    a_definition,
    a_session,
    a_trial,
    make_checkpoint_dir,
    make_controller,
    run_in,
)

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


# == damaged stored state ======================================================================

# -- building and damaging experiments ---------------------------------------------------------

#: Trial 0 fails at its step 2 (ERROR, one checkpoint), trial 1 ends TERMINATED (two).
SPACE = {"fail_at": tune.grid_search([2, None]), "steps": 2}


def a_controller(
    spec: StorageSpec, policy: ResumePolicy | None = None, trainable: Any = trainables.raises_at
) -> tuple[ExperimentStore, TuneController]:
    """The controller of the experiment at ``spec`` over `SPACE`, in threads of this process."""
    return make_controller(spec, trainable, SPACE, policy=policy)


@pytest.fixture
def experiment(storage_spec: StorageSpec) -> tuple[StorageSpec, ExperimentStore]:
    """A stored, finished experiment of `SPACE` below the backend's root, with its store."""
    spec = storage_spec.child("exp")
    store, controller = a_controller(spec)
    rows = controller.run()
    assert [row.status for row in rows] == [TrialStatus.ERROR, TrialStatus.TERMINATED]
    return spec, store


def trial_dirs(store: ExperimentStore) -> list[str]:
    """The trials' directory names, in index order."""
    _, rows = store.load_summaries()
    return [row.dir_name for row in rows]


def cut_short(storage: Storage, rel: str, keep: float = 0.5) -> None:
    """Keeps the first ``keep`` of a file's bytes, as a full disk or an interrupted copy does."""
    data = storage.read_bytes(rel)
    storage.write_bytes(rel, data[: int(len(data) * keep)])


def stored_bytes(storage: Storage) -> dict[str, bytes]:
    """Every stored file below ``storage``, with its bytes."""
    return {rel: storage.read_bytes(rel) for rel in sorted(storage.walk_files())}


def options_argv(spec: StorageSpec) -> list[str]:
    """``--option`` arguments of ``prefect-tune`` that reach ``spec``'s storage."""
    return [
        f"--option={key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in spec.options.items()
    ]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    """The status, output and lines on stderr of ``prefect-tune *argv`` (those it wrote: the
    GCS emulator, in this process, writes there too)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.startswith("prefect-tune:")]


def assert_names(error: DamagedStateError, uri: str) -> None:
    assert error.path == uri
    assert uri in str(error) and "damaged" in str(error)


# -- readers name the damaged file -------------------------------------------------------------


@pytest.mark.parametrize("damaged", [layout.EXPERIMENT_FILE, layout.EXPERIMENT_STATE_FILE])
def test_a_cut_short_experiment_file_is_named_by_every_reader(experiment, capsys, damaged):
    spec, store = experiment
    cut_short(store.storage, damaged)
    uri = store.storage.uri(damaged)
    with pytest.raises(DamagedStateError) as caught:
        ResultGrid.from_path(spec.url, storage_options=spec.options)
    assert_names(caught.value, uri)
    for command in ("show", "best"):
        code, _, (line,) = cli(capsys, command, spec.url, *options_argv(spec))
        assert code == 2
        assert line.startswith("prefect-tune: error: DamagedStateError: ") and uri in line
    if damaged == layout.EXPERIMENT_FILE:
        with pytest.raises(DamagedStateError) as caught:
            Tuner.restore(spec.url, trainables.raises_at, storage_options=spec.options)
        assert_names(caught.value, uri)


def test_a_damaged_lease_is_named_by_show(experiment, capsys):
    spec, store = experiment
    store.storage.write_bytes(layout.LEASE_FILE, b"{")
    code, _, (line,) = cli(capsys, "show", spec.url, *options_argv(spec))
    assert code == 2
    assert "DamagedStateError" in line and store.storage.uri(layout.LEASE_FILE) in line


def test_a_cut_short_results_segment_is_named(experiment, capsys):
    spec, store = experiment
    done = trial_dirs(store)[1]
    (segment,) = store.storage.list_dir(layout.results_dir(done))
    rel = f"{layout.results_dir(done)}/{segment}"
    data = store.storage.read_bytes(rel)
    store.storage.write_bytes(rel, data[:-5])  # into the last row, as a cut-off copy ends
    uri = store.storage.uri(rel)
    grid = ResultGrid.from_path(spec.url, storage_options=spec.options)
    with pytest.raises(DamagedStateError) as caught:
        grid[1].metrics_dataframe  # noqa: B018 - reading the history is the test
    assert_names(caught.value, uri)
    assert "line 2" in str(caught.value)
    with pytest.raises(DamagedStateError):
        grid.get_best_result(scope="avg")
    code, _, (line,) = cli(capsys, "best", spec.url, "--scope", "avg", *options_argv(spec))
    assert code == 2 and "DamagedStateError" in line and uri in line


def test_ls_lists_the_healthy_experiments_and_marks_a_damaged_one(storage_spec, capsys):
    root = storage_spec.open()
    for name in ("healthy", "broken", "zz-healthy"):
        store = ExperimentStore(root.sub(name))
        store.write_definition(a_definition())
        store.write_state(ExperimentState(name=name, next_trial_index=2, trials=[a_trial(0)]))
    broken = root.sub("broken")
    broken.write_bytes(layout.EXPERIMENT_FILE, b'{"schema_version":1,"name":"ex')
    code, out, lines = cli(capsys, "ls", storage_spec.url, *options_argv(storage_spec))
    assert code == 1
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["healthy"][1:3] == rows["zz-healthy"][1:3] == ["1/2", "PENDING=1"]
    assert rows["broken"][1:3] == ["?", "UNREADABLE"]
    (line,) = lines
    assert line.startswith("prefect-tune: warning: broken: DamagedStateError: ")
    assert broken.uri(layout.EXPERIMENT_FILE) in line


# -- a restore that meets damage changes nothing ------------------------------------------------


def _damage_the_lease(store: ExperimentStore) -> tuple[str, ResumePolicy | None]:
    store.storage.write_bytes(layout.LEASE_FILE, b"{")
    return layout.LEASE_FILE, None


def _cut_the_snapshot_short(store: ExperimentStore) -> tuple[str, ResumePolicy | None]:
    cut_short(store.storage, layout.EXPERIMENT_STATE_FILE)
    return layout.EXPERIMENT_STATE_FILE, None


def _cut_a_running_trial_short(store: ExperimentStore) -> tuple[str, ResumePolicy | None]:
    # Its driver was killed while trial 1 ran: the snapshot shows it RUNNING (its trial.json
    # is then read at every restore).
    state, rows = store.load_summaries()
    assert state is not None
    store.write_state(state, [rows[0], rows[1].with_status(TrialStatus.RUNNING)])
    rel = layout.trial_file(trial_dirs(store)[1])
    cut_short(store.storage, rel)
    return rel, None


def _cut_an_errored_trial_short(store: ExperimentStore) -> tuple[str, ResumePolicy | None]:
    # The snapshot shows trial 0 finished: its trial.json is read only when it runs again.
    rel = layout.trial_file(trial_dirs(store)[0])
    cut_short(store.storage, rel)
    return rel, ResumePolicy(resume_errored=True)


DAMAGE = {
    "lease": _damage_the_lease,
    "snapshot": _cut_the_snapshot_short,
    "running-trial": _cut_a_running_trial_short,
    "errored-trial": _cut_an_errored_trial_short,
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_restore_that_meets_damage_writes_nothing(experiment, damage):
    spec, store = experiment
    rel, policy = damage(store)
    before = stored_bytes(store.storage)
    _, controller = a_controller(spec, policy)
    with pytest.raises(DamagedStateError) as caught:
        controller.run()
    assert_names(caught.value, store.storage.uri(rel))
    assert stored_bytes(store.storage) == before


def test_a_restore_through_the_tuner_that_meets_damage_writes_nothing(prefect_api, experiment):
    spec, store = experiment
    rel, _ = _cut_an_errored_trial_short(store)
    before = stored_bytes(store.storage)
    tuner = Tuner.restore(
        spec.url,
        trainables.raises_at,
        resume_errored=True,
        storage_options=spec.options,
        task_runner=ThreadPoolTaskRunner(max_workers=1),
    )
    with pytest.raises(DamagedStateError) as caught:
        tuner.fit()
    assert_names(caught.value, store.storage.uri(rel))
    assert stored_bytes(store.storage) == before


def test_a_damaged_lease_is_refused_by_name_and_left_alone(experiment):
    _, store = experiment
    store.storage.write_bytes(layout.LEASE_FILE, b'{"owner":')
    with pytest.raises(DamagedStateError, match="delete that file") as caught:
        LeaseHolder(store.storage, ttl_s=5.0, settle_s=0.01).acquire()
    assert_names(caught.value, store.storage.uri(layout.LEASE_FILE))
    assert store.storage.read_bytes(layout.LEASE_FILE) == b'{"owner":'


# -- a deleted checkpoint directory ------------------------------------------------------------


def test_a_deleted_checkpoint_directory_is_an_incomplete_checkpoint(experiment, tmp_path):
    spec, store = experiment
    done = trial_dirs(store)[1]
    grid = ResultGrid.from_path(spec.url, storage_options=spec.options)
    latest = grid[1].checkpoint
    assert latest is not None
    name = latest.path.rstrip("/").rsplit("/", 1)[-1]
    store.storage.delete(f"{layout.trial_dir(done)}/{name}")
    listed = grid[1].best_checkpoints[-1][0]  # knows its files from its record
    for checkpoint in (latest, listed):
        with pytest.raises(IncompleteCheckpointError, match=name) as caught:
            checkpoint.to_directory(str(tmp_path / "copy"))
        assert "state.json" in str(caught.value)
        with pytest.raises(IncompleteCheckpointError, match=name), checkpoint.as_directory():
            pytest.fail("a checkpoint whose files are gone was opened")


def test_a_trainable_whose_checkpoint_was_deleted_fails_with_the_named_error(experiment):
    spec, store = experiment
    errored = trial_dirs(store)[0]
    (stored,) = store.read_trials([errored]).values()
    assert stored is not None and stored.latest_checkpoint is not None
    checkpoint = stored.latest_checkpoint.dir_name
    store.storage.delete(f"{layout.trial_dir(errored)}/{checkpoint}")
    _, controller = a_controller(spec, ResumePolicy(resume_errored=True))
    controller.run()  # the trainable opens get_checkpoint() first thing
    again = store.read_trial(errored)
    assert again is not None and again.status is TrialStatus.ERROR
    assert again.error_type == "IncompleteCheckpointError"
    assert again.error is not None and checkpoint in again.error


# -- an unreadable lease -----------------------------------------------------------------------


def write_lease(store: ExperimentStore, owner: str, ttl_s: float) -> None:
    lease = Lease(owner=owner, host="another-host", pid=1, ttl_s=ttl_s)
    store.storage.write_bytes(layout.LEASE_FILE, lease.model_dump_json().encode())


def test_a_lease_unreadable_for_longer_than_its_ttl_stops_the_trial(store, caplog):
    caplog.set_level(logging.WARNING, logger="prefect_tune")
    uri = store.storage.uri(layout.LEASE_FILE)
    write_lease(store, "driver-a", ttl_s=0.3)
    fence = ExperimentFence(store.storage, "driver-a", interval_s=0.0)
    assert fence.check() is Decision.CONTINUE  # its time to live is now known
    store.storage.write_bytes(layout.LEASE_FILE, b"{")
    assert fence.check() is Decision.CONTINUE
    assert fence.check() is Decision.CONTINUE
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and uri in warnings[0].getMessage()  # once, not per read
    time.sleep(0.35)
    assert fence.check() is Decision.ABANDON
    (stopped,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert uri in stopped.getMessage() and "stops writing" in stopped.getMessage()
    write_lease(store, "driver-a", ttl_s=0.3)  # for good: the lease may have changed hands
    assert fence.check() is Decision.ABANDON


def test_a_lease_unreadable_for_a_moment_keeps_the_trial_going(store):
    write_lease(store, "driver-a", ttl_s=0.3)
    fence = ExperimentFence(store.storage, "driver-a", interval_s=0.0)
    assert fence.check() is Decision.CONTINUE
    store.storage.write_bytes(layout.LEASE_FILE, b"{")
    assert fence.check() is Decision.CONTINUE
    write_lease(store, "driver-a", ttl_s=0.3)
    time.sleep(0.35)
    assert fence.check() is Decision.CONTINUE  # readable again: the count starts over
    store.storage.write_bytes(layout.LEASE_FILE, b"{")
    assert fence.check() is Decision.CONTINUE


def test_a_lease_never_read_may_stay_unreadable_for_the_default_limit(store):
    assert ExperimentFence(store.storage, "a", interval_s=2.0).unreadable_limit_s == 30.0
    assert ExperimentFence(store.storage, "a", interval_s=10.0).unreadable_limit_s == 50.0
    store.storage.write_bytes(layout.LEASE_FILE, b"{")
    fence = ExperimentFence(store.storage, "driver-a", interval_s=0.0, unreadable_limit_s=0.2)
    assert fence.check() is Decision.CONTINUE
    time.sleep(0.25)
    assert fence.check() is Decision.ABANDON


def _reports_for_a_while(config: dict[str, Any]) -> None:
    for step in range(200):
        tune.report({"loss": float(step)})
        time.sleep(0.02)


def test_a_running_trial_stops_writing_once_its_lease_stays_damaged(store):
    write_lease(store, "driver-a", ttl_s=0.3)
    trial = a_trial()
    damage = threading.Timer(0.2, store.storage.write_bytes, (layout.LEASE_FILE, b"{"))
    damage.start()
    started = time.monotonic()
    try:
        outcome = run_in(
            store, trial, _reports_for_a_while, lease_owner="driver-a", fence_interval_s=0.0
        )
    finally:
        damage.cancel()
    assert outcome.decision is Decision.ABANDON
    assert time.monotonic() - started < 3.0  # not the trainable's 4 s
    stored = store.read_trial(trial.dir_name)
    assert stored is not None and stored.status is TrialStatus.RUNNING  # nothing written since


def test_a_driver_whose_lease_stays_damaged_stops_as_if_taken_over(store):
    holder = LeaseHolder(store.storage, ttl_s=0.3, settle_s=0.01)
    holder.acquire()
    try:
        store.storage.write_bytes(layout.LEASE_FILE, b"{")
        deadline = time.monotonic() + 5.0
        while holder.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLostError, match="could not renew") as caught:
            holder.check()
        assert store.storage.uri(layout.LEASE_FILE) in str(caught.value)
    finally:
        holder.release()
    assert store.storage.read_bytes(layout.LEASE_FILE) == b"{"  # not its to rewrite


def test_a_driver_that_cannot_write_its_lease_stops_after_its_ttl(tmp_path, monkeypatch):
    storage = Storage.open(StorageSpec(str(tmp_path)))
    holder = LeaseHolder(storage, ttl_s=0.3, settle_s=0.01)
    holder.acquire()
    try:
        stored = storage.read_bytes(layout.LEASE_FILE)

        def refused() -> None:
            raise OSError("No space left on device")

        monkeypatch.setattr(holder, "_write", refused)  # reads still work, writes fail
        deadline = time.monotonic() + 5.0
        while holder.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLostError, match="No space left on device"):
            holder.check()
    finally:
        holder.release()
    assert storage.read_bytes(layout.LEASE_FILE) == stored
