"""ResultGrid and Result over experiments written straight through ExperimentStore.

Every test runs over in-memory and local-disk storage. Experiments are built by hand, as a
finished tuning run would have left them, so each property is checked against known values.
"""

from __future__ import annotations

import math
import pickle
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prefect_tune.exceptions import (
    ConfigError,
    ExperimentNotFoundError,
    MetricNotReportedError,
    PrefectTuneError,
    TrialError,
)
from prefect_tune.results import Result, ResultGrid
from prefect_tune.state import (
    AttemptRecord,
    CheckpointRecord,
    ExperimentDefinition,
    ExperimentState,
    ExperimentStore,
    TrialState,
    TrialStatus,
)
from prefect_tune.storage import Storage, StorageSpec, TuneStorage, layout
from tests._experiment_store import a_definition

# Loss histories chosen so that each scope picks a different trial when minimising:
# last -> C (0.4), avg -> B (0.5), all -> A (0.1).
LOSSES = {"A": [0.1, 0.9, 0.9], "B": [0.5, 0.5, 0.5], "C": [0.8, 0.8, 0.4]}
TRACEBACK = 'Traceback (most recent call last):\n  File "train.py", line 3\nValueError: boom\n'


@pytest.fixture(params=["memory", "local"])
def root(request, tmp_path) -> str:
    """A fresh storage root of each kind, under which experiments are created."""
    if request.param == "memory":
        return f"memory://test-results-{uuid.uuid4().hex}"
    return str(tmp_path / "storage")


@dataclass
class Experiment:
    url: str
    store: ExperimentStore
    trials: dict[str, TrialState]


def open_store(url: str) -> ExperimentStore:
    return ExperimentStore(Storage.open(StorageSpec(url)))


def definition(metric: str | None = "loss", mode: str | None = "min") -> ExperimentDefinition:
    return a_definition(
        param_space={}, num_samples=1, seed=0, total_trials=None, metric=metric, mode=mode
    )


def new_trial(name: str, index: int, status: TrialStatus = TrialStatus.TERMINATED) -> TrialState:
    return TrialState(
        trial_id=name,
        index=index,
        dir_name=f"trial_{index:05d}_{name}",
        config={"lr": 10.0 ** -(index + 1), "model": {"depth": index + 2}},
        status=status,
        attempts=[AttemptRecord(attempt=1)],
    )


def write_history(
    store: ExperimentStore,
    trial: TrialState,
    losses: list[float],
    *,
    attempt: int = 1,
    seq: int = 1,
    first_iteration: int = 1,
) -> list[dict[str, Any]]:
    rows = [
        {
            "loss": loss,
            "info": {"acc": round(1.0 - loss, 6) if math.isfinite(loss) else 0.0},
            "attempt": attempt,
            "training_iteration": first_iteration + i,
            "trial_id": trial.trial_id,
            "hostname": "worker-1",
        }
        for i, loss in enumerate(losses)
    ]
    store.write_results(trial.dir_name, attempt, seq, rows)
    trial.last_result = dict(rows[-1], done=trial.status is TrialStatus.TERMINATED)
    return rows


def add_checkpoint(
    store: ExperimentStore, trial: TrialState, row: dict[str, Any], src_root: Path
) -> None:
    """Commits a checkpoint of two files, as report(..., checkpoint=...) does."""
    iteration = row["training_iteration"]
    src = src_root / f"{trial.trial_id}-{iteration}"
    (src / "sub").mkdir(parents=True)
    (src / "model.txt").write_text(f"{trial.trial_id}@{iteration}")
    (src / "sub" / "weights.bin").write_bytes(bytes([iteration]) * 16)
    index = trial.next_checkpoint_index
    uploaded = store.upload_checkpoint(trial.dir_name, index, str(src))
    trial.checkpoints.append(
        CheckpointRecord(
            index=index,
            dir_name=uploaded.dir_name,
            training_iteration=iteration,
            metrics=dict(row, checkpoint_dir_name=uploaded.dir_name),
            size_bytes=uploaded.size_bytes,
            files=uploaded.files,
        )
    )
    trial.next_checkpoint_index = index + 1


def build_experiment(root: str, src_root: Path) -> Experiment:
    """Trials A, B, C terminated; D errored before reporting; E pending, known to the driver only."""
    url = f"{root}/exp"
    store = open_store(url)
    store.write_definition(definition())
    trials: dict[str, TrialState] = {}
    for index, (name, losses) in enumerate(LOSSES.items()):
        trial = new_trial(name, index)
        rows = write_history(store, trial, losses)
        if name == "A":
            add_checkpoint(store, trial, rows[1], src_root)
            add_checkpoint(store, trial, rows[2], src_root)
        trials[name] = trial
    errored = new_trial("D", 3, TrialStatus.ERROR)
    errored.error, errored.error_type, errored.num_failures = "ValueError: boom", "ValueError", 1
    store.write_trial_text(errored.dir_name, "error.txt", TRACEBACK)
    trials["D"] = errored
    for trial in trials.values():
        store.write_trial(trial)
    trials["E"] = new_trial("E", 4, TrialStatus.PENDING)
    store.write_state(ExperimentState(name="exp", next_trial_index=5, trials=list(trials.values())))
    return Experiment(url, store, trials)


@pytest.fixture
def exp(root, tmp_path) -> Experiment:
    return build_experiment(root, tmp_path / "src")


@pytest.fixture
def grid(exp) -> ResultGrid:
    return ResultGrid(exp.store)


# -- the grid as a sequence --------------------------------------------------------------------


def test_results_in_trial_order(exp, grid):
    assert len(grid) == 5
    assert [r.trial_id for r in grid] == ["A", "B", "C", "D", "E"]
    assert grid[0].trial_id == "A" and grid[-1].trial_id == "E"
    assert [r.trial_id for r in grid[1:3]] == ["B", "C"]
    assert all(isinstance(r, Result) for r in grid)
    shuffled = ResultGrid(exp.store, trials=[exp.trials[n] for n in "ECADB"])
    assert [r.trial_id for r in shuffled] == ["A", "B", "C", "D", "E"]


def test_counts_and_paths(exp, grid):
    assert grid.num_terminated == 3
    assert grid.num_errors == 1
    assert grid.experiment_path == exp.url
    assert grid.filesystem is exp.store.storage.fs
    assert repr(grid) == (
        f"ResultGrid(experiment_path={exp.url!r}, num_trials=5, ERROR=1, PENDING=1, TERMINATED=3)"
    )


# -- one result ----------------------------------------------------------------------------------


def test_result_properties(exp, grid):
    a = grid[0]
    assert a.trial_id == "A"
    assert a.status is TrialStatus.TERMINATED
    assert a.config == {"lr": 0.1, "model": {"depth": 2}}
    assert a.metrics["loss"] == 0.9 and a.metrics["training_iteration"] == 3
    assert a.metrics["done"] is True
    assert a.path == f"{exp.url}/trials/trial_00000_A"
    assert a.filesystem.exists(exp.store.storage.full_path(layout.trial_file("trial_00000_A")))
    assert a.error is None
    with pytest.raises(AttributeError):
        a.config = {}  # type: ignore[misc]


def test_result_without_reports(grid):
    pending = grid[4]
    assert pending.status is TrialStatus.PENDING
    assert pending.metrics == {}
    assert pending.checkpoint is None and pending.best_checkpoints == []
    assert pending.metrics_dataframe.empty
    assert pending.error is None


def test_checkpoints_are_the_committed_ones(exp, grid, tmp_path):
    a = grid[0]
    kept = a.best_checkpoints
    assert [m["training_iteration"] for _, m in kept] == [2, 3]
    assert [m["loss"] for _, m in kept] == [0.9, 0.9]
    assert a.checkpoint == kept[-1][0]
    assert a.checkpoint.path == f"{a.path}/checkpoint_000001"
    target = Path(a.checkpoint.to_directory(str(tmp_path / "restored")))
    assert (target / "model.txt").read_text() == "A@3"
    assert (target / "sub" / "weights.bin").read_bytes() == bytes([3]) * 16
    assert not (target / layout.MANIFEST_FILE).exists()
    first = Path(kept[0][0].to_directory(str(tmp_path / "first")))
    assert (first / "model.txt").read_text() == "A@2"
    assert grid[1].checkpoint is None


def test_get_best_checkpoint(exp, tmp_path):
    trial = exp.trials["B"]
    rows = exp.store.read_history(trial)
    for row in rows:
        add_checkpoint(exp.store, trial, dict(row, score=row["training_iteration"] % 3), tmp_path)
    b = ResultGrid(exp.store, trials=list(exp.trials.values()))[1]
    assert b.get_best_checkpoint("score", "max").path.endswith("checkpoint_000001")
    assert b.get_best_checkpoint("score", "min").path.endswith("checkpoint_000002")
    with pytest.raises(MetricNotReportedError, match="'nope'"):
        b.get_best_checkpoint("nope", "max")
    with pytest.raises(ConfigError, match="mode"):
        b.get_best_checkpoint("score", "best")


def test_metrics_dataframe_is_the_flattened_history(grid):
    df = grid[2].metrics_dataframe
    assert list(df["training_iteration"]) == [1, 2, 3]
    assert list(df["loss"]) == LOSSES["C"]
    assert list(df["info/acc"]) == pytest.approx([0.2, 0.2, 0.6])


def test_error_of_failed_trial(grid):
    failed = grid[3]
    assert failed.status is TrialStatus.ERROR
    assert isinstance(failed.error, TrialError)
    assert str(failed.error) == "ValueError: boom"
    assert failed.error.traceback == TRACEBACK
    assert grid.errors == [failed.error]
    assert failed.metrics == {} and failed.checkpoint is None


def test_error_without_traceback_file(exp):
    exp.store.storage.delete(f"{layout.trial_dir('trial_00003_D')}/error.txt")
    error = ResultGrid(exp.store)[3].error
    assert error is not None and str(error) == "ValueError: boom"
    assert error.traceback is None


def test_result_repr_shows_user_metrics(exp, grid):
    text = repr(grid[0])
    assert text.startswith("Result(\n")
    assert "metrics={'loss': 0.9, 'info': {'acc': 0.1}, 'attempt': 1}" in text
    assert "hostname" not in text and "training_iteration" not in text
    assert f"path={grid[0].path!r}" in text
    assert "checkpoint=Checkpoint(path=" in text
    assert "error='ValueError: boom'" in repr(grid[3])


# -- best result ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "scope", "best"),
    [
        ("min", "last", "C"),
        ("min", "avg", "B"),
        ("min", "all", "A"),
        ("max", "last", "A"),
        ("max", "avg", "C"),
        ("max", "all", "A"),
    ],
)
def test_best_result_by_scope_and_mode(grid, mode, scope, best):
    assert grid.get_best_result(metric="loss", mode=mode, scope=scope).trial_id == best


def test_best_result_defaults_to_the_experiments_metric_and_mode(grid):
    assert grid.get_best_result().trial_id == "C"
    assert grid.get_best_result(mode="max").trial_id == "A"


def test_best_result_of_nested_metric(grid):
    assert grid.get_best_result(metric="info/acc", mode="max").trial_id == "C"


def test_best_result_last_k_avg(root):
    store = open_store(f"{root}/exp")
    store.write_definition(definition())
    # X is best over its last 5 results (1.0), Y over its last 10 (1.5), Z over all (1.0).
    histories = {
        "X": [0.0] * 5 + [3.0] * 5 + [1.0] * 5,
        "Y": [9.0] * 5 + [1.5] * 10,
        "Z": [-1.0] * 5 + [2.0] * 10,
    }
    trials = []
    for index, (name, losses) in enumerate(histories.items()):
        trial = new_trial(name, index)
        write_history(store, trial, losses)
        store.write_trial(trial)
        trials.append(trial)
    grid = ResultGrid(store)
    assert grid.get_best_result(scope="last-5-avg").trial_id == "X"
    assert grid.get_best_result(scope="last-10-avg").trial_id == "Y"
    assert grid.get_best_result(scope="avg").trial_id == "Z"
    assert grid.get_best_result(scope="last").trial_id == "X"


def test_best_result_scope_last_reads_no_history(exp):
    for trial in exp.trials.values():
        exp.store.storage.delete(layout.results_dir(trial.dir_name))
    grid = ResultGrid(exp.store)
    assert grid.get_best_result(scope="last").trial_id == "C"
    assert list(grid.get_dataframe()["loss"])[:3] == [0.9, 0.5, 0.4]
    # The other scopes do read histories, which are now gone.
    with pytest.raises(MetricNotReportedError):
        grid.get_best_result(scope="avg")


def nan_and_inf_experiment(root: str) -> ResultGrid:
    store = open_store(f"{root}/exp")
    store.write_definition(definition(mode="max"))
    histories = {"nan": [0.01, math.nan], "inf": [0.2, math.inf], "fine": [0.3, 0.5]}
    for index, (name, losses) in enumerate(histories.items()):
        trial = new_trial(name, index)
        write_history(store, trial, losses)
        store.write_trial(trial)
    return ResultGrid(store)


def test_best_result_skips_nan_and_inf(root):
    grid = nan_and_inf_experiment(root)
    assert grid.get_best_result().trial_id == "fine"
    assert grid.get_best_result(scope="avg").trial_id == "fine"
    assert grid.get_best_result(scope="avg", filter_nan_and_inf=False).trial_id == "inf"
    # "all" disregards the non-finite values themselves: each trial's best finite value counts.
    assert grid.get_best_result(mode="min", scope="all").trial_id == "nan"
    assert grid.get_best_result(mode="max", scope="all").trial_id == "fine"
    assert grid.get_best_result(mode="max", scope="all", filter_nan_and_inf=False).trial_id == "inf"


def test_nan_and_inf_survive_the_snapshot(root):
    grid = nan_and_inf_experiment(root)
    store = grid._store
    trials = [store.read_trial(r._trial.dir_name) for r in grid]
    store.write_state(ExperimentState(name="exp", next_trial_index=3, trials=trials))
    for trial in trials:  # the finished trials' summaries come from the snapshot alone
        assert trial is not None
        store.storage.delete(layout.trial_file(trial.dir_name))
    restored = ResultGrid(store)
    assert math.isnan(restored[0].metrics["loss"]) and restored[1].metrics["loss"] == math.inf
    assert restored.get_best_result().trial_id == "fine"
    assert restored.get_best_result(filter_nan_and_inf=False).trial_id == "inf"


def test_best_result_last_scope_sees_inf_without_filter(root):
    grid = nan_and_inf_experiment(root)
    assert grid.get_best_result(filter_nan_and_inf=False).trial_id == "inf"


def test_best_result_when_only_nan_was_reported(root):
    store = open_store(f"{root}/exp")
    store.write_definition(definition())
    for index in range(2):
        trial = new_trial(f"t{index}", index)
        write_history(store, trial, [math.nan])
        store.write_trial(trial)
    grid = ResultGrid(store)
    with pytest.raises(MetricNotReportedError, match="NaN or infinite") as info:
        grid.get_best_result()
    assert isinstance(info.value, PrefectTuneError)
    with pytest.raises(MetricNotReportedError):
        grid.get_best_result(scope="avg")
    assert grid.get_best_result(scope="avg", filter_nan_and_inf=False).trial_id == "t0"


def test_best_result_errors(exp, grid):
    with pytest.raises(MetricNotReportedError, match="'accuracy'"):
        grid.get_best_result(metric="accuracy")
    with pytest.raises(ConfigError, match="mode must be 'min' or 'max'"):
        grid.get_best_result(mode="best")
    with pytest.raises(ConfigError, match="scope must be one of"):
        grid.get_best_result(scope="first")
    exp.store.write_definition(definition(metric=None, mode=None))
    bare = ResultGrid(exp.store)
    with pytest.raises(ConfigError, match="no metric"):
        bare.get_best_result()
    with pytest.raises(ConfigError, match="no mode"):
        bare.get_best_result(metric="loss")
    assert bare.get_best_result(metric="loss", mode="min").trial_id == "C"


def test_best_result_of_a_single_trial_needs_no_metric(root):
    store = open_store(f"{root}/exp")
    store.write_definition(definition(metric=None, mode=None))
    trial = new_trial("only", 0)
    write_history(store, trial, [0.3])
    store.write_trial(trial)
    assert ResultGrid(store).get_best_result().trial_id == "only"


def test_best_result_of_an_empty_experiment(root):
    store = open_store(f"{root}/exp")
    store.write_definition(definition())
    grid = ResultGrid(store)
    assert len(grid) == 0
    with pytest.raises(MetricNotReportedError):
        grid.get_best_result()


# -- dataframe -----------------------------------------------------------------------------------


def test_dataframe_of_last_results(exp, grid):
    df = grid.get_dataframe()
    assert list(df["trial_id"]) == ["A", "B", "C", "D", "E"]
    assert list(df["status"]) == ["TERMINATED"] * 3 + ["ERROR", "PENDING"]
    assert list(df["loss"])[:3] == [0.9, 0.5, 0.4]
    assert df["loss"][3:].isna().all()
    assert list(df["info/acc"])[:3] == pytest.approx([0.1, 0.5, 0.6])
    assert list(df["training_iteration"])[:3] == [3, 3, 3]
    assert list(df["config/lr"]) == pytest.approx([0.1, 0.01, 0.001, 0.0001, 0.00001])
    assert list(df["config/model/depth"]) == [2, 3, 4, 5, 6]
    assert list(df["logdir"]) == [r.path for r in grid]
    assert list(df["path"]) == [r.path for r in grid]
    assert "config" not in df.columns and "info" not in df.columns


def test_dataframe_filtered_by_best_row(grid):
    best = grid.get_dataframe(filter_metric="loss", filter_mode="min")
    assert list(best["loss"])[:3] == [0.1, 0.5, 0.4]
    assert list(best["training_iteration"])[:3] == [1, 1, 3]
    worst = grid.get_dataframe(filter_metric="loss", filter_mode="max")
    assert list(worst["loss"])[:3] == [0.9, 0.5, 0.8]
    assert list(worst["training_iteration"])[:3] == [2, 1, 1]
    last = grid.get_dataframe(filter_metric="loss")
    assert list(last["training_iteration"])[:3] == [3, 3, 3]


def test_dataframe_errors(grid):
    with pytest.raises(ConfigError, match="filter_mode needs filter_metric"):
        grid.get_dataframe(filter_mode="min")
    with pytest.raises(ConfigError, match="mode must be"):
        grid.get_dataframe(filter_metric="loss", filter_mode="lowest")


def test_dataframe_of_an_empty_experiment(root):
    store = open_store(f"{root}/exp")
    store.write_definition(definition())
    df = ResultGrid(store).get_dataframe()
    assert df.empty and list(df.columns) == ["trial_id", "status", "logdir", "path"]


# -- what is read, and when ----------------------------------------------------------------------


def test_analysis_reads_only_small_files_until_asked(exp, storage_reads):
    reads = storage_reads
    grid = ResultGrid(exp.store)
    grid.get_best_result()
    grid.get_dataframe()
    _ = repr(grid), [repr(r) for r in grid], grid.errors, [r.best_checkpoints for r in grid]
    assert reads and all(
        rel in (layout.EXPERIMENT_FILE, layout.EXPERIMENT_STATE_FILE) or rel.endswith("trial.json")
        for rel in reads
    ), reads

    reads.clear()
    assert len(grid[2].metrics_dataframe) == 3
    assert reads == [layout.result_segment("trial_00002_C", 1, 1)]
    reads.clear()
    _ = grid[2].metrics_dataframe
    grid.get_best_result(scope="avg")  # C's history is cached; the others are read once
    grid.get_best_result(scope="all")
    assert sorted(reads) == [
        layout.result_segment("trial_00000_A", 1, 1),
        layout.result_segment("trial_00001_B", 1, 1),
    ]
    reads.clear()
    assert grid[3].error is not None and reads == []
    assert grid[3].error.traceback == TRACEBACK
    assert grid[3].error.traceback == TRACEBACK
    assert reads == ["trials/trial_00003_D/error.txt"]


# -- history across attempts ---------------------------------------------------------------------


def test_history_after_resume_has_each_iteration_once(root):
    store = open_store(f"{root}/exp")
    store.write_definition(definition())
    trial = new_trial("R", 0)
    write_history(store, trial, [1.0, 0.9, 0.8, 0.7, 0.6], attempt=1)
    # Attempt 2 resumed from the checkpoint at iteration 3: its rows replace 4 and 5.
    trial.attempts.append(AttemptRecord(attempt=2, start_iteration=3, resumed_from="checkpoint_0"))
    write_history(store, trial, [0.5, 0.4], attempt=2, seq=1, first_iteration=4)
    write_history(store, trial, [0.3], attempt=2, seq=2, first_iteration=6)
    store.write_trial(trial)
    df = ResultGrid(store)[0].metrics_dataframe
    assert list(df["training_iteration"]) == [1, 2, 3, 4, 5, 6]
    assert list(df["attempt"]) == [1, 1, 1, 2, 2, 2]
    assert list(df["loss"]) == [1.0, 0.9, 0.8, 0.5, 0.4, 0.3]


# -- rebuilding from storage alone ---------------------------------------------------------------


def test_from_path_on_a_fresh_process(exp, monkeypatch):
    monkeypatch.setattr(Storage, "_cache", {})
    grid = ResultGrid.from_path(exp.url)
    assert grid.experiment_path == exp.url
    assert [r.trial_id for r in grid] == ["A", "B", "C", "D", "E"]
    assert grid.get_best_result().trial_id == "C"
    assert grid.get_best_result(scope="all").trial_id == "A"
    assert grid[3].error is not None and grid[3].error.traceback == TRACEBACK
    assert grid.get_dataframe().shape == ResultGrid(exp.store).get_dataframe().shape


def test_from_path_with_a_storage_block(exp, root):
    block = TuneStorage(storage_path=root)
    by_name = ResultGrid.from_path("exp", storage=block)
    assert by_name.experiment_path == exp.url
    assert len(by_name) == 5
    assert len(ResultGrid.from_path(exp.url, storage=block)) == 5
    with pytest.raises(ConfigError, match="not both"):
        ResultGrid.from_path("exp", storage=block, storage_options={"anon": True})


def test_from_path_where_nothing_is_stored(root):
    with pytest.raises(ExperimentNotFoundError):
        ResultGrid.from_path(f"{root}/missing")


def test_pickled_grid_reopens_its_storage(exp, grid):
    restored = pickle.loads(pickle.dumps(grid))
    assert [r.trial_id for r in restored] == ["A", "B", "C", "D", "E"]
    assert restored.experiment_path == exp.url
    assert restored.get_best_result(scope="avg").trial_id == "B"
    assert restored[3].error.traceback == TRACEBACK
    error = pickle.loads(pickle.dumps(grid[3].error))
    assert isinstance(error, TrialError) and error.traceback == TRACEBACK


def test_a_grid_reads_trial_details_only_when_asked(exp, monkeypatch, storage_reads):
    reads = storage_reads
    monkeypatch.setattr(Storage, "_cache", {})
    grid = ResultGrid.from_path(exp.url)
    best = grid.get_best_result()
    assert (best.trial_id, best.config, best.metrics["loss"]) == ("C", exp.trials["C"].config, 0.4)
    a = grid[0]
    assert a.checkpoint is not None and a.checkpoint.path == f"{a.path}/checkpoint_000001"
    _ = grid.get_dataframe(), grid.num_errors, grid.num_terminated, repr(grid), grid.errors
    # The snapshot names each trial's latest checkpoint: no trial.json was needed so far. The
    # pending trial E has a trial directory of its own neither: nothing unfinished was read.
    assert reads == [layout.EXPERIMENT_FILE, layout.EXPERIMENT_STATE_FILE]

    reads.clear()
    assert [m["training_iteration"] for _, m in a.best_checkpoints] == [2, 3]
    assert [m["training_iteration"] for _, m in a.best_checkpoints] == [2, 3]
    assert reads == [layout.trial_file("trial_00000_A")]


def test_a_grid_over_a_schema_version_1_snapshot(root):
    from tests.conformance.test_store import V1_SNAPSHOT

    store = open_store(f"{root}/v1")
    store.write_definition(definition())
    store.storage.write_bytes(layout.EXPERIMENT_STATE_FILE, V1_SNAPSHOT.encode())
    grid = ResultGrid.from_path(f"{root}/v1")
    assert [(r.trial_id, r.status) for r in grid] == [
        ("abcde_00000", TrialStatus.TERMINATED),
        ("abcde_00001", TrialStatus.ERROR),
    ]
    assert grid[0].metrics["loss"] == 3.0 and grid[0].config == {"fail_at": None, "steps": 3}
    assert grid[0].checkpoint is not None
    assert grid[0].checkpoint.path == f"{grid[0].path}/checkpoint_000002"
    assert str(grid[1].error) == "ValueError: boom at step 3"
    assert grid.get_best_result(mode="max").trial_id == "abcde_00000"


def test_a_grid_holds_each_trial_compactly(root):
    """About the size of the trial's summary in the snapshot (here ~450 bytes), not the
    several KiB of a parsed TrialState."""
    import gc
    import tracemalloc

    store = open_store(f"{root}/many")
    store.write_definition(definition())
    trials = []
    for index in range(1000):
        trial = new_trial(f"t{index}", index)
        trial.last_result = {
            "loss": 1.0 / (index + 1),
            "accuracy": 0.5,
            "training_iteration": 5,
            "trial_id": trial.trial_id,
            "date": "2026-01-01_00-00-00",
            "time_total_s": 2.6,
            "hostname": "worker-1",
            "done": True,
        }
        trials.append(trial)
    store.write_state(ExperimentState(name="exp", next_trial_index=1000, trials=trials))
    del trials
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        grid = ResultGrid(store)
        assert grid.get_best_result().trial_id == "t999"
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(grid) == 1000
    assert held / 1000 < 1024, f"{held / 1000:.0f} bytes a trial"
