"""Progress snapshots (`prefect_tune.engine.Progress`) and the controller handing them out."""

from __future__ import annotations

import uuid

import pytest

from prefect_tune.engine import Progress, ProgressTracker
from prefect_tune.state import TrialState, TrialStatus
from tests import trainables
from tests._experiment_store import make_controller


def a_finished(index: int, loss: float | None, status: TrialStatus = TrialStatus.TERMINATED):
    return TrialState(
        trial_id=f"abcde_{index:05d}",
        index=index,
        dir_name=f"t_{index}",
        config={"x": index},
        status=status,
        last_result=None if loss is None else {"loss": loss},
    )


@pytest.mark.parametrize(("mode", "best"), [("min", "abcde_00001"), ("max", "abcde_00002")])
def test_the_best_finished_trial_is_kept_as_trials_finish(mode, best):
    tracker = ProgressTracker("exp", total=4, metric="loss", mode=mode)
    for trial in (
        a_finished(0, 0.5),
        a_finished(1, 0.1),
        a_finished(2, 0.9),
        a_finished(3, None, TrialStatus.ERROR),  # reported nothing: never the best
    ):
        tracker.finished(trial)
    progress = tracker.snapshot({TrialStatus.TERMINATED: 3, TrialStatus.ERROR: 1}, done=True)
    assert progress.best_trial_id == best
    assert progress.best_config == {"x": int(best[-1])}
    assert progress.finished == 4 and progress.remaining_s is None
    assert progress.line().startswith("exp: 4/4 finished (1 errored) | best loss=")


def test_the_time_left_is_estimated_from_this_runs_rate():
    progress = Progress(
        "exp",
        total=10,
        counts={TrialStatus.TERMINATED: 6, TrialStatus.RUNNING: 2, TrialStatus.PENDING: 2},
        elapsed_s=40.0,
        finished_here=4,  # two finished before this run
    )
    assert progress.remaining_s == pytest.approx(40.0)  # 10 s a trial, 4 left
    line = progress.line()
    assert line == "exp: 6/10 finished, 2 running, 2 pending | 40s elapsed, ~40s left"
    assert Progress("e", None, {}, 3700.0).line() == "e: 0/? finished | 1h01m elapsed"


class Recorder:
    """An observer that keeps every snapshot it is handed."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.seen: list[Progress] = []
        self.rows: list[int] = []

    def on_progress(self, progress, trials):
        self.seen.append(progress)
        if progress.done:
            self.rows = [t.index for t in trials()]


class Failing:
    interval_s = 0.0

    def on_progress(self, progress, trials):
        raise RuntimeError("the UI is down")


def test_the_controller_shows_observers_the_start_and_the_end_and_survives_one_that_fails():
    _, controller = make_controller(
        f"memory://progress-{uuid.uuid4().hex}",
        trainables.quadratic,
        {"x": {"grid_search": [1.0, 2.0, 3.0]}, "steps": 2},
    )
    every, seldom = Recorder(0.0), Recorder(3600.0)
    controller.observers = [Failing(), every, seldom]
    rows = controller.run()
    assert [r.status for r in rows] == [TrialStatus.TERMINATED] * 3
    # The seldom one: the start and the end only.
    assert [p.done for p in seldom.seen] == [False, True]
    assert seldom.seen[0].finished == 0
    end = seldom.seen[-1]
    assert end.counts == {TrialStatus.TERMINATED: 3} and end.finished_here == 3
    # loss = (x - 3) ** 2 / step: x = 3, the last trial, is the best.
    assert end.best_trial_id == rows[2].unpack().trial_id
    assert seldom.rows == [0, 1, 2]
    assert every.seen[0].finished == 0 and every.seen[-1].done
