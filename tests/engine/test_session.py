"""A trial's session on its worker (`prefect_tune.engine.TrialSession`), over every backend:
what ``report()`` commits, carries and flushes, and what a trial whose driver lost the
experiment no longer writes."""

from __future__ import annotations

import pytest

import prefect_tune as tune
from prefect_tune.checkpoint import Checkpoint
from prefect_tune.engine import CARRIED_ROWS_MAX, Decision
from prefect_tune.state import AttemptRecord, TrialStatus
from prefect_tune.storage import layout
from tests import trainables
from tests._experiment_store import (
    a_definition,
    a_session,
    a_trial,
    hold_lease,
    make_checkpoint_dir,
    run_in,
)


def test_a_trial_whose_experiment_was_taken_over_commits_no_further_checkpoint(store, tmp_path):
    # Driver A submitted the trial; before its third checkpoint, driver B takes the experiment
    # over. With a fence interval of 0 every commit reads the lease: the commit of step 3 is the
    # check under test.
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


@pytest.mark.parametrize("ending", ["results written", "trainable raised"])
def test_a_trial_taken_over_writes_no_state_at_a_flush_or_a_failure(store, ending):
    # Driver B takes the experiment over before the trial's third report. Neither the write of
    # the trial's state that a due flush of its results makes, nor the record of the error its
    # trainable then raises, may land on B's trial: each reads the lease first (a fence
    # interval of 0: every write reads it).

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
