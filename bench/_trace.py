"""Where one trial's time goes: timestamps from the driver, Prefect, prefect-tune and the trainable.

All clocks are ``time.time()`` on one host, so they compare directly:

- driver: ``PrefectTaskExecutor.submit`` entry and return, and its done callback (recorded by
  wrapping those two methods for the duration of a run; behaviour is unchanged);
- Prefect API: the task run's state history (Pending, Running, Completed timestamps);
- prefect-tune: the attempt record (``started_at`` is stamped in ``_begin`` after reading the
  trial's state; ``ended_at`` after the trainable returned and buffered results were flushed);
- trainable: ``t_start`` and ``t_report`` (just before ``report()``), reported as metrics.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DriverTrace:
    submits: dict[str, tuple[float, float]] = field(default_factory=dict)  # trial id -> (in, out)
    futures: dict[int, str] = field(default_factory=dict)  # id(future) -> trial id
    done: dict[int, float] = field(default_factory=dict)  # id(future) -> callback time
    task_runs: dict[str, str] = field(default_factory=dict)  # trial id -> task run id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done_at(self, trial_id: str) -> float | None:
        for key, tid in self.futures.items():
            if tid == trial_id:
                return self.done.get(key)
        return None


@contextlib.contextmanager
def trace_driver() -> Iterator[DriverTrace]:
    """Records submit and completion times of every trial task while the block runs."""
    from prefect_tune.prefect._executor import PrefectTaskExecutor

    trace = DriverTrace()
    own = dict(PrefectTaskExecutor.__dict__)  # to put back exactly what the class defined
    original_submit = PrefectTaskExecutor.submit
    original_on_done = PrefectTaskExecutor._on_done

    def submit(self: Any, request: Any) -> Any:
        began = time.time()
        future = original_submit(self, request)
        ended = time.time()
        with trace.lock:
            trace.submits[request.trial.trial_id] = (began, ended)
            trace.futures[id(future)] = request.trial.trial_id
            task_run_id = getattr(future, "task_run_id", None)
            if task_run_id is not None:
                trace.task_runs[request.trial.trial_id] = str(task_run_id)
        return future

    def on_done(self: Any, handle: Any) -> None:
        with trace.lock:
            trace.done.setdefault(id(handle), time.time())
        original_on_done(self, handle)

    PrefectTaskExecutor.submit = submit  # type: ignore[method-assign]
    PrefectTaskExecutor._on_done = on_done  # type: ignore[method-assign]
    try:
        yield trace
    finally:
        for name in ("submit", "_on_done"):
            if name in own:
                setattr(PrefectTaskExecutor, name, own[name])
            else:  # inherited: remove the wrapper
                delattr(PrefectTaskExecutor, name)


def _prefect_states(
    task_run_ids: list[str], timeout_s: float = 15.0
) -> dict[str, dict[str, float]]:
    """First timestamp of each state type of each task run, from the Prefect API.

    Task run states reach the API asynchronously (as events), so this waits for them a little.
    """
    from prefect.client.orchestration import get_client

    out: dict[str, dict[str, float]] = {}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        for run_id in task_run_ids:
            while True:
                try:
                    states = client.read_task_run_states(uuid.UUID(run_id))
                except Exception:  # not recorded yet
                    states = []
                types = {s.type.value for s in states}
                if "COMPLETED" in types or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            stamps: dict[str, float] = {}
            for state in sorted(states, key=lambda s: s.timestamp):
                stamps.setdefault(state.type.value, state.timestamp.timestamp())
            out[run_id] = stamps
    return out


# (label, owner) of each step, in order; a step is the time from its start event to the next.
STEPS = [
    ("driver: submit() call", "submit_in", "submit_out"),
    ("submit returned -> Prefect Pending", "submit_out", "PENDING"),
    ("Prefect Pending -> Running", "PENDING", "RUNNING"),
    ("Running -> prefect-tune attempt record (read trial.json)", "RUNNING", "attempt_start"),
    ("attempt record -> trainable start (write trial.json, session)", "attempt_start", "t_start"),
    ("trainable body", "t_start", "t_report"),
    ("report() + final flush of results", "t_report", "attempt_end"),
    ("attempt end -> Prefect Completed (write trial.json, return)", "attempt_end", "COMPLETED"),
    ("Prefect Completed -> driver done callback", "COMPLETED", "done"),
]


def breakdown(trace: DriverTrace, results: Any, max_trials: int = 64) -> dict[str, Any]:
    """Per-step median and p90 (ms) over up to ``max_trials`` trials of a finished experiment."""
    events: dict[str, dict[str, float]] = {}
    for result in list(results)[:max_trials]:
        trial = result._trial  # the TrialState snapshot the ResultGrid holds
        attempt = trial.attempts[-1]
        tid = trial.trial_id
        stamps: dict[str, float] = {}
        if tid in trace.submits:
            stamps["submit_in"], stamps["submit_out"] = trace.submits[tid]
        done = trace.done_at(tid)
        if done is not None:
            stamps["done"] = done
        stamps["attempt_start"] = attempt.started_at
        if attempt.ended_at is not None:
            stamps["attempt_end"] = attempt.ended_at
        for key in ("t_start", "t_report"):
            if isinstance(result.metrics.get(key), (int, float)):
                stamps[key] = float(result.metrics[key])
        run_id = attempt.task_run_id or trace.task_runs.get(tid)
        if run_id:
            stamps["task_run_id"] = run_id  # type: ignore[assignment]
        events[tid] = stamps
    run_ids = [str(s["task_run_id"]) for s in events.values() if "task_run_id" in s]
    states = _prefect_states(run_ids)
    for stamps in events.values():
        run_id = stamps.pop("task_run_id", None)
        if run_id is not None:
            stamps.update(states.get(str(run_id), {}))

    steps: list[dict[str, Any]] = []
    for label, begin, end in STEPS:
        values = [(s[end] - s[begin]) * 1000 for s in events.values() if begin in s and end in s]
        if not values:
            # A missing event (e.g. no Pending state): the step merges into the next one.
            continue
        steps.append(_stat(label, values))
    totals = [
        (s["done"] - s["submit_in"]) * 1000
        for s in events.values()
        if "done" in s and "submit_in" in s
    ]
    if totals:
        steps.append(_stat("total: submit -> driver done callback", totals))
    # The driver's turnaround: from a completion to the next submission it enables.
    dones = sorted(trace.done.values())
    submits = sorted(t for t, _ in trace.submits.values())
    gaps = []
    for t_submit in submits:
        before = [d for d in dones if d <= t_submit]
        if before:
            gaps.append((t_submit - before[-1]) * 1000)
    if gaps:
        steps.append(_stat("driver: done callback -> next submit", gaps))
    return {"trials": len(events), "steps": steps}


def _stat(label: str, values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {
        "step": label,
        "n": len(values),
        "median_ms": round(statistics.median(values), 2),
        "p90_ms": round(p90, 2),
        "max_ms": round(ordered[-1], 2),
        "over_1s": sum(v > 1000 for v in values),
    }


def format_breakdown(data: dict[str, Any], workload: str = "W1") -> str:
    lines = [
        f"Where one {workload} trial's time goes ({data['trials']} trials of the last run, ms):",
        "",
        "| step | median | p90 | max | n | n > 1 s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for step in data["steps"]:
        lines.append(
            f"| {step['step']} | {step['median_ms']} | {step['p90_ms']} | {step['max_ms']} | "
            f"{step['n']} | {step['over_1s']} |"
        )
    return "\n".join(lines)
