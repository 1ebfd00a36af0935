"""What must hold once a crashed experiment has been resumed to its end (DESIGN promises 1-5).

Each check compares the experiment with the reference run (the same experiment without faults)
and with what storage and the side logs held at each kill (:class:`~tests.crash.harness.Kill`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from prefect_tune.testing import flow_runs_named
from prefect_tune.testing.side_log import expected_metrics, read_side_log
from tests.crash.harness import CrashExperiment, result_grid

USER_METRICS = ("loss", "score", "step")


@dataclass(frozen=True)
class Reference:
    """The experiment run once without faults.

    Attributes:
        duration_s: From starting the driver process to its exit.
        final: ``x`` -> the trial's last user metrics.
        history: ``x`` -> ``[{training_iteration, loss, score, step}, ...]``.
    """

    duration_s: float
    final: dict[float, dict[str, Any]]
    history: dict[float, list[dict[str, Any]]]


def history_rows(result: Any) -> list[dict[str, Any]]:
    frame = result.metrics_dataframe
    return [
        {k: row[k] for k in ("training_iteration", *USER_METRICS)}
        for row in frame.to_dict("records")
    ]


def load_reference(exp: CrashExperiment, duration_s: float, iterations: int) -> Reference:
    grid = result_grid(exp)
    final = {r.config["x"]: {k: r.metrics[k] for k in USER_METRICS} for r in grid}
    history = {r.config["x"]: history_rows(r) for r in grid}
    for x, rows in history.items():  # the reference itself is what the formula says
        want = expected_metrics(x, iterations)
        assert rows == [{"training_iteration": i + 1, **m} for i, m in enumerate(want)], x
    return Reference(duration_s=duration_s, final=final, history=history)


def check_experiment(
    exp: CrashExperiment,
    reference: Reference,
    *,
    failed_trials: frozenset[float] = frozenset(),
    unchecked: frozenset[float] = frozenset(),
) -> None:
    """Everything a user and the promises expect of ``exp`` after its last run.

    Args:
        exp: The experiment, after :meth:`CrashExperiment.run_to_end`.
        reference: The same experiment without faults.
        failed_trials: ``x`` of the trials whose task runs failed (and were retried); every
            other trial must show no failure...
        unchecked: ...except these, whose failure count is not checked.
    """
    summary = exp.summary
    assert summary is not None, "the experiment never finished"
    assert summary["num_errors"] == 0 and summary["num_terminated"] == len(reference.final), summary
    grid = result_grid(exp)
    trials = exp.observe().trials()
    by_id = {t["trial_id"]: t for t in trials.values()}
    assert len(grid) == len(reference.final) and grid.num_terminated == len(grid)
    assert grid.get_best_result().config["x"] == 3.0
    for result in grid:
        x = result.config["x"]
        trial = by_id[result.trial_id]
        where = f"trial {result.trial_id} (x={x}) of {exp.name}"
        # Ended exactly as in the reference run, with an exact history (promise 3).
        assert result.status.value == "TERMINATED", where
        assert {k: result.metrics[k] for k in USER_METRICS} == reference.final[x], where
        assert history_rows(result) == reference.history[x], where
        failures = trial["num_failures"]
        if x in failed_trials:
            assert failures >= 1, f"{where}: its failure was not counted"
        elif x not in unchecked:
            assert failures == 0, f"{where}: {failures} failures counted: {trial['error']}"
        check_checkpoints(exp, trial, where)
        check_side_log(exp, trial, where)
    state = exp.view.read_json("experiment_state.json")
    assert state["finished"] and all(t["status"] == "TERMINATED" for t in state["trials"])
    check_flow_runs(exp, state)


def check_checkpoints(exp: CrashExperiment, trial: dict[str, Any], where: str) -> None:
    """Only committed checkpoints remain, each whole (promise 1)."""
    seen = exp.observe()
    prefix = f"trials/{trial['dir_name']}/"
    stored = {
        d[len(prefix) :]: files
        for d, files in seen.checkpoint_dirs().items()
        if d.startswith(prefix)
    }
    listed = [c["dir_name"] for c in trial["checkpoints"]]
    assert sorted(stored) == sorted(listed), f"{where}: stored {sorted(stored)}, listed {listed}"
    for record in trial["checkpoints"]:
        name = record["dir_name"]
        sizes = {
            rel[len(f"{prefix}{name}/") :]: stamp[-1]
            for rel, stamp in seen.files.items()
            if rel.startswith(f"{prefix}{name}/")
        }
        assert sizes == record["files"], f"{where}: {name} holds {sizes}, not {record['files']}"
    last = trial["last_result"]["training_iteration"]
    assert trial["checkpoints"][-1]["training_iteration"] == last, where


def check_side_log(exp: CrashExperiment, trial: dict[str, Any], where: str) -> None:
    """What ran, from the trainable's own log: each task run of the trial resumed from the
    checkpoint committed last before it, re-ran only the iterations after it, and a trial that
    had finished before a kill never ran again (promises 1 and 2)."""
    events = read_side_log(exp.side_log, trial["trial_id"])
    assert not [e for e in events if e["event"] == "bad_restore"], f"{where}: {events}"
    attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        attempts[event["attempt"]].append(event)
    records = {a["attempt"]: a for a in trial["attempts"]}
    committed_before = 0  # the highest iteration whose report() returned, in any earlier attempt
    for number in sorted(attempts):
        run = attempts[number]
        assert number in records, f"{where}: attempt {number} ran but is not recorded"
        start = records[number]["start_iteration"]
        assert start >= committed_before, (
            f"{where}: attempt {number} resumed from iteration {start}, but the checkpoint of "
            f"iteration {committed_before} had been committed (report() returned) before it"
        )
        restores = [e for e in run if e["event"] == "restore"]
        if start > 0:
            assert restores and restores[0] is run[0], f"{where}: attempt {number}: {run}"
            assert [e["iteration"] for e in restores] == [start], f"{where}: {run}"
        else:
            assert not restores, f"{where}: attempt {number} restored {restores}"
        ran = [e["iteration"] for e in run if e["event"] == "run"]
        assert ran == list(range(start + 1, start + 1 + len(ran))), (
            f"{where}: attempt {number} resumed at {start} and ran iterations {ran}"
        )
        committed = [e["iteration"] for e in run if e["event"] == "committed"]
        committed_before = max([committed_before, *committed])
    # Every iteration whose report() returned is in the stored state. One more may be: a kill
    # can land after an iteration's commit point and before its report() returned.
    returned = [e["iteration"] for e in events if e["event"] == "committed"]
    ran_at_all = [e["iteration"] for e in events if e["event"] == "run"]
    stored = int(trial["last_result"]["training_iteration"])
    assert returned and max(returned) <= stored <= min(max(ran_at_all), max(returned) + 1), (
        f"{where}: stored up to iteration {stored}; report() returned up to {max(returned)}, "
        f"and iterations ran up to {max(ran_at_all)}"
    )

    for kill in exp.kills:
        if not kill.whole_experiment and trial["dir_name"] not in kill.trials:
            continue
        at_kill = kill.trials.get(trial["dir_name"])
        logged = kill.side_log_lengths.get(trial["trial_id"], 0)
        later = events[logged:]
        label = f"{where}, killed at {kill.point} ({kill.mode}, {kill.at_s:.2f} s)"
        if at_kill is not None and at_kill["status"] == "TERMINATED":
            assert not later, f"{label}: finished before the kill, it ran again: {later}"
            continue
        # The first task run after the kill resumed from what was committed at the kill.
        committed = at_kill["checkpoints"][-1] if at_kill and at_kill["checkpoints"] else None
        next_attempt = len(at_kill["attempts"]) + 1 if at_kill else 1
        if next_attempt in records:
            start = records[next_attempt]["start_iteration"]
            want = committed["training_iteration"] if committed else 0
            assert start == want, (
                f"{label}: the checkpoint of iteration {want} was committed at the kill, but "
                f"attempt {next_attempt} resumed from iteration {start}"
            )
            restores = [e for e in attempts.get(next_attempt, []) if e["event"] == "restore"]
            if committed and restores:
                assert restores[0]["checkpoint"].endswith(committed["dir_name"]), label


class OrphanedFlowRunError(AssertionError):
    """A killed driver's flow run is still RUNNING in the Prefect API after the experiment was
    resumed to its end: no later run marked it CRASHED (neither as the lease holder it took
    over, nor from the driver's record under ``drivers/``)."""


def check_flow_runs(exp: CrashExperiment, state: dict[str, Any]) -> None:
    """The Prefect API tells the story: the last run COMPLETED, every killed one CRASHED with a
    message naming a run that took over, and the experiment's lineage keeps them all.

    Raises:
        OrphanedFlowRunError: after every other check passed, when killed runs are left
            RUNNING.
    """
    assert exp.summary is not None
    final_id = exp.summary["flow_runs"][-1]
    runs = {str(r.id): r for r in flow_runs_named(exp.name)}
    assert final_id in runs and runs[final_id].state.is_completed(), runs.get(final_id)
    assert len(runs) <= exp.runs
    lineage = [r["flow_run_id"] for r in state["flow_runs"]]
    assert lineage[-1] == final_id and set(lineage) <= set(runs), lineage
    for kill in exp.kills:
        missing = [run_id for run_id in kill.lineage if run_id not in lineage]
        assert not missing, f"lineage {lineage} lost {missing} recorded at {kill.point}"
    # A driver killed after its flow run ended (and released the lease) left nothing to mark.
    done = {k.lease["flow_run_id"] for k in exp.kills if k.lease and k.lease["released"]}
    held = {k.lease["flow_run_id"]: k.point for k in exp.kills if k.lease}
    orphans = []
    for run_id, run in runs.items():
        if run_id == final_id or (run_id in done and run.state.is_completed()):
            continue
        if run.state.is_crashed():
            others = set(runs) - {run_id}
            assert any(other in (run.state.message or "") for other in others), run.state.message
            continue
        lease = f"held the lease at the kill at {held[run_id]}" if run_id in held else "no lease"
        orphans.append(f"{run.name} ({run_id}, {lease}): {run.state.type.value}")
    if orphans:
        kills = [(k.point, k.mode, round(k.at_s, 2)) for k in exp.kills]
        raise OrphanedFlowRunError(
            f"flow runs of killed drivers left running forever: {orphans}; kills: {kills}"
        )
