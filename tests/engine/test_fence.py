"""The fence (`prefect_tune.engine.ExperimentFence`, `CommitFence`): a trial reads its
experiment's lease at results and commit points, and stops writing once another driver holds it.
"""

from __future__ import annotations

import time

import pytest

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.engine import CommitFence, Decision, ExperimentFence, TrialStopped
from prefect_tune.state import AttemptRecord, Lease
from prefect_tune.storage import layout
from tests._experiment_store import a_session, a_trial, hold_lease, make_checkpoint_dir


def test_the_experiment_fence_abandons_once_another_driver_holds_the_lease(store):
    fence = ExperimentFence(store.storage, "driver-a", interval_s=3600.0)
    assert fence.check() is Decision.CONTINUE  # no lease stored yet
    hold_lease(store, "driver-a")
    assert fence.check() is Decision.CONTINUE
    # Within the interval a result reads nothing; check() always reads.
    hold_lease(store, "driver-b")
    assert fence.on_result("t", {}) is Decision.CONTINUE
    assert fence.check() is Decision.ABANDON
    hold_lease(store, "driver-a")  # lost for good: a lease back in A's name changes nothing
    assert fence.check() is Decision.ABANDON
    assert fence.on_result("t", {}) is Decision.ABANDON


def test_the_experiment_fence_pauses_when_the_driver_asks_running_trials_to_stop(store):
    lease = Lease(owner="driver-a", host="h", pid=1, stop_trials=True)
    store.storage.write_bytes(layout.LEASE_FILE, lease.model_dump_json().encode())
    fence = ExperimentFence(store.storage, "driver-a", interval_s=0.0)
    assert fence.on_result("t", {}) is Decision.PAUSE
    # An unreadable lease (being rewritten, damaged) is not a decision: the next read tells.
    store.storage.write_bytes(layout.LEASE_FILE, b"{not json")
    assert ExperimentFence(store.storage, "driver-a", 0.0).check() is Decision.CONTINUE


def test_a_commit_fence_read_stands_for_its_window_and_an_abandon_never_counts():
    answers = [Decision.CONTINUE, Decision.ABANDON, Decision.CONTINUE]
    reads: list[Decision] = []

    def read() -> Decision:
        reads.append(answers[len(reads)])
        return reads[-1]

    fence = CommitFence(read, window_s=3600.0)
    assert not fence.read_within(3600.0)
    assert fence.at_commit() is Decision.CONTINUE  # no read yet: reads
    assert fence.at_commit() is Decision.CONTINUE  # within the window: no read
    assert len(reads) == 1
    short = CommitFence(read, window_s=0.0)
    assert short.at_commit() is Decision.ABANDON
    assert not short.read_within(3600.0)  # a read that found the lease lost proves nothing
    time.sleep(0.01)
    assert short.at_commit() is Decision.CONTINUE
    assert len(reads) == 3


@pytest.mark.parametrize("window_s", [0.0, 3600.0])
def test_the_lease_is_read_again_after_an_upload_that_outlasts_the_fence_window(
    store, tmp_path, window_s
):
    # The lease is read while a checkpoint uploads. Here driver B takes the experiment over
    # right after that read: an upload longer than the window (0 s: any upload) has the lease
    # read again before the commit point, which B's lease then stops. Within the window the
    # first read stands and the checkpoint commits; B starts no trial for a whole fence
    # interval, twice the window.
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

    session = a_session(store, trial, CommitFence(read_then_lose_the_lease, window_s))
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
    trial = a_trial().model_copy(update={"attempts": [AttemptRecord(attempt=1)]})
    store.write_trial(trial)
    reads: list[float] = []

    def count_reads() -> Decision:
        reads.append(0.0)
        return Decision.CONTINUE

    session = a_session(store, trial, CommitFence(count_reads, window_s))
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
