"""W5: trials x iterations with a checkpoint every iteration; the driver is SIGKILLed half-way
and the experiment restored: correctness and the restore's time.

One uninterrupted reference run (in this process, timed like any ``fit()``) gives every trial's
final metrics. Then, each repetition:

1. ``python -m bench._w5_driver`` runs the same experiment in a child process (its own session)
   on the bench's Dask cluster and Prefect API; it is SIGKILLed once half of all iterations'
   checkpoints are committed (counted from the trainable's side log,
   ``prefect_tune.testing.side_log``).
   Only the driver dies: the trials it left running go on on the workers until they see the new
   driver's lease (the "driver machine died, the cluster lives" case).
2. This process reads the killed experiment (``ResultGrid.from_path``), then
   ``Tuner.restore(path, trainable).fit()``.

Recorded: kill -> resumed ``fit()`` returned (all of step 2), the state load and
``Tuner.restore()`` alone, the resumed ``fit()``; from the side log, iterations run more than
once (allowed: the iterations started but not committed by the runs that were cut short, since a
resume starts after the latest committed checkpoint), runs of an iteration that had already been
committed (must be 0), trials that resumed from their latest committed checkpoint; from the
results, trials whose final metrics equal the reference's and whose ``metrics_dataframe`` holds
iterations 1..N exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import prefect_tune as tune
from bench._common import Recorder
from prefect_tune.testing.side_log import (
    Invocation,
    chained,
    committed_count,
    committed_then_rerun,
    history_is_whole,
    matches,
    read_invocations,
    reexecuted,
)

NAME = "W5"
TITLE = "driver killed half-way, restored (correctness)"
EXPERIMENT = "w5"
DRIVER_TIMEOUT_S = 300.0


def make_tuner(
    *,
    storage: str,
    name: str,
    side_log: str,
    trials: int,
    iterations: int,
    sleep_s: float,
    task_runner: Any,
) -> tune.Tuner:
    """The W5 experiment: trial ``x`` in 0..trials-1 runs ``iterations`` checkpointed steps."""
    return tune.Tuner(
        chained,
        param_space={
            "x": tune.grid_search(list(range(trials))),
            "iterations": iterations,
            "sleep_s": sleep_s,
            "side_log": side_log,
        },
        tune_config=tune.TuneConfig(metric="loss", mode="min", seed=0),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
        task_runner=task_runner,
    )


def _timed_fit(tuner: tune.Tuner) -> tuple[tune.ResultGrid, float]:
    start = time.perf_counter()
    results = tuner.fit()
    return results, time.perf_counter() - start


def _reference(ctx: Any, size: dict[str, Any], rec: Recorder) -> dict[int, dict[str, Any]]:
    """Final metrics of an uninterrupted run, by trial ``x``."""
    tuner = make_tuner(
        storage=ctx.new_dir("w5-reference"),
        name=EXPERIMENT,
        side_log=ctx.new_dir("w5-reference-side"),
        trials=int(size["trials"]),
        iterations=int(size["iterations"]),
        sleep_s=float(size["sleep_s"]),
        task_runner=ctx.task_runner(),
    )
    timing = ctx.fit(tuner, "W5-reference")
    rec.add(NAME, "uninterrupted fit() wall (reference)", timing.wall_s, unit="s", better="lower")
    print(f"  W5 reference: uninterrupted fit() in {timing.wall_s:.2f} s", flush=True)
    return {int(r.config["x"]): r.metrics for r in timing.results}


def _tail(path: str, chars: int = 3000) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()[-chars:]


def _drive_and_kill(
    ctx: Any, size: dict[str, Any], storage: str, side_log: str
) -> tuple[float, float]:
    """Runs the driver in a child process and SIGKILLs it once half the checkpoints are
    committed. Returns the kill's ``time.time()`` (the side log's clock) and
    ``time.perf_counter()``."""
    trials, iterations = int(size["trials"]), int(size["iterations"])
    half = trials * iterations // 2
    logs = ctx.new_dir("w5-driver-logs")
    out_path, err_path = os.path.join(logs, "driver.out"), os.path.join(logs, "driver.err")
    env = dict(os.environ, PREFECT_API_URL=ctx.prefect_api())
    command = [
        sys.executable,
        "-m",
        "bench._w5_driver",
        "--address",
        ctx.cluster().scheduler_address,
        "--storage",
        storage,
        "--name",
        EXPERIMENT,
        "--side-log",
        side_log,
        "--trials",
        str(trials),
        "--iterations",
        str(iterations),
        "--sleep-s",
        str(size["sleep_s"]),
    ]
    from tests._env import REPO_ROOT

    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
    deadline = time.monotonic() + DRIVER_TIMEOUT_S
    try:
        while committed_count(side_log) < half:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"W5: the driver exited ({proc.returncode}) before half the checkpoints "
                    f"were committed:\n{_tail(out_path)}\n{_tail(err_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"W5: no half-way point after {DRIVER_TIMEOUT_S:.0f} s")
            time.sleep(0.01)
        # The driver's own process group (start_new_session): the driver and nothing else of
        # the bench; the Dask cluster lives in another process.
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.time(), time.perf_counter()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return killed


def _resumed_from_latest(invocations: list[Invocation]) -> bool:
    """Whether every run of a trial after its first started from the latest iteration its
    earlier runs had committed when it began."""
    for i, inv in enumerate(invocations[1:], start=1):
        earlier = [
            it for prev in invocations[:i] for it, at in prev.commits.items() if at < inv.began_at
        ]
        if inv.resumed_after != max(earlier, default=0):
            return False
    return True


def _one_run(
    ctx: Any, size: dict[str, Any], rec: Recorder, reference: dict[int, dict[str, Any]], rep: int
) -> None:
    trials, iterations = int(size["trials"]), int(size["iterations"])
    total = trials * iterations
    storage, side_log = ctx.new_dir("w5"), ctx.new_dir("w5-side")
    killed_at, kill_clock = _drive_and_kill(ctx, size, storage, side_log)
    path = os.path.join(storage, EXPERIMENT)

    start = time.perf_counter()
    at_kill = tune.ResultGrid.from_path(path)
    load_s = time.perf_counter() - start
    statuses_at_kill = Counter(r.status.value for r in at_kill)
    finished_at_kill = {
        int(r.config["x"]) for r in at_kill if r.status is tune.TrialStatus.TERMINATED
    }

    start = time.perf_counter()
    tuner = tune.Tuner.restore(path, chained, task_runner=ctx.task_runner())
    restore_s = time.perf_counter() - start
    results, fit_s = _timed_fit(tuner)
    kill_to_done = time.perf_counter() - kill_clock

    by_trial = read_invocations(side_log)
    everything = [inv for invs in by_trial.values() for inv in invs]
    committed_before = sum(
        1 for inv in everything for at in inv.commits.values() if at <= killed_at
    )
    # The killed driver's trials: those it had started, and any it had submitted that a worker
    # started after the kill (Dask had already handed them over).
    killed_runs = {inv.flow_run for inv in everything if inv.began_at <= killed_at}
    orphans = [inv for inv in everything if inv.flow_run in killed_runs]
    orphan_runs = sum(1 for inv in orphans for at in inv.starts.values() if at > killed_at)
    orphans_begun_after = sum(1 for inv in orphans if inv.began_at > killed_at)
    rerun_finished = sum(
        1 for x in finished_at_kill for inv in by_trial.get(x, []) if inv.began_at > killed_at
    )
    matching = sum(
        1
        for r in results
        if r.status is tune.TrialStatus.TERMINATED
        and matches(r.metrics, reference[int(r.config["x"])])
    )
    from_latest = sum(1 for x in range(trials) if _resumed_from_latest(by_trial.get(x, [])))
    whole = sum(1 for r in results if history_is_whole(r, iterations))
    again = reexecuted(everything)
    allowed = sum(inv.uncommitted for inv in everything)
    committed_again = committed_then_rerun(everything)

    of = f"of {trials}"
    rows: list[tuple[str, float, str, str | None]] = [
        ("kill -> resumed fit() returned", kill_to_done, "s", "lower"),
        ("state load at the kill (ResultGrid.from_path)", load_s, "s", "lower"),
        ("Tuner.restore()", restore_s, "s", "lower"),
        ("resumed fit() wall", fit_s, "s", "lower"),
        ("trials matching reference", matching, of, "higher"),
        ("trials resumed from latest committed checkpoint", from_latest, of, "higher"),
        ("trials with history 1..N (metrics_dataframe)", whole, of, "higher"),
        ("iterations re-executed after the kill", again, "iterations", "lower"),
        ("allowed: iterations uncommitted when runs were cut", allowed, "iterations", None),
        ("committed iterations run again (must be 0)", committed_again, "iterations", "lower"),
        ("finished trials run again (must be 0)", rerun_finished, "trials", "lower"),
        ("checkpoints committed before the kill", committed_before, f"of {total}", None),
        ("iterations run by the killed driver's trials after it", orphan_runs, "iterations", None),
    ]
    for metric, value, unit, better in rows:
        rec.add(NAME, metric, value, unit=unit, better=better)
    print(
        f"  W5 rep {rep + 1}: killed with {committed_before} of {total} checkpoints committed "
        f"(trials {dict(statuses_at_kill)}); the killed driver's trials then ran {orphan_runs} "
        f"iterations ({orphans_begun_after} trial runs began after the kill); restored and "
        f"finished {kill_to_done:.2f} s after the kill; {matching}/{trials} trials match the "
        f"reference, {again} iterations re-executed (allowed {allowed}), {committed_again} "
        "committed iterations run again",
        flush=True,
    )


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    ctx.warm_up()
    reference = _reference(ctx, size, rec)
    for rep in range(ctx.repeat):
        _one_run(ctx, size, rec, reference, rep)
    rec.note(
        NAME,
        f"{size['trials']} trials x {size['iterations']} iterations ({size['sleep_s']} s of "
        "work each), a checkpoint every iteration (num_to_keep=2). The driver runs in a child "
        "process on the bench's cluster and is SIGKILLed once half the checkpoints are "
        "committed; this process then loads the state, calls Tuner.restore() and fit(). "
        "'kill -> resumed fit() returned' includes those and the new driver's wait for the "
        "killed driver's trials to see its lease (fence interval + 0.5 s); the trials the killed "
        "driver left running keep their worker threads until then. Counts come from the "
        "trainable's side log and the final ResultGrid; the reference is one uninterrupted run.",
    )
