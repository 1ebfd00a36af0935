"""W1: many trivial trials (one report each): trial throughput and per-trial overhead.

Measures, for prefect-tune: ``fit()`` wall time, trials/s, overhead per trial
(wall / trials x concurrency); where one trial's time goes (``bench._trace``); the driver's
tracemalloc peak and retained memory per trial (a separate, untimed run).
Floors on the same cluster: plain ``client.map`` of the same function, and the same function as
plain Prefect tasks on the same DaskTaskRunner (Prefect's own share, without prefect-tune).
"""

from __future__ import annotations

import time
from typing import Any

import prefect_tune as tune
from bench import floor
from bench._common import Recorder, search_time

NAME = "W1"
TITLE = "trivial trials, one report each"


def trainable(config: dict[str, Any]) -> None:
    """One report; ``t_start``/``t_report`` let ``bench._trace`` place the trainable in time."""
    t_start = time.time()
    score = floor.trivial(config["x"])
    tune.report({"score": score, "t_start": t_start, "t_report": time.time()})


def make_tuner(
    ctx: Any,
    trials: int,
    name: str,
    trial_tags: tuple[str, ...] | None = None,
    artifacts: bool = True,
    search_alg: Any = None,
) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=trials, seed=0, search_alg=search_alg
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=ctx.new_dir("w1"), trial_tags=trial_tags, artifacts=artifacts
        ),
        task_runner=ctx.task_runner(),
    )


UNTAGGED = "prefect-tune, trial_tags=()"
NO_ARTIFACTS = "prefect-tune, artifacts=False"
OPTUNA = "prefect-tune, OptunaSearch"


def _optuna_run(ctx: Any, trials: int, rep: int, rec: Recorder) -> None:
    """W1 with ``search_alg=OptunaSearch(seed=0)`` (TPE): the same trials, and the driver's
    time per trial in the search (suggest, including the write of search.json before each
    dispatch, results and ends told)."""
    from prefect_tune.engine import SearchRecord
    from prefect_tune.search.optuna import OptunaSearch

    methods = ("suggest", "on_trial_result", "on_trial_complete")
    with search_time(SearchRecord, methods) as spent:
        timing = ctx.fit(
            make_tuner(ctx, trials, f"w1-optuna-{rep}", search_alg=OptunaSearch(seed=0)),
            f"W1-optuna-{rep}",
        )
    _throughput(rec, OPTUNA, trials, timing.wall_s, ctx.concurrency)
    rec.add(
        NAME,
        "search cost per trial (driver)",
        spent["s"] / trials * 1000,
        unit="ms",
        better="lower",
        system=OPTUNA,
    )
    print(f"  W1 rep {rep + 1}, {OPTUNA}: {timing.wall_s:.2f} s", flush=True)


def _throughput(rec: Recorder, system: str, trials: int, wall: float, concurrency: int) -> None:
    rec.add(NAME, "wall time", wall, unit="s", better="lower", system=system)
    rec.add(NAME, "throughput", trials / wall, unit="trials/s", better="higher", system=system)
    rec.add(
        NAME,
        "overhead per trial (wall/trials x concurrency)",
        wall / trials * concurrency * 1000,
        unit="ms",
        better="lower",
        system=system,
    )


def _server_load(rec: Recorder, system: str, trials: int, timing: Any) -> None:
    """The Prefect server's share: its CPU time per trial (from fit() until it is idle again)
    and how long it kept working after fit() returned."""
    for role, seconds in timing.cpu_during_s.items():
        rec.add(
            NAME,
            f"CPU / trial during fit(): {role}",
            seconds / trials * 1000,
            unit="ms",
            better="lower",
            system=system,
        )
    if timing.server_cpu_s is None:
        return
    per_trial_ms = timing.server_cpu_s / trials * 1000
    rec.add(
        NAME, "Prefect server CPU / trial", per_trial_ms, unit="ms", better="lower", system=system
    )
    rec.add(
        NAME,
        "Prefect server busy after fit()",
        timing.server_busy_after_s,
        unit="s",
        better="lower",
        system=system,
    )


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    from bench._trace import breakdown, format_breakdown, trace_driver

    trials = int(size["trials"])
    ctx.warm_up()
    traces = []
    last = None
    for rep in range(ctx.repeat):
        with trace_driver() as trace:
            timing = ctx.fit(make_tuner(ctx, trials, f"w1-{rep}"), f"W1-rep{rep}")
        traces.append(trace)
        _throughput(rec, "prefect-tune", trials, timing.wall_s, ctx.concurrency)
        _server_load(rec, "prefect-tune", trials, timing)
        print(f"  W1 rep {rep + 1}: {trials} trials in {timing.wall_s:.2f} s", flush=True)
        last = timing.results
        # The same without the experiment tag.
        timing = ctx.fit(make_tuner(ctx, trials, f"w1-untagged-{rep}", ()), f"W1-untagged-{rep}")
        _throughput(rec, UNTAGGED, trials, timing.wall_s, ctx.concurrency)
        _server_load(rec, UNTAGGED, trials, timing)
        print(f"  W1 rep {rep + 1}, {UNTAGGED}: {timing.wall_s:.2f} s", flush=True)
        # The same without the flow run's artifacts (RunConfig(artifacts=False)).
        name = f"w1-no-artifacts-{rep}"
        timing = ctx.fit(make_tuner(ctx, trials, name, artifacts=False), f"W1-no-artifacts-{rep}")
        _throughput(rec, NO_ARTIFACTS, trials, timing.wall_s, ctx.concurrency)
        _server_load(rec, NO_ARTIFACTS, trials, timing)
        print(f"  W1 rep {rep + 1}, {NO_ARTIFACTS}: {timing.wall_s:.2f} s", flush=True)
        _optuna_run(ctx, trials, rep, rec)
    if traces and last is not None:
        try:
            data = breakdown(traces[-1], last)
        except Exception as exc:  # instrumentation only: never lose the numbers above
            rec.note(NAME, f"per-trial breakdown unavailable: {type(exc).__name__}: {exc}")
        else:
            rec.details["W1 breakdown"] = data
            print(format_breakdown(data), flush=True)

    # Driver memory: two untimed runs under tracemalloc; the difference of the two sizes is the
    # cost of one more trial, without the fixed cost of a flow run.
    small = max(2, trials // 4)
    measured = {}
    for n in (small, trials):
        timing = ctx.fit(make_tuner(ctx, n, f"w1-mem-{n}"), f"W1-mem-{n}", memory=True)
        measured[n] = timing
    big = measured[trials]
    assert big.peak_bytes is not None and big.retained_bytes is not None
    rec.add(
        NAME,
        "driver peak memory / trial",
        big.peak_bytes / trials / 1024,
        unit="KiB",
        better="lower",
    )
    rec.add(
        NAME,
        "driver retained memory / trial (results held)",
        big.retained_bytes / trials / 1024,
        unit="KiB",
        better="lower",
    )
    low = measured[small]
    if low.peak_bytes is not None and trials > small:
        rec.add(
            NAME,
            f"driver peak memory, marginal ({small}->{trials} trials)",
            (big.peak_bytes - low.peak_bytes) / (trials - small) / 1024,
            unit="KiB/trial",
            better="lower",
        )
    rec.note(
        NAME,
        "memory: tracemalloc (Python allocations of the driver process) in separate untimed "
        "runs; 'per trial' divides the whole run's peak (with the flow run's fixed cost) by "
        "the trials; 'marginal' is the slope between two experiment sizes.",
    )

    if not ctx.floor:
        return
    client = ctx.dask_client()
    for _ in range(ctx.repeat):
        start = time.perf_counter()
        client.gather(client.map(floor.trivial, [float(i) for i in range(trials)], pure=False))
        _throughput(
            rec, "floor: dask client.map", trials, time.perf_counter() - start, ctx.concurrency
        )
    variants = ((None, "floor: prefect tasks"), (["bench-tag"], "floor: prefect tasks, tagged"))
    for _ in range(ctx.repeat):  # interleaved, so that drift in machine load hits both alike
        for tags, system in variants:
            start = time.perf_counter()
            floor.run_prefect_tasks(ctx.task_runner(), trials, ctx.concurrency, tags)
            _throughput(rec, system, trials, time.perf_counter() - start, ctx.concurrency)
    rec.note(
        NAME,
        "floors 'prefect tasks': the same function as plain Prefect tasks in one flow run on "
        f"the same DaskTaskRunner, {ctx.concurrency} in flight like prefect-tune's trials "
        "(Prefect + Dask without prefect-tune); 'tagged': with one tag, as prefect-tune tags "
        "every trial task run with the experiment's name.",
    )
