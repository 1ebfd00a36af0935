"""Schedulers and Stoppers resumed exactly after the driver is SIGKILLed (issue 14).

The crash suite's experiment (8 trials x 12 iterations of ``crash_trainable``, a checkpoint
after each, two Dask workers) run with ``ASHAScheduler(max_t=12, grace_period=1,
reduction_factor=3)``, ``MedianStoppingRule(grace_period=3, min_samples_required=2)`` or
``MaximumIterationStopper(5)``, and killed at chosen points: right after a STOP was stored,
right after a rung decision to go on was stored. After the last run, what must hold is checked
from the stored state (``decisions.json``, the trials' histories) and the trainable's side log:

- exactly the 8 trials asked for, all TERMINATED;
- a trial stopped at a kill stays stopped, at the same iteration, and never ran again;
- every rung as stored at a kill is a prefix of the rung at the end (no rung decision undone,
  none taken twice), and the final rungs replay: each trial's decision at each rung is what
  the rung's earlier records give, so no trial was stopped for a rung it had passed;
- with a scheduler, a trial waits at each of its decision points until the decision is stored
  and back: its history ends exactly at the iteration that stopped it, and no iteration past a
  decision point ever ran before its decision (side log).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from prefect_tune.testing.side_log import read_side_log
from tests.crash.harness import (
    CrashExperiment,
    KillPoint,
    Observed,
    local_backend,
    result_grid,
    unique_name,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DECISIONS = "decisions.json"
TRIALS, ITERATIONS = 8, 12
ASHA_MILESTONES = (1.0, 3.0, 9.0)  # grace_period * 3 ** k below max_t = 12
REDUCTION = 3


def _desk(seen: Observed) -> dict[str, Any] | None:
    document = seen.view.read_json(DECISIONS, seen.files.get(DECISIONS))
    return document["data"] if document else None


def _records(desk: dict[str, Any] | None) -> int:
    if not desk or not desk["scheduler"] or "rungs" not in desk["scheduler"]["data"]:
        return 0
    rungs = desk["scheduler"]["data"]["rungs"]
    return sum(len(rung["recorded"]) for bracket in rungs for rung in bracket)


class StopStored(KillPoint):
    """A trial more is stopped in ``decisions.json`` than when the driver started."""

    name = "stop-stored"

    def start(self, baseline: Any) -> None:
        super().start(baseline)
        self.before: int | None = None

    def reached(self, seen: Observed, driver: Any) -> bool:
        desk = _desk(seen)
        stopped = len(desk["stopped"]) if desk else 0
        if self.before is None:
            self.before = stopped
        return stopped > self.before


class RungPassedStored(KillPoint):
    """A new rung record in ``decisions.json`` with no new stop: a decision to go on."""

    name = "rung-passed-stored"

    def start(self, baseline: Any) -> None:
        super().start(baseline)
        self.before: tuple[int, int] | None = None

    def reached(self, seen: Observed, driver: Any) -> bool:
        desk = _desk(seen)
        now = (_records(desk), len(desk["stopped"]) if desk else 0)
        if self.before is None:
            self.before = now
            return False
        if now[1] > self.before[1]:
            self.before = now  # a stop: wait for a rung passed after it
            return False
        return now[0] > self.before[0]


def run_with_kills(
    exp: CrashExperiment, points: list[tuple[KillPoint, str]]
) -> list[dict[str, Any]]:
    """Kills the experiment at each point in turn, then runs it to its end; returns the
    stored desk state at each kill."""
    at_kills = []
    for point, mode in points:
        kill = exp.run_to_kill(point, mode)
        assert kill is not None, f"the experiment finished before {point}"
        desk = _desk(exp.observe())
        assert desk is not None, f"no decisions stored at {point}"
        at_kills.append(desk)
    exp.run_to_end()
    return at_kills


def check_common(exp: CrashExperiment, at_kills: list[dict[str, Any]]) -> dict[str, Any]:
    """What every case must show; returns the final desk state."""
    summary = exp.summary
    assert summary is not None and summary["num_errors"] == 0, summary
    grid = result_grid(exp)
    assert len(grid) == TRIALS and grid.num_terminated == TRIALS
    final = _desk(exp.observe())
    assert final is not None
    for desk, kill in zip(at_kills, exp.kills, strict=True):
        logged = kill.side_log_lengths
        for trial_id in desk["stopped"]:
            where = f"trial {trial_id}, stopped at the kill at {kill.point} ({kill.mode})"
            assert trial_id in final["stopped"], where
            assert final["stopped_at"][trial_id] == desk["stopped_at"][trial_id], where
            later = read_side_log(exp.side_log, trial_id)[logged.get(trial_id, 0) :]
            assert not later, f"{where}: it ran again: {later}"
    return final


def histories(exp: CrashExperiment) -> dict[str, int]:
    return {r.trial_id: len(r.metrics_dataframe) for r in result_grid(exp)}


def check_waited_at_points(exp: CrashExperiment, final: dict[str, Any]) -> None:
    """With a scheduler's decision points, a stopped trial's history ends at the very
    iteration that stopped it, and it never ran an iteration past it (side log)."""
    lengths = histories(exp)
    assert set(final["stopped"]) == set(lengths), (final["stopped"], lengths)
    for trial_id, rows in lengths.items():
        stopped_at = final["stopped_at"][trial_id]
        assert rows == stopped_at, f"trial {trial_id}: {rows} rows, stopped at {stopped_at}"
        ran = [e["iteration"] for e in read_side_log(exp.side_log, trial_id) if e["event"] == "run"]
        assert max(ran) == stopped_at, f"trial {trial_id} ran {ran}, stopped at {stopped_at}"


def replay_rung(recorded: dict[str, float]) -> dict[str, bool]:
    """Trial -> stopped at this rung, from the rung's records in the order they were made."""
    out, seen = {}, []
    for trial_id, score in recorded.items():
        values = np.array(seen, dtype=float)
        cutoff = None if not seen else float(np.nanpercentile(values, (1 - 1 / REDUCTION) * 100))
        out[trial_id] = cutoff is not None and score < cutoff
        seen.append(score)
    return out


@pytest.fixture
def experiment(crash_env, tmp_path):
    def make(*args: str) -> CrashExperiment:
        work = tmp_path / "work"
        work.mkdir()
        return CrashExperiment(
            unique_name("decisions"), local_backend(tmp_path / "store"), work, crash_env, list(args)
        )

    return make


def test_asha_resumes_exactly_after_sigkill(experiment):
    exp = experiment("--scheduler", "asha")
    at_kills = run_with_kills(
        exp,
        [
            (StopStored(), "group"),
            (RungPassedStored(), "driver"),
            (RungPassedStored(), "group"),
        ],
    )
    final = check_common(exp, at_kills)
    check_waited_at_points(exp, final)
    (bracket,) = final["scheduler"]["data"]["rungs"]
    rungs = {rung["milestone"]: rung["recorded"] for rung in bracket}
    assert sorted(rungs) == list(ASHA_MILESTONES)
    # Rung records are never undone, changed or made twice: each stored at a kill is a
    # prefix of the final one, in the same order.
    for desk in at_kills:
        for rung in desk["scheduler"]["data"]["rungs"][0]:
            then = list(rung["recorded"].items())
            assert list(rungs[rung["milestone"]].items())[: len(then)] == then, rung
    # The final rungs replay: a trial stopped at a rung was stopped by that rung's records
    # before it; a trial that passed a rung was not stopped for it (it stopped higher up).
    for milestone, recorded in rungs.items():
        for trial_id, stopped_here in replay_rung(recorded).items():
            stopped_at = final["stopped_at"][trial_id]
            if stopped_here:
                assert stopped_at == milestone, (trial_id, milestone, stopped_at)
            else:
                assert stopped_at > milestone, (trial_id, milestone, stopped_at)
    # Stopped early, or at max_t: all 8 trials, once each. The total of iterations is what
    # an uncrashed run gives for the same order of rung arrivals (the replay above), and
    # exactly the stored rows (check_waited_at_points); which trials reach a rung first
    # varies from run to run, crash or not, so the total is not compared with another run.
    stopped_at = sorted(final["stopped_at"].values())
    assert len(stopped_at) == TRIALS and stopped_at[-1] == ITERATIONS
    assert stopped_at[0] < ITERATIONS, stopped_at
    print(f"ASHA after {len(exp.kills)} kills: stopped at {stopped_at}, {sum(stopped_at)} rows")
    best = result_grid(exp).get_best_result()
    assert best.config["x"] == 3.0


def test_median_stopping_rule_resumes_exactly_after_sigkill(experiment):
    exp = experiment("--scheduler", "median")
    at_kills = run_with_kills(exp, [(StopStored(), "group")])
    final = check_common(exp, at_kills)
    stopped = {t for t in final["stopped"] if final["stopped_at"][t] < ITERATIONS}
    assert stopped, final["stopped_at"]
    lengths = histories(exp)
    for trial_id, rows in lengths.items():
        ran = [e["iteration"] for e in read_side_log(exp.side_log, trial_id) if e["event"] == "run"]
        if trial_id in stopped:  # stopped at a report it waited at: never ran past it
            assert rows == max(ran) == final["stopped_at"][trial_id], (trial_id, rows, ran)
        else:
            assert rows == ITERATIONS, (trial_id, rows)
    # The rule's record of each trial, as stored at the kill, is a prefix of the final one.
    results = final["scheduler"]["data"]["results"]
    for desk in at_kills:
        for trial_id, rows in desk["scheduler"]["data"]["results"].items():
            assert results[trial_id][: len(rows)] == rows, trial_id


def test_a_stopper_resumes_exactly_after_sigkill(experiment):
    exp = experiment("--stop-iter", "5")
    at_kills = run_with_kills(exp, [(StopStored(), "group")])
    final = check_common(exp, at_kills)
    assert sorted(final["stopped"]) == sorted(histories(exp))
    assert set(final["stopped_at"].values()) == {5.0}
    # A Stopper has no decision points: its STOP reaches the trial at a later report, so
    # a trial may report after its 5th (never fewer than 5, never all 12).
    for trial_id, rows in histories(exp).items():
        assert 5 <= rows < ITERATIONS, (trial_id, rows)
    counts = final["stopper"]["data"]["count"]
    assert set(counts) == set(final["stopped"])
