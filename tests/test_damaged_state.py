"""Damaged stored state, on every storage backend: an experiment's files cut short, edited or
deleted as a careless user (or a full disk) leaves them.

Each experiment is stored by the project's own engine and store; the damage is done to its raw
bytes afterwards, so the cases keep working when the schema grows. What must hold:

- every reader names the damaged file (:class:`DamagedStateError`, ``path`` and message), never a
  bare JSON error; ``prefect-tune ls`` lists the healthy experiments beside a damaged one;
- a restore that meets damage writes nothing: every stored byte is as it was;
- a committed checkpoint whose files were deleted is an :class:`IncompleteCheckpointError` naming
  it, in the user's code too;
- a lease that stays unreadable stops the trials' writes, and its driver's, once no one can tell
  whether another driver holds the experiment.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

import prefect_tune as tune
from prefect_tune import ResultGrid, Tuner
from prefect_tune.cli import main
from prefect_tune.config import CheckpointConfig, FailureConfig
from prefect_tune.engine import (
    BasicVariantGenerator,
    Decision,
    ExperimentFence,
    ResumePolicy,
    ThreadTrialExecutor,
    TuneController,
    describe_param_space,
)
from prefect_tune.exceptions import DamagedStateError, IncompleteCheckpointError, LeaseLostError
from prefect_tune.state import (
    ExperimentDefinition,
    ExperimentState,
    ExperimentStore,
    Lease,
    LeaseHolder,
    TrialStatus,
)
from prefect_tune.storage import Storage, StorageSpec, layout
from tests import trainables
from tests._experiment_store import a_definition, a_trial, run_in

# -- building and damaging experiments ---------------------------------------------------------

#: Trial 0 fails at its step 2 (ERROR, one checkpoint), trial 1 ends TERMINATED (two).
SPACE = {"fail_at": tune.grid_search([2, None]), "steps": 2}


def a_controller(
    spec: StorageSpec, policy: ResumePolicy | None = None, trainable: Any = trainables.raises_at
) -> tuple[ExperimentStore, TuneController]:
    """The controller of the experiment at ``spec`` over `SPACE` (its definition written when
    none is stored), running trials in threads of this process."""
    store = ExperimentStore(spec.open())
    generator = BasicVariantGenerator(SPACE, 1, seed=0)
    if store.exists():
        definition = store.read_definition()
    else:
        definition = ExperimentDefinition(
            name="exp",
            experiment_id="abcde",
            trainable=trainable.__name__,
            param_space=describe_param_space(SPACE),
            num_samples=1,
            seed=0,
            total_trials=generator.total_trials,
            metric="loss",
            mode="min",
        )
        store.write_definition(definition)
    controller = TuneController(
        store=store,
        definition=definition,
        generator=generator,
        trainable=trainable,
        executor=ThreadTrialExecutor(2),
        checkpoint_config=CheckpointConfig(),
        failure_config=FailureConfig(),
        policy=policy,
        trainable_name=trainable.__name__,
    )
    return store, controller


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
