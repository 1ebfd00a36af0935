"""W7: errored trials with ``max_failures`` / ``resume_errored`` / ``restart_errored``:
correctness (which trials run again, from where, how many failures are counted) and wall times.

The trainable (``prefect_tune.testing.side_log.chained``) checkpoints every iteration; trial
``x`` raises at iteration ``fail_at`` while its flag file exists. Each repetition runs:

- reference: no failing trial, ``FailureConfig(max_failures=2)``: every trial's final metrics,
  and the wall time the next one is compared with;
- (a) the same with one trial failing once (its flag is removed as it fires): the trial is
  retried from its latest checkpoint within the same ``fit()``; wall time vs the reference,
  failures counted, iterations run twice;
- (b) ``failing`` trials fail (``max_failures=0``), so the first ``fit()`` ends with them
  ERROR; the flags are removed and ``Tuner.restore(path, resume_errored=True).fit()`` runs:
  each errored trial must resume from its latest checkpoint and no finished trial run again;
- (c) the same first ``fit()``, then ``Tuner.restore(path, restart_errored=True).fit()``: each
  errored trial must start again from scratch (no checkpoint, a fresh history).

Every run's final metrics are compared with the reference; counts come from the ResultGrid
(``metrics``, ``metrics_dataframe``, ``error``, ``num_errors``, ``num_terminated``) and the
trainable's side log.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import prefect_tune as tune
from bench._common import Recorder
from prefect_tune.testing.side_log import (
    Invocation,
    chained,
    clear_flags,
    history_is_whole,
    matches,
    read_invocations,
    reexecuted,
    set_flag,
)

NAME = "W7"
TITLE = "errored trials: resume/restart/max_failures (correctness)"
EXPERIMENT = "w7"


def make_tuner(
    ctx: Any, size: dict[str, Any], *, storage: str, side_log: str, flags: str, max_failures: int
) -> tune.Tuner:
    """Trial ``x`` in 0..trials-1 runs ``iterations`` checkpointed steps, failing at
    ``fail_at`` while its flag is set."""
    return tune.Tuner(
        chained,
        param_space={
            "x": tune.grid_search(list(range(int(size["trials"])))),
            "iterations": int(size["iterations"]),
            "sleep_s": float(size["sleep_s"]),
            "side_log": side_log,
            "flags": flags,
            "fail_at": int(size["fail_at"]),
        },
        tune_config=tune.TuneConfig(metric="loss", mode="min", seed=0),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
        task_runner=ctx.task_runner(),
    )


def _timed_fit(tuner: tune.Tuner) -> tuple[tune.ResultGrid, float]:
    start = time.perf_counter()
    results = tuner.fit()
    return results, time.perf_counter() - start


def _dirs(ctx: Any, label: str) -> tuple[str, str, str]:
    """Storage, side-log and flag directories of one experiment."""
    return ctx.new_dir("w7", label), ctx.new_dir("w7-side", label), ctx.new_dir("w7-flags", label)


def _matching(results: tune.ResultGrid, reference: dict[int, dict[str, Any]]) -> int:
    return sum(
        1
        for r in results
        if r.status is tune.TrialStatus.TERMINATED
        and matches(r.metrics, reference[int(r.config["x"])])
    )


def counted_failures(result: tune.Result) -> int:
    """prefect-tune's failure count of a trial."""
    return int(result.num_failures)


def _failing_xs(size: dict[str, Any]) -> list[int]:
    """``failing`` trials spread over the experiment (first, middle, last...)."""
    trials, failing = int(size["trials"]), int(size["failing"])
    step = max(1, trials // failing)
    return list(range(0, trials, step))[:failing]


def _reference_and_retry(
    ctx: Any, size: dict[str, Any], add: Any, rep: int
) -> dict[int, dict[str, Any]]:
    """The reference run and (a); returns the reference's final metrics by ``x``."""
    trials = int(size["trials"])
    storage, side_log, flags = _dirs(ctx, "reference")
    tuner = make_tuner(ctx, size, storage=storage, side_log=side_log, flags=flags, max_failures=2)
    reference_results, reference_wall = _timed_fit(tuner)
    if reference_results.num_terminated != trials:
        raise RuntimeError(f"W7: the reference run ended with {reference_results.errors}")
    reference = {int(r.config["x"]): r.metrics for r in reference_results}

    storage, side_log, flags = _dirs(ctx, "a")
    failing = _failing_xs(size)[len(_failing_xs(size)) // 2]
    set_flag(flags, failing, once=True)
    tuner = make_tuner(ctx, size, storage=storage, side_log=side_log, flags=flags, max_failures=2)
    results, wall = _timed_fit(tuner)
    invocations = [inv for invs in read_invocations(side_log).values() for inv in invs]
    raised = sum(len(inv.raised) for inv in invocations)
    counted = sum(counted_failures(r) for r in results)
    failed_result = next(r for r in results if int(r.config["x"]) == failing)
    again = reexecuted(invocations)
    matching = _matching(results, reference)

    metric = "(a) max_failures=2: fit() wall"
    add(metric, wall, unit="s", better="lower")
    add(metric, reference_wall, unit="s", better="lower", system="same, no trial failing")
    add(
        "(a) retry overhead (fit() wall - no-failure wall)",
        wall - reference_wall,
        unit="s",
        better="lower",
    )
    add("(a) failures raised (1 injected)", raised, unit="failures", better=None)
    add("(a) failures counted by prefect-tune", counted, unit="failures", better=None)
    exactly_once = (
        failed_result.status is tune.TrialStatus.TERMINATED and counted_failures(failed_result) == 1
    )
    add(
        "(a) failed trial TERMINATED with exactly 1 counted failure",
        int(exactly_once),
        unit="of 1",
        better="higher",
    )
    add("(a) trials matching reference", matching, unit=f"of {trials}", better="higher")
    add("(a) iterations re-executed", again, unit="iterations", better="lower")
    print(
        f"  W7 rep {rep + 1} (a): no failures {reference_wall:.2f} s; one trial failing once "
        f"{wall:.2f} s, {raised} raised / {counted} counted failures, {results.num_errors} "
        f"errored, {matching}/{trials} match the reference, {again} iterations re-executed",
        flush=True,
    )
    return reference


def _errored_then_restored(
    ctx: Any,
    size: dict[str, Any],
    add: Any,
    reference: dict[int, dict[str, Any]],
    rep: int,
    *,
    restart: bool,
) -> None:
    """(b) with ``restart=False`` (resume_errored), (c) with ``restart=True`` (restart_errored)."""
    trials, iterations = int(size["trials"]), int(size["iterations"])
    part, flag = ("(c)", "restart_errored") if restart else ("(b)", "resume_errored")
    storage, side_log, flags = _dirs(ctx, part.strip("()"))
    failing = _failing_xs(size)
    for x in failing:
        set_flag(flags, x, once=False)
    tuner = make_tuner(ctx, size, storage=storage, side_log=side_log, flags=flags, max_failures=0)
    first, first_wall = _timed_fit(tuner)
    errored = {int(r.config["x"]) for r in first if r.error is not None}
    finished = {int(r.config["x"]) for r in first if r.status is tune.TrialStatus.TERMINATED}

    clear_flags(flags)
    restored_at = time.time()
    start = time.perf_counter()
    restored = tune.Tuner.restore(
        f"{storage}/{EXPERIMENT}",
        chained,
        resume_errored=not restart,
        restart_errored=restart,
        task_runner=ctx.task_runner(),
    )
    results, _ = _timed_fit(restored)
    wall = time.perf_counter() - start

    by_trial = read_invocations(side_log)
    everything = [inv for invs in by_trial.values() for inv in invs]
    after = {x: [inv for inv in invs if inv.began_at > restored_at] for x, invs in by_trial.items()}

    def resumed_as_asked(x: int) -> bool:
        before: list[Invocation] = [inv for inv in by_trial[x] if inv.began_at <= restored_at]
        latest = max((it for inv in before for it in inv.commits), default=0)
        runs = after.get(x, [])
        return bool(runs) and runs[0].resumed_after == (0 if restart else latest)

    as_asked = sum(1 for x in errored if resumed_as_asked(x))
    finished_again = sum(len(after.get(x, [])) for x in finished)
    matching = _matching(results, reference)
    whole = sum(1 for r in results if history_is_whole(r, iterations))
    of = f"of {trials}"
    add(
        f"{part} first fit(): trials errored ({len(failing)} injected)",
        first.num_errors,
        unit=of,
        better=None,
    )
    add(f"{part} first fit() wall", first_wall, unit="s", better="lower")
    add(f"{part} Tuner.restore({flag}=True) + fit() wall", wall, unit="s", better="lower")
    what = "restarted from scratch" if restart else "resumed from latest checkpoint"
    add(f"{part} errored trials {what}", as_asked, unit=f"of {len(errored)}", better="higher")
    add(
        f"{part} finished trials run again (must be 0)", finished_again, unit="runs", better="lower"
    )
    rerun = "iterations run again (from scratch)" if restart else "iterations re-executed"
    add(f"{part} {rerun}", reexecuted(everything), unit="iterations", better="lower")
    add(f"{part} trials TERMINATED after restore", results.num_terminated, unit=of, better="higher")
    add(f"{part} trials matching reference", matching, unit=of, better="higher")
    add(f"{part} trials with history 1..N (metrics_dataframe)", whole, unit=of, better="higher")
    print(
        f"  W7 rep {rep + 1} {part}: {first.num_errors} errored in {first_wall:.2f} s; "
        f"{flag} in {wall:.2f} s: {as_asked}/{len(errored)} {what}, {finished_again} finished "
        f"trials run again, {results.num_errors} errored, {matching}/{trials} match the "
        f"reference, {whole}/{trials} whole histories",
        flush=True,
    )


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    ctx.warm_up()
    add = functools.partial(rec.add, NAME)
    for rep in range(ctx.repeat):
        reference = _reference_and_retry(ctx, size, add, rep)
        _errored_then_restored(ctx, size, add, reference, rep, restart=False)
        _errored_then_restored(ctx, size, add, reference, rep, restart=True)
    rec.note(
        NAME,
        f"{size['trials']} trials x {size['iterations']} iterations ({size['sleep_s']} s of "
        f"work each), a checkpoint every iteration (num_to_keep=2); trials fail at iteration "
        f"{size['fail_at']} (before that iteration's report). (a): FailureConfig(max_failures=2), "
        "one trial failing once, compared with the same experiment without failures. (b)/(c): "
        f"{size['failing']} trials fail with max_failures=0, then Tuner.restore(...).fit() with "
        "the flag named. 'iterations re-executed' counts runs of an iteration beyond its first "
        "(the side log); the iteration that raised is one of them. Restore wall times include "
        "Tuner.restore().",
    )
