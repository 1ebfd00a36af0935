"""W8: bookkeeping overhead, the analogue of Ray's release test ``bookkeeping_overhead``.

N trials (full 1 000, small 320) that each sleep 1 s and report once, on 16 single-thread Dask
workers, ``max_concurrent_trials=16``: the ideal is N x 1 s / 16 (62.5 s at 1 000 trials).

Measured, as multiples of the ideal and in seconds:

- **span**: from the first trial's start to the last trial's end (``t_start`` / ``t_end``
  reported by the trainable, ``time.time()`` on one host);
- **fit()**: the whole ``Tuner.fit()`` wall time;
- where the rest goes: fit() start to the first trial's start, the last trial's end to fit()'s
  return, the idle time of a worker slot per trial (16 x span - N x 1 s, over N: what dispatching
  one trial after another costs), the CPU per trial of the driver, the Dask cluster, the Prefect
  server (and PostgreSQL), and the driver's resident memory growth during fit().

Systems: ``prefect-tune`` lets ``fit()`` start its own cluster, as a user's
``DaskTaskRunner(cluster_kwargs={"n_workers": 16, "threads_per_worker": 1})`` does (cluster start
and stop are in fit(); its scheduler runs in the driver's process, so the driver's CPU includes
it); ``prefect-tune, existing cluster`` runs on a 16-worker cluster started once beforehand in a
process of its own (``DaskTaskRunner(address=...)``), also with ``trial_tags=()``. The floor is
plain Dask ``client.submit`` of the same sleeps on that cluster, all submitted at once.

Memory mode (``memory_trials``, full 10 000 x 0.01 s): the driver's tracemalloc peak per trial
during an untimed fit() on the existing cluster (target: 2 KiB per trial).
"""

from __future__ import annotations

import time
from typing import Any

import prefect_tune as tune
from bench._common import Recorder

NAME = "W8"
TITLE = "bookkeeping overhead: 1 s trials on 16 single-thread workers"

OWN_CLUSTER = "prefect-tune"  # fit() starts the cluster: what a user's script does
EXISTING = "prefect-tune, existing cluster"
EXISTING_UNTAGGED = "prefect-tune, existing cluster, trial_tags=()"
EXISTING_NO_ARTIFACTS = "prefect-tune, existing cluster, artifacts=False"
FLOOR = "floor: dask client.submit"


def trainable(config: dict[str, Any]) -> None:
    t_start = time.time()
    time.sleep(config["sleep_s"])
    t_end = time.time()
    tune.report({"score": config["x"], "t_start": t_start, "t_end": t_end, "t_report": t_end})


def sleep_task(sleep_s: float) -> tuple[float, float]:
    """The floor's trial: the same sleep, as a plain Dask task."""
    t_start = time.time()
    time.sleep(sleep_s)
    return t_start, time.time()


def _tuner(
    ctx: Any,
    trials: int,
    sleep_s: float,
    concurrency: int,
    name: str,
    task_runner: Any,
    trial_tags: tuple[str, ...] | None = None,
    artifacts: bool = True,
) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        param_space={"x": tune.uniform(0.0, 1.0), "sleep_s": sleep_s},
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            num_samples=trials,
            max_concurrent_trials=concurrency,
            seed=0,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=ctx.new_dir("w8"),
            trial_tags=trial_tags,
            verbose=0,
            artifacts=artifacts,
        ),
        task_runner=task_runner,
    )


def own_cluster_runner(workers: int) -> Any:
    from prefect_dask import DaskTaskRunner

    from prefect_tune.testing import local_cluster_kwargs

    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(workers, 1))


def record_span(
    rec: Recorder,
    system: str,
    *,
    trials: int,
    sleep_s: float,
    concurrency: int,
    stamps: list[tuple[float, float]],
    called_at: float,
    returned_at: float,
) -> dict[str, float]:
    """Adds span, fit (or the floor's call) and the gaps around them; returns them."""
    ideal = trials * sleep_s / concurrency
    first = min(start for start, _ in stamps)
    last = max(end for _, end in stamps)
    span = last - first
    wall = returned_at - called_at
    idle_ms = (concurrency * span - trials * sleep_s) / trials * 1000
    out = {"span_s": span, "wall_s": wall, "ideal_s": ideal, "idle_ms": idle_ms}
    rows = (
        ("span / ideal", span / ideal, "x"),
        ("fit() / ideal", wall / ideal, "x"),
        ("span", span, "s"),
        ("fit() wall", wall, "s"),
        ("fit() start -> first trial start", first - called_at, "s"),
        ("last trial end -> fit() returned", returned_at - last, "s"),
        ("worker slot idle per trial ((slots x span - work) / trials)", idle_ms, "ms"),
    )
    for metric, value, unit in rows:
        rec.add(NAME, metric, value, unit=unit, better="lower", system=system)
    return out


def _stamps(results: Any) -> list[tuple[float, float]]:
    out = []
    for result in results:
        metrics = result.metrics or {}
        out.append((float(metrics["t_start"]), float(metrics["t_end"])))
    return out


def _cpu(rec: Recorder, system: str, trials: int, timing: Any) -> None:
    for role, seconds in timing.cpu_during_s.items():
        if system == OWN_CLUSTER and role == "Dask cluster":
            continue  # its processes have exited when fit() returns: their CPU is not counted
        rec.add(
            NAME,
            f"CPU / trial during fit(): {role}",
            seconds / trials * 1000,
            unit="ms",
            better="lower",
            system=system,
        )
    if timing.server_cpu_s is not None:
        rec.add(
            NAME,
            "Prefect server CPU / trial (fit() until idle)",
            timing.server_cpu_s / trials * 1000,
            unit="ms",
            better="lower",
            system=system,
        )
    if timing.rss_growth_bytes is not None:
        rec.add(
            NAME,
            "driver RSS growth during fit()",
            timing.rss_growth_bytes / 2**20,
            unit="MiB",
            better="lower",
            system=system,
        )


def _one(
    ctx: Any,
    rec: Recorder,
    system: str,
    tuner: tune.Tuner,
    label: str,
    *,
    trials: int,
    sleep_s: float,
    concurrency: int,
    trace: bool = False,
) -> None:
    from bench._trace import breakdown, format_breakdown, trace_driver

    with trace_driver() as driver_trace:
        timing = ctx.fit(tuner, label)
    if trace:
        try:
            data = breakdown(driver_trace, timing.results, max_trials=trials)
        except Exception as exc:  # instrumentation only: never lose the numbers
            rec.note(NAME, f"per-trial breakdown unavailable: {type(exc).__name__}: {exc}")
        else:
            rec.details["W8 breakdown"] = data
            print(format_breakdown(data, NAME), flush=True)
    span = record_span(
        rec,
        system,
        trials=trials,
        sleep_s=sleep_s,
        concurrency=concurrency,
        stamps=_stamps(timing.results),
        called_at=timing.started_at,
        returned_at=timing.returned_at,
    )
    _cpu(rec, system, trials, timing)
    print(
        f"  W8 {system}: {trials} trials, span {span['span_s']:.1f} s "
        f"({span['span_s'] / span['ideal_s']:.3f}x ideal {span['ideal_s']:.1f} s), fit() "
        f"{span['wall_s']:.1f} s ({span['wall_s'] / span['ideal_s']:.3f}x), slot idle "
        f"{span['idle_ms']:.0f} ms/trial, driver CPU "
        f"{timing.cpu_during_s.get('driver', 0.0) / trials * 1000:.1f} ms/trial, "
        f"driver RSS +{(timing.rss_growth_bytes or 0) / 2**20:.0f} MiB, "
        f"load {_load()}",
        flush=True,
    )


def _load() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    trials = int(size["trials"])
    sleep_s = float(size["sleep_s"])
    workers = int(size["workers"])
    repeat = int(size.get("repeat", ctx.repeat))
    memory_trials = int(size.get("memory_trials", 0))
    memory_sleep_s = float(size.get("memory_sleep_s", 0.01))
    untagged = bool(size.get("untagged", True))
    no_artifacts = bool(size.get("no_artifacts", True))
    kwargs = {"trials": trials, "sleep_s": sleep_s, "concurrency": workers}
    rec.note(
        NAME,
        f"{trials} trials x {sleep_s:g} s on {workers} single-thread workers, "
        f"max_concurrent_trials={workers}: ideal {trials * sleep_s / workers:.1f} s. "
        f"'{OWN_CLUSTER}': fit() starts its own LocalCluster (DaskTaskRunner(cluster_kwargs=...)),"
        " its start and stop included, its scheduler in the driver's process; "
        f"'{EXISTING}': DaskTaskRunner(address=...) of a cluster started beforehand in a "
        "process of its own (its start is under Set-up).",
    )
    ctx.prefect_api()
    start = time.perf_counter()
    warm = _tuner(ctx, 2, 0.0, 2, "w8-warm-up", own_cluster_runner(2))
    ctx.fit(warm, "W8-warm-up")
    rec.add_setup(
        "W8 warm-up experiment (2 trials, own 2-worker cluster)", time.perf_counter() - start
    )

    for rep in range(repeat):
        tuner = _tuner(ctx, trials, sleep_s, workers, f"w8-own-{rep}", own_cluster_runner(workers))
        _one(ctx, rec, OWN_CLUSTER, tuner, f"W8-own-{rep}", **kwargs)

    cluster = ctx.cluster_of(workers)
    rec.add(
        NAME,
        f"LocalCluster start, {workers} workers (own process)",
        ctx.cluster_start_s[(workers, 1)],
        unit="s",
        better="lower",
        system=FLOOR,
    )
    from prefect_dask import DaskTaskRunner

    # Each worker process imports prefect-tune and builds Prefect's context at its first trial:
    # one trial per worker first, as fit() with its own cluster pays this in every run.
    start = time.perf_counter()
    runner = DaskTaskRunner(address=cluster.scheduler_address)
    ctx.fit(_tuner(ctx, 2 * workers, 0.05, workers, "w8-warm-existing", runner), "W8-warm-existing")
    rec.add_setup(
        f"W8 warm-up on the existing cluster ({2 * workers} trials)", time.perf_counter() - start
    )
    for rep in range(repeat):
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        tuner = _tuner(ctx, trials, sleep_s, workers, f"w8-existing-{rep}", runner)
        _one(ctx, rec, EXISTING, tuner, f"W8-existing-{rep}", trace=rep == repeat - 1, **kwargs)
        if untagged:
            runner = DaskTaskRunner(address=cluster.scheduler_address)
            tuner = _tuner(ctx, trials, sleep_s, workers, f"w8-untagged-{rep}", runner, ())
            _one(ctx, rec, EXISTING_UNTAGGED, tuner, f"W8-untagged-{rep}", **kwargs)
        if no_artifacts:
            # The same without the flow run's artifacts (RunConfig(artifacts=False)), in turn
            # with the run above so that the machine's load falls on both alike.
            runner = DaskTaskRunner(address=cluster.scheduler_address)
            tuner = _tuner(
                ctx, trials, sleep_s, workers, f"w8-no-artifacts-{rep}", runner, artifacts=False
            )
            _one(ctx, rec, EXISTING_NO_ARTIFACTS, tuner, f"W8-no-artifacts-{rep}", **kwargs)

    if ctx.floor:
        from distributed import Client

        with Client(cluster.scheduler_address) as client:
            client.gather(client.map(sleep_task, [0.0] * workers, pure=False))  # warm
            for _ in range(repeat):
                ctx.settle_server()
                called_at = time.time()
                futures = [client.submit(sleep_task, sleep_s, pure=False) for _ in range(trials)]
                stamps = client.gather(futures)
                span = record_span(
                    rec,
                    FLOOR,
                    stamps=stamps,
                    called_at=called_at,
                    returned_at=time.time(),
                    **kwargs,
                )
                print(
                    f"  W8 {FLOOR}: span {span['span_s']:.1f} s "
                    f"({span['span_s'] / span['ideal_s']:.3f}x), call "
                    f"{span['wall_s']:.1f} s, slot idle {span['idle_ms']:.0f} ms/trial, "
                    f"load {_load()}",
                    flush=True,
                )
        rec.note(
            NAME,
            f"'{FLOOR}': the same sleeps as plain Dask tasks on the existing cluster, all "
            "submitted at once; its 'fit() wall' is the submit-to-gather time.",
        )

    if memory_trials:
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        tuner = _tuner(ctx, memory_trials, memory_sleep_s, workers, "w8-memory", runner)
        timing = ctx.fit(tuner, "W8-memory", memory=True)
        assert timing.peak_bytes is not None and timing.retained_bytes is not None
        what = f"{memory_trials} trials x {memory_sleep_s:g} s"
        rec.add(
            NAME,
            f"driver peak memory / trial ({what}, tracemalloc)",
            timing.peak_bytes / memory_trials / 1024,
            unit="KiB",
            better="lower",
            system=EXISTING,
        )
        rec.add(
            NAME,
            f"driver retained memory / trial ({what}, results held)",
            timing.retained_bytes / memory_trials / 1024,
            unit="KiB",
            better="lower",
            system=EXISTING,
        )
        print(
            f"  W8 memory: {what}: driver peak {timing.peak_bytes / memory_trials / 1024:.2f} "
            f"KiB/trial, retained {timing.retained_bytes / memory_trials / 1024:.2f} KiB/trial, "
            f"fit() {timing.wall_s:.1f} s under tracemalloc, load {_load()}",
            flush=True,
        )
