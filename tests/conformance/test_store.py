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
    StateError,
    UnsupportedSchemaVersionError,
)
from prefect_tune.state import (
    TRIAL_SCHEMA_VERSION,
    AttemptRecord,
    CheckpointRecord,
    ExperimentDefinition,
    ExperimentState,
    ExperimentStore,
    TrialState,
    TrialStatus,
)
from prefect_tune.state._models import PackedSummary, TrialSummary
from prefect_tune.storage import Storage, layout
from tests import trainables

# experiment_state.json as prefect-tune wrote it at schema_version 1 (each trial's whole
# TrialState): trial 0 TERMINATED with checkpoints 1 and 2 kept, trial 1 ERROR at step 3.
V1_SNAPSHOT = (
    '{"schema_version":1,"name":"exp","next_trial_index":2,"trials":[{"schema_version":1,'
    '"trial_id":"abcde_00000","index":0,"dir_name":"raises_at_abcde_00000","config":{"fai'
    'l_at":null,"steps":3},"status":"TERMINATED","last_result":{"loss":3.0,"training_iter'
    'ation":3,"trial_id":"abcde_00000","timestamp":1795654062,"date":"2026-11-26_00-47-42'
    '","time_this_iter_s":0.018722316999628674,"time_total_s":0.024028956999245565,"time_'
    'since_restore":0.024028956999245565,"iterations_since_restore":3,"checkpoint_dir_nam'
    'e":"checkpoint_000002","done":true,"hostname":"vm","pid":26404},"checkpoints":[{"ind'
    'ex":1,"dir_name":"checkpoint_000001","training_iteration":2,"metrics":{"loss":2.0,"t'
    'raining_iteration":2,"trial_id":"abcde_00000","timestamp":1795654062,"date":"2026-11'
    '-26_00-47-42","time_this_iter_s":0.0046184200000425335,"time_total_s":0.005306639999'
    '616891,"time_since_restore":0.005306639999616891,"iterations_since_restore":2,"check'
    'point_dir_name":"checkpoint_000001","done":false,"hostname":"vm","pid":26404},"creat'
    'ed_at":1795654062.139048,"size_bytes":11},{"index":2,"dir_name":"checkpoint_000002",'
    '"training_iteration":3,"metrics":{"loss":3.0,"training_iteration":3,"trial_id":"abcd'
    'e_00000","timestamp":1795654062,"date":"2026-11-26_00-47-42","time_this_iter_s":0.01'
    '8722316999628674,"time_total_s":0.024028956999245565,"time_since_restore":0.02402895'
    '6999245565,"iterations_since_restore":3,"checkpoint_dir_name":"checkpoint_000002","d'
    'one":false,"hostname":"vm","pid":26404},"created_at":1795654062.1566277,"size_bytes"'
    ':11}],"next_checkpoint_index":3,"num_failures":0,"error":null,"error_type":null,"att'
    'empts":[{"attempt":1,"started_at":1795654062.1276755,"ended_at":1795654062.1645198,"'
    'start_iteration":0,"resumed_from":null,"status":"TERMINATED","error":null,"flow_run_'
    'id":"00000000-0000-0000-0000-000000000001","task_run_id":null,"host":"vm"}],"updated'
    '_at":1795654062.1645396},{"schema_version":1,"trial_id":"abcde_00001","index":1,"dir'
    '_name":"raises_at_abcde_00001","config":{"fail_at":3,"steps":3},"status":"ERROR","la'
    'st_result":{"loss":2.0,"training_iteration":2,"trial_id":"abcde_00001","timestamp":1'
    '795654062,"date":"2026-11-26_00-47-42","time_this_iter_s":0.013725167002121452,"time'
    '_total_s":0.01407429100072477,"time_since_restore":0.01407429100072477,"iterations_s'
    'ince_restore":2,"checkpoint_dir_name":"checkpoint_000001","done":false,"hostname":"v'
    'm","pid":26404},"checkpoints":[{"index":0,"dir_name":"checkpoint_000000","training_i'
    'teration":1,"metrics":{"loss":1.0,"training_iteration":1,"trial_id":"abcde_00001","t'
    'imestamp":1795654062,"date":"2026-11-26_00-47-42","time_this_iter_s":0.0003491239986'
    '033179,"time_total_s":0.0003491239986033179,"time_since_restore":0.00034912399860331'
    '79,"iterations_since_restore":1,"checkpoint_dir_name":"checkpoint_000000","done":fal'
    'se,"hostname":"vm","pid":26404},"created_at":1795654062.1404002,"size_bytes":11},{"i'
    'ndex":1,"dir_name":"checkpoint_000001","training_iteration":2,"metrics":{"loss":2.0,'
    '"training_iteration":2,"trial_id":"abcde_00001","timestamp":1795654062,"date":"2026-'
    '11-26_00-47-42","time_this_iter_s":0.013725167002121452,"time_total_s":0.01407429100'
    '072477,"time_since_restore":0.01407429100072477,"iterations_since_restore":2,"checkp'
    'oint_dir_name":"checkpoint_000001","done":false,"hostname":"vm","pid":26404},"create'
    'd_at":1795654062.1540954,"size_bytes":11}],"next_checkpoint_index":2,"num_failures":'
    '1,"error":"ValueError: boom at step 3","error_type":"ValueError","attempts":[{"attem'
    'pt":1,"started_at":1795654062.1299453,"ended_at":1795654062.156506,"start_iteration"'
    ':0,"resumed_from":null,"status":"ERROR","error":"ValueError: boom at step 3","flow_r'
    'un_id":"00000000-0000-0000-0000-000000000001","task_run_id":null,"host":"vm"}],"upda'
    'ted_at":1795654062.1572082}],"flow_runs":[{"flow_run_id":"00000000-0000-0000-0000-00'
    '0000000001","flow_run_name":"exp","run_count":1,"started_at":1795654062.0710466}],"f'
    'inished":true,"updated_at":1795654062.1658487}'
)


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


def run_in(store: ExperimentStore, trial: TrialState, trainable, **request):
    """One task run of ``trial`` (optimising "loss"), as a Dask worker runs it."""
    return run_trial(
        TrialRequest(
            experiment=store.storage.spec,
            experiment_name="exp",
            trial=trial,
            trial_name="t",
            trainable=trainable,
            metric="loss",
            **request,
        )
    )


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


def a_finished_trial(index: int = 0) -> TrialState:
    """A TERMINATED trial with two attempts and two kept checkpoints."""
    rows = [{"loss": 1.0 / step, "training_iteration": step} for step in (1, 2, 3)]
    return a_trial(index).model_copy(
        update={
            "status": TrialStatus.TERMINATED,
            "last_result": dict(rows[-1], done=True),
            "checkpoints": [
                CheckpointRecord(
                    index=i, dir_name=f"checkpoint_00000{i}", training_iteration=i + 1, metrics=row
                )
                for i, row in enumerate(rows[1:], start=1)
            ],
            "next_checkpoint_index": 3,
            "attempts": [AttemptRecord(attempt=1), AttemptRecord(attempt=2, start_iteration=2)],
        }
    )


def test_snapshot_records_each_trial_as_a_summary_on_its_own_line(store):
    finished = a_finished_trial(0)
    failed = a_trial(1).model_copy(
        update={"status": TrialStatus.ERROR, "error": "ValueError: boom", "num_failures": 2}
    )
    store.write_state(ExperimentState(name="exp", next_trial_index=2, trials=[finished, failed]))

    data = store.storage.read_bytes(layout.EXPERIMENT_STATE_FILE)
    lines = data.split(b"\n")
    assert len(lines) == 4 and lines[-1] == b"]}"
    raw = json.loads(data)
    assert raw["schema_version"] == 2 and raw["next_trial_index"] == 2
    assert [json.loads(line.rstrip(b",")) for line in lines[1:3]] == raw["trials"]
    # Attempts and checkpoint records stay in trial.json; the latest checkpoint is named.
    assert raw["trials"][0] == {
        "trial_id": "abcde_00000",
        "index": 0,
        "dir_name": "t_0",
        "config": {"x": 5.0},
        "status": "TERMINATED",
        "last_result": {"loss": 1 / 3, "training_iteration": 3, "done": True},
        "checkpoint": "checkpoint_000002",
        "num_failures": 0,
        "error": None,
        "error_type": None,
    }

    state = store.read_state()
    assert state is not None
    assert state.trials == [TrialSummary.of(finished), TrialSummary.of(failed)]
    header, rows = store.load_summaries()
    assert header is not None and header.next_trial_index == 2 and header.trials == []
    assert [row.unpack() for row in rows] == state.trials
    assert [(row.index, row.status) for row in rows] == [
        (0, TrialStatus.TERMINATED),
        (1, TrialStatus.ERROR),
    ]


def test_snapshot_of_schema_version_1_is_read(store):
    store.storage.write_bytes(layout.EXPERIMENT_STATE_FILE, V1_SNAPSHOT.encode())
    state = store.read_state()
    assert state is not None and state.schema_version == 2
    assert state.next_trial_index == 2
    assert [r.flow_run_id for r in state.flow_runs] == ["00000000-0000-0000-0000-000000000001"]
    done, failed = state.trials
    assert (done.trial_id, done.status, done.checkpoint) == (
        "abcde_00000",
        TrialStatus.TERMINATED,
        "checkpoint_000002",
    )
    assert done.config == {"fail_at": None, "steps": 3}
    assert done.last_result is not None and done.last_result["loss"] == 3.0
    assert (failed.status, failed.error, failed.num_failures) == (
        TrialStatus.ERROR,
        "ValueError: boom at step 3",
        1,
    )
    _, rows = store.load_summaries()
    assert [row.unpack() for row in rows] == state.trials
    # Written back, it is at the current version.
    store.write_state(state)
    assert json.loads(store.storage.read_bytes(layout.EXPERIMENT_STATE_FILE))["schema_version"] == 2


def test_newer_snapshot_and_damaged_summaries_are_refused_by_name(store):
    store.write_state(ExperimentState(name="exp", next_trial_index=1, trials=[a_trial(0)]))
    data = store.storage.read_bytes(layout.EXPERIMENT_STATE_FILE)
    store.storage.write_bytes(
        layout.EXPERIMENT_STATE_FILE, data.replace(b'"schema_version":2', b'"schema_version":3')
    )
    with pytest.raises(UnsupportedSchemaVersionError, match="schema_version 3"):
        store.load_summaries()
    with pytest.raises(UnsupportedSchemaVersionError, match="schema_version 3"):
        store.read_state()
    store.storage.write_bytes(
        layout.EXPERIMENT_STATE_FILE, data.replace(b'"index":0', b'"index":"zero"')
    )
    with pytest.raises(StateError, match="damaged"):
        store.load_summaries()


def test_load_summaries_prefers_trial_files_for_unfinished(store):
    finished = a_finished_trial(0)
    running = a_trial(1).model_copy(update={"status": TrialStatus.RUNNING})
    store.write_state(ExperimentState(name="exp", next_trial_index=2, trials=[finished, running]))
    # The worker of trial 1 got further than the snapshot; trial 2 is unknown to the snapshot.
    store.write_trial(running.model_copy(update={"status": TrialStatus.TERMINATED}))
    store.write_trial(a_trial(2).model_copy(update={"status": TrialStatus.RUNNING}))
    _, rows = store.load_summaries()
    assert all(isinstance(row, PackedSummary) for row in rows)
    assert [(t.index, t.status) for t in rows] == [
        (0, TrialStatus.TERMINATED),
        (1, TrialStatus.TERMINATED),
        (2, TrialStatus.RUNNING),
    ]
    assert rows[0].unpack() == TrialSummary.of(finished)


def test_load_trials_gives_whole_states(store):
    finished = a_finished_trial(0)
    never_started = a_trial(1).model_copy(update={"status": TrialStatus.PENDING})
    store.write_trial(finished)
    store.write_state(
        ExperimentState(name="exp", next_trial_index=2, trials=[finished, never_started])
    )
    state, trials = store.load_trials()
    assert state is not None and state.next_trial_index == 2
    assert trials[0] == store.read_trial("t_0")
    assert [a.start_iteration for a in trials[0].attempts] == [0, 2]
    assert [c.dir_name for c in trials[0].checkpoints] == ["checkpoint_000001", "checkpoint_000002"]
    # No trial.json: the state the snapshot describes.
    assert (trials[1].trial_id, trials[1].status, trials[1].attempts) == (
        "abcde_00001",
        TrialStatus.PENDING,
        [],
    )


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
    uploaded = store.upload_checkpoint(trial.dir_name, 0, src)
    assert uploaded.dir_name == "checkpoint_000000"
    assert uploaded.files == {"state.json": 11, "sub/weights.bin": 10_000}
    rel = layout.checkpoint_dir(trial.dir_name, 0)
    spec = store.storage.spec

    # Uploaded, not committed: no trial state lists it yet.
    with pytest.raises(IncompleteCheckpointError, match="belongs to no trial"):
        Checkpoint._committed_in(spec.child(rel)).to_directory(str(tmp_path / "early"))

    # The trial state that lists it (with its files) commits it.
    trial.checkpoints.append(
        CheckpointRecord(
            index=0,
            dir_name=uploaded.dir_name,
            training_iteration=1,
            size_bytes=uploaded.size_bytes,
            files=uploaded.files,
        )
    )
    trial.next_checkpoint_index = 1
    store.write_trial(trial)

    # A crash mid-upload of the next one: files no trial state lists, never seen as committed.
    partial = layout.checkpoint_dir(trial.dir_name, 1)
    store.storage.write_bytes(f"{partial}/state.json", b"{}")
    with pytest.raises(IncompleteCheckpointError, match="never committed"):
        Checkpoint._committed_in(spec.child(partial)).to_directory(str(tmp_path / "partial"))

    # A committed checkpoint downloads whole, byte for byte: with its files given (as a trial's
    # records give them) or read from its trial's state (a checkpoint known by its path only).
    for i, committed in enumerate(
        [
            Checkpoint._committed_in(spec.child(rel), uploaded.files),
            Checkpoint._committed_in(spec.child(rel)),
        ]
    ):
        out = committed.to_directory(str(tmp_path / f"out-{i}"))
        out_bytes = pathlib.Path(out, "sub", "weights.bin").read_bytes()
        assert out_bytes == pathlib.Path(src, "sub", "weights.bin").read_bytes()
        assert sorted(p.name for p in pathlib.Path(out).rglob("*") if p.is_file()) == [
            "state.json",
            "weights.bin",
        ]
        with committed.as_directory() as d:
            assert json.loads(pathlib.Path(d, "state.json").read_text()) == {"step": 1}

    # A stored file that is not the size its record says: the checkpoint is not whole.
    store.storage.write_bytes(f"{rel}/state.json", b"{}")
    with pytest.raises(IncompleteCheckpointError, match="wrong size"):
        Checkpoint._committed_in(spec.child(rel)).to_directory(str(tmp_path / "torn"))

    # The partial one is garbage to collect.
    assert store.remove_uncommitted_checkpoints(trial) == ["checkpoint_000001"]
    assert not store.storage.exists(f"{partial}/state.json")
    assert store.storage.exists(f"{rel}/state.json")


# trial.json as prefect-tune wrote it at schema_version 1: its checkpoint records do not list
# files; the manifest written last in each checkpoint's directory does.
V1_TRIAL = (
    '{"schema_version":1,"trial_id":"abcde_00000","index":0,"dir_name":"t_0","config":{"x":5'
    '.0,"steps":4},"status":"RUNNING","last_result":{"loss":2.0,"acc":0.3333333333333333,"s'
    'tep":2,"training_iteration":2,"trial_id":"abcde_00000","timestamp":1795670000,"date":"'
    '2026-11-26_05-13-20","time_this_iter_s":0.01,"time_total_s":0.02,"time_since_restore":'
    '0.02,"iterations_since_restore":2,"checkpoint_dir_name":"checkpoint_000001","done":fals'
    'e,"hostname":"vm","pid":1},"checkpoints":[{"index":1,"dir_name":"checkpoint_000001","t'
    'raining_iteration":2,"metrics":{"loss":2.0,"step":2,"training_iteration":2,"checkpoint'
    '_dir_name":"checkpoint_000001"},"created_at":1795670000.0,"size_bytes":1045}],"next_ch'
    'eckpoint_index":2,"num_failures":0,"error":null,"error_type":null,"attempts":[{"attemp'
    't":1,"started_at":1795670000.0,"ended_at":null,"start_iteration":0,"resumed_from":null'
    ',"status":"RUNNING","error":null,"flow_run_id":null,"task_run_id":null,"host":"vm"}],"'
    'updated_at":1795670000.0}'
)


def test_a_trial_state_of_schema_version_1_resumes_from_its_manifest_committed_checkpoint(
    store, tmp_path
):
    store.write_definition(a_definition())
    ckpt = layout.checkpoint_dir("t_0", 1)
    store.storage.write_bytes(f"{ckpt}/state.json", json.dumps({"step": 2, "x": 5.0}).encode())
    store.storage.write_bytes(f"{ckpt}/weights.bin", bytes([2]) * 1024)
    store.storage.write_json(
        f"{ckpt}/{layout.MANIFEST_FILE}",
        {"schema_version": 1, "files": {"state.json": 21, "weights.bin": 1024}},
    )
    store.storage.write_bytes(layout.trial_file("t_0"), V1_TRIAL.encode())
    old = store.read_trial("t_0")
    assert old is not None and old.checkpoints[0].files is None
    out = Checkpoint._committed_in(store.storage.spec.child(ckpt)).to_directory(
        str(tmp_path / "v1")
    )
    assert json.loads(pathlib.Path(out, "state.json").read_text())["step"] == 2

    outcome = run_in(store, old, trainables.quadratic)
    final = outcome.trial
    assert final.status is TrialStatus.TERMINATED
    assert final.attempts[-1].start_iteration == 2  # resumed from the v1 checkpoint
    assert [c.training_iteration for c in final.checkpoints] == [2, 3, 4]
    assert final.checkpoints[0].files is None and final.checkpoints[-1].files == {
        "state.json": 21,
        "weights.bin": 1024,
    }
    raw = json.loads(store.storage.read_bytes(layout.trial_file("t_0")))
    assert raw["schema_version"] == TRIAL_SCHEMA_VERSION == 3
    assert store.read_trial("t_0") == final


def test_a_checkpoint_of_schema_version_1_without_its_manifest_was_never_committed(store, tmp_path):
    ckpt = layout.checkpoint_dir("t_0", 1)
    store.storage.write_bytes(f"{ckpt}/state.json", b"{}")
    store.storage.write_bytes(layout.trial_file("t_0"), V1_TRIAL.encode())
    with pytest.raises(IncompleteCheckpointError, match="no manifest"):
        Checkpoint._committed_in(store.storage.spec.child(ckpt)).to_directory(str(tmp_path / "o"))


def test_trial_run_keeps_num_to_keep_best_checkpoints(store):
    store.write_definition(a_definition())
    trial = a_trial().model_copy(update={"config": {"x": 5.0, "steps": 5}})
    outcome = run_in(
        store,
        trial,
        trainables.quadratic,
        checkpoint_config=CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="loss", checkpoint_score_order="min"
        ),
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


def hold_lease(store: ExperimentStore, owner: str) -> None:
    """Writes a lease held by driver ``owner``, as that driver's take-over would."""
    from prefect_tune.state._lease import Lease

    lease = Lease(owner=owner, host="another-host", pid=1)
    store.storage.write_bytes(layout.LEASE_FILE, lease.model_dump_json().encode())


def test_a_trial_whose_experiment_was_taken_over_commits_no_further_checkpoint(store, tmp_path):
    # Driver A submitted the trial; before its third checkpoint, driver B takes the experiment
    # over. With a fence interval of 0 every commit reads the lease: the commit of step 3 is the
    # check under test.
    import prefect_tune as tune
    from prefect_tune.session import Decision

    store.write_definition(a_definition())
    hold_lease(store, "driver-a")

    def trainable(config):
        for step in (1, 2, 3):
            if step == 3:
                hold_lease(store, "driver-b")
            tune.report(
                {"loss": 1.0 / step},
                checkpoint=Checkpoint.from_directory(make_checkpoint_dir(tmp_path, step)),
            )

    outcome = run_in(store, a_trial(), trainable, lease_owner="driver-a", fence_interval_s=0.0)
    assert outcome.decision is Decision.ABANDON
    stored = store.read_trial(a_trial().dir_name)
    assert stored is not None and stored.status is TrialStatus.RUNNING  # B's to resume
    assert [c.training_iteration for c in stored.checkpoints] == [1, 2]
    assert stored.last_result is not None and stored.last_result["training_iteration"] == 2


def a_session(store: ExperimentStore, trial: TrialState):
    """A session of ``trial``'s first attempt, as `run_trial` makes it, without a fence."""
    from prefect_tune.session import TrialContext, TrialSession

    return TrialSession(
        store,
        trial,
        TrialContext(
            trial_id=trial.trial_id,
            trial_name="t",
            experiment_name="exp",
            trial_dir=store.storage.uri(layout.trial_dir(trial.dir_name)),
            trial_index=0,
            attempt=1,
        ),
        metric="loss",
        checkpoint_config=CheckpointConfig(),
    )


@pytest.mark.parametrize("ending", ["results written", "trainable raised"])
def test_a_trial_taken_over_writes_no_state_at_a_flush_or_a_failure(store, ending):
    # Driver B takes the experiment over before the trial's third report. Neither the write of
    # the trial's state that a due flush of its results makes, nor the record of the error its
    # trainable then raises, may land on B's trial: each reads the lease first (a fence
    # interval of 0: every write reads it).
    import prefect_tune as tune
    from prefect_tune.session import Decision

    store.write_definition(a_definition())
    hold_lease(store, "driver-a")

    def trainable(config):
        for step in (1, 2, 3):
            if step == 3:
                hold_lease(store, "driver-b")
                if ending == "trainable raised":
                    raise RuntimeError("the trainable failed after the takeover")
            tune.report({"loss": 1.0 / step})

    outcome = run_in(
        store,
        a_trial(),
        trainable,
        lease_owner="driver-a",
        fence_interval_s=0.0,
        result_flush_interval_s=0.0,
    )
    assert outcome.decision is Decision.ABANDON
    stored = store.read_trial(a_trial().dir_name)
    assert stored is not None and stored.status is TrialStatus.RUNNING  # B's to resume
    assert stored.num_failures == 0 and stored.error is None
    assert stored.last_result is not None and stored.last_result["training_iteration"] == 2
    assert not store.storage.exists(f"{layout.trial_dir(a_trial().dir_name)}/{layout.ERROR_FILE}")


@pytest.mark.parametrize("window_s", [0.0, 3600.0])
def test_the_lease_is_read_again_after_an_upload_that_outlasts_the_fence_window(
    store, tmp_path, window_s
):
    # The lease is read while a checkpoint uploads. Here driver B takes the experiment over
    # right after that read: an upload longer than the window (0 s: any upload) has the lease
    # read again before the commit point, which B's lease then stops. Within the window the
    # first read stands and the checkpoint commits; B starts no trial for a whole fence
    # interval, twice the window.
    from prefect_tune.engine._trial_run import ExperimentFence
    from prefect_tune.session import Decision, TrialStopped

    hold_lease(store, "driver-a")
    trial = a_trial().model_copy(update={"attempts": [AttemptRecord(attempt=1)]})
    store.write_trial(trial)
    fence = ExperimentFence(store.storage, "driver-a", 3600.0)
    reads: list[Decision] = []

    def read_then_lose_the_lease() -> Decision:
        reads.append(fence.check())
        if len(reads) == 1:
            hold_lease(store, "driver-b")
        return reads[-1]

    session = a_session(store, trial)
    session.fence = read_then_lose_the_lease
    session.fence_window_s = window_s
    checkpoint = Checkpoint.from_directory(make_checkpoint_dir(tmp_path, 1))
    try:
        if window_s == 0.0:
            with pytest.raises(TrialStopped):
                session.report({"loss": 1.0}, checkpoint=checkpoint)
        else:
            session.report({"loss": 1.0}, checkpoint=checkpoint)
    finally:
        session.close()
    stored = store.read_trial(trial.dir_name)
    assert stored is not None
    if window_s == 0.0:
        assert reads == [Decision.CONTINUE, Decision.ABANDON]
        assert stored.checkpoints == []
    else:
        assert reads == [Decision.CONTINUE]
        assert [c.training_iteration for c in stored.checkpoints] == [1]


@pytest.mark.parametrize("window_s", [0.0, 3600.0])
def test_commits_within_the_fence_window_share_one_read_of_the_lease(store, tmp_path, window_s):
    # A read of the lease that began within the window (half the fence interval) before a
    # commit point stands for that commit: of three quick commits, only the first reads it.
    # With a window of 0, each commit reads it while uploading and again at its commit point.
    from prefect_tune.session import Decision

    trial = a_trial().model_copy(update={"attempts": [AttemptRecord(attempt=1)]})
    store.write_trial(trial)
    reads: list[float] = []

    def count_reads() -> Decision:
        reads.append(0.0)
        return Decision.CONTINUE

    session = a_session(store, trial)
    session.fence = count_reads
    session.fence_window_s = window_s
    try:
        for step in (1, 2, 3):
            checkpoint = Checkpoint.from_directory(make_checkpoint_dir(tmp_path, step))
            session.report({"loss": 1.0 / step}, checkpoint=checkpoint)
    finally:
        session.close()
    stored = store.read_trial(trial.dir_name)
    assert stored is not None
    assert [c.training_iteration for c in stored.checkpoints] == [1, 2, 3]
    assert len(reads) == (6 if window_s == 0.0 else 1)


def _report_checkpoints(session, tmp_path, steps) -> None:
    try:
        for step in steps:
            checkpoint = Checkpoint.from_directory(make_checkpoint_dir(tmp_path, step))
            session.report({"loss": 4.0 / step, "step": step}, checkpoint=checkpoint)
    finally:
        session.close()  # and no flush: what a kill of the worker leaves


def test_a_commit_carries_the_results_since_the_last_segment_in_the_trial_state(store, tmp_path):
    # Each checkpoint's commit writes the trial's state, and the rows reported since the last
    # result segment ride in it: no segment is written. Killed there, the trial's history still
    # has them, and its next attempt writes them as the segment they were to be.
    store.write_definition(a_definition())
    trial = a_trial().model_copy(update={"attempts": [AttemptRecord(attempt=1)]})
    store.write_trial(trial)
    _report_checkpoints(a_session(store, trial), tmp_path, (1, 2, 3))

    assert store.storage.list_dir(layout.results_dir(trial.dir_name)) == []
    stored = store.read_trial(trial.dir_name)
    assert stored is not None
    assert [(c.attempt, c.segment, len(c.rows)) for c in stored.carried_results] == [(1, 1, 3)]
    assert [r["training_iteration"] for r in store.read_history(stored)] == [1, 2, 3]

    final = run_in(store, stored, trainables.quadratic).trial  # x = 5: loss = 4 / step
    assert final.status is TrialStatus.TERMINATED
    assert final.attempts[-1].start_iteration == 3 and final.carried_results == []
    assert store.storage.list_dir(layout.results_dir(trial.dir_name)) == [
        "0001-000001.jsonl",
        "0002-000001.jsonl",
    ]
    assert [(r["training_iteration"], r["loss"]) for r in store.read_history(final)] == [
        (step, 4.0 / step) for step in (1, 2, 3, 4, 5)
    ]


def test_past_the_carried_maximum_the_commit_writes_the_results_as_a_segment(store, tmp_path):
    from prefect_tune.session import CARRIED_ROWS_MAX

    trial = a_trial().model_copy(update={"attempts": [AttemptRecord(attempt=1)]})
    store.write_trial(trial)
    steps = range(1, CARRIED_ROWS_MAX + 4)
    _report_checkpoints(a_session(store, trial), tmp_path, steps)

    # The commit that would have carried one row too many wrote them all as segment 1.
    assert store.storage.list_dir(layout.results_dir(trial.dir_name)) == ["0001-000001.jsonl"]
    stored = store.read_trial(trial.dir_name)
    assert stored is not None
    assert [(c.segment, len(c.rows)) for c in stored.carried_results] == [(2, 2)]
    assert [r["training_iteration"] for r in store.read_history(stored)] == list(steps)
