"""The experiment store over every backend: state files, result history, checkpoint commit.

Runs through the ``storage_spec`` fixture, so memory, local, shared, S3 (moto server) and GCS
(emulator server) all get the same suite.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from prefect_tune.config import CheckpointConfig
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
    ExperimentState,
    PackedSummary,
    TrialState,
    TrialStatus,
    TrialSummary,
)
from prefect_tune.storage import layout
from tests import trainables
from tests._experiment_store import (
    a_definition,
    a_trial,
    committed_checkpoint,
    make_checkpoint_dir,
    run_in,
)

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
        "best_metric": None,
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
        committed_checkpoint(spec, rel).to_directory(str(tmp_path / "early"))

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
        committed_checkpoint(spec, partial).to_directory(str(tmp_path / "partial"))

    # A committed checkpoint downloads whole, byte for byte: with its files given (as a trial's
    # records give them) or read from its trial's state (a checkpoint known by its path only).
    for i, committed in enumerate(
        [
            committed_checkpoint(spec, rel, uploaded.files),
            committed_checkpoint(spec, rel),
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
        committed_checkpoint(spec, rel).to_directory(str(tmp_path / "torn"))

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
    out = committed_checkpoint(store.storage.spec, ckpt).to_directory(str(tmp_path / "v1"))
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
        committed_checkpoint(store.storage.spec, ckpt).to_directory(str(tmp_path / "o"))


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
