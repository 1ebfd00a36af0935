"""OptunaSearch resumed after its driver is SIGKILLed: the experiment ends with exactly the
trials asked for, no suggestion repeated and none lost, checked from the stored state and the
trainable's side log.

The experiment is 8 trials x 12 iterations of the crash suite's trainable with ``x`` drawn by
``OptunaSearch(seed=0)`` (``python -m tests.crash.driver --search optuna``). Among the kill
points is the window the search record exists for: a suggestion stored in ``search.json``
whose trial has no directory yet (submitted, or about to be, not started).
"""

from __future__ import annotations

from typing import Any

import pytest

from prefect_tune.testing.side_log import expected_metrics
from tests.crash.checks import check_checkpoints, check_flow_runs, check_side_log, history_rows
from tests.crash.harness import (
    CrashExperiment,
    Driver,
    KillPoint,
    Observed,
    StateSave,
    TrialFinished,
    TrialStarted,
    result_grid,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRIALS = 8
ITERATIONS = 12
SEARCH = "search.json"


class SuggestedNotStarted(KillPoint):
    """``search.json`` holds a suggestion whose trial has not started (no ``trial.json``)."""

    name = "suggested-not-started"

    def _record(self, seen: Observed) -> dict[str, Any] | None:
        return seen.view.read_json(SEARCH, seen.files.get(SEARCH)) if SEARCH in seen.files else None

    def _pending(self, seen: Observed) -> list[str]:
        record = self._record(seen)
        if not record:
            return []
        started = {t["trial_id"] for t in seen.trials().values()}
        return [trial_id for _, trial_id, _ in record["suggested"] if trial_id not in started]

    def start(self, baseline: Any) -> None:
        super().start(baseline)
        self.pending: list[str] = []
        self.before: set[str] | None = None

    def reached(self, seen: Observed, driver: Driver) -> bool:
        if self.before is None:  # the first look, as the driver starts: nothing of its own yet
            record = self._record(seen)
            self.before = {t for _, t, _ in record["suggested"]} if record else set()
        # A suggestion made by this driver, whose trial has not started.
        return bool(set(self._pending(seen)) - self.before)

    def confirm(self, seen: Observed) -> bool:
        assert self.before is not None
        self.pending = [t for t in self._pending(seen) if t not in self.before]
        return bool(self.pending)


CHOSEN = [
    (TrialStarted, "group"),
    (SuggestedNotStarted, "group"),
    (TrialFinished, "driver"),
    (SuggestedNotStarted, "driver"),
    (StateSave, "group"),
]


def test_optuna_search_resumes_exactly_after_sigkill(crash_env, backend, tmp_path):
    """On local storage and on S3 (moto): the ``backend`` fixture."""
    from tests.crash.harness import unique_name

    exp = CrashExperiment(
        unique_name("crash-optuna"),
        backend,
        tmp_path / "work",
        crash_env,
        extra_args=["--search", "optuna", "--trials", str(TRIALS)],
    )
    records_at_kill: list[tuple[str, dict[str, Any] | None]] = []
    for point_class, mode in CHOSEN:
        point = point_class()
        kill = exp.run_to_kill(point, mode)
        assert kill is not None, f"the experiment finished before {point_class.name}"
        record = exp.view.read_json(SEARCH)
        records_at_kill.append((kill.point, record))
        # Recorded before dispatch: every trial that had started at the kill was in the
        # search record, with the config it runs.
        recorded = {t: c for _, t, c in (record or {"suggested": []})["suggested"]}
        for trial in kill.trials.values():
            assert recorded.get(trial["trial_id"]) == trial["config"], (kill.point, trial)
        if isinstance(point, SuggestedNotStarted):
            assert point.pending, "the kill missed the window"
    exp.run_to_end()
    check_search_experiment(exp, records_at_kill)


def check_search_experiment(
    exp: CrashExperiment, records_at_kill: list[tuple[str, dict[str, Any] | None]]
) -> None:
    summary = exp.summary
    assert summary is not None and summary["num_errors"] == 0, summary
    assert summary["num_terminated"] == TRIALS, summary
    grid = result_grid(exp)
    # Exactly num_samples trials, indices 0..7, each with an exact history for its own x.
    assert len(grid) == TRIALS and grid.num_terminated == TRIALS
    trials = {t["trial_id"]: t for t in exp.observe().trials().values()}
    assert sorted(t["index"] for t in trials.values()) == list(range(TRIALS))
    for result in grid:
        x = result.config["x"]
        where = f"trial {result.trial_id} (x={x})"
        want = [
            {"training_iteration": i + 1, **m}
            for i, m in enumerate(expected_metrics(x, ITERATIONS))
        ]
        assert history_rows(result) == want, where
        check_checkpoints(exp, trials[result.trial_id], where)
        check_side_log(exp, trials[result.trial_id], where)
    # The trainable ran for these trials and no other: no suggestion ran without being kept.
    assert {p.stem for p in exp.side_log.iterdir()} == set(trials)

    record = exp.view.read_json(SEARCH)
    suggested = record["suggested"]
    assert [i for i, _, _ in suggested] == list(range(TRIALS))
    by_index = {t["index"]: t for t in trials.values()}
    for index, trial_id, config in suggested:
        assert by_index[index]["trial_id"] == trial_id
        assert by_index[index]["config"] == config
    xs = [config["x"] for _, _, config in suggested]
    assert len(set(xs)) == TRIALS, f"a suggestion was made twice: {xs}"
    # Every suggestion stored at a kill was kept as it was, never made again.
    for point, at_kill in records_at_kill:
        if at_kill is None:
            continue
        kept = suggested[: len(at_kill["suggested"])]
        assert kept == at_kill["suggested"], f"suggestions stored at the kill at {point} changed"
    # The study rebuilt on each restore knows every trial once, with its final result.
    study = record["searcher"]["data"]["trials"]
    assert sorted(t["trial_id"] for t in study) == sorted(trials)
    assert sorted(t["number"] for t in study) == list(range(TRIALS))
    finals = {r.trial_id: r.metrics["loss"] for r in grid}
    for entry in study:
        assert entry["state"] == "COMPLETE", entry
        assert entry["value"] == finals[entry["trial_id"]], entry
    assert sorted(record["told"]) == sorted(trials)
    state = exp.view.read_json("experiment_state.json")
    assert state["finished"]
    check_flow_runs(exp, state)
