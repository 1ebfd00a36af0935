"""`python -m bench.run` runs every workload and floor end to end, at tiny sizes, and its
correctness rows (W5, W7) say what the promises say. Its speed is not asserted here: the bench
prints figures (bench/RESULTS.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "W1.trials": 8,
    "W2.reports": 50,
    "W3.checkpoints": 3,
    "W3.mib": 1,
    "W4.trials": [50],
    "W5.trials": 4,
    "W5.iterations": 6,
    "W6.checkpoints": 3,
    "W6.mib": 1,
    "W7.trials": 4,
    "W7.iterations": 6,
    "W7.fail_at": 3,
    "W7.failing": 2,
    "W8.trials": 8,
    "W8.workers": 2,
    "W8.sleep_s": 0.1,
    "W8.memory_trials": 0,
}


def test_the_benchmarks_run_every_workload_and_floor(tmp_path):
    out = tmp_path / "bench.json"
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--repeat", "1", *sets, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    series = json.loads(out.read_text())["series"]
    values = {(s["workload"], s["metric"], s["system"]): s["values"] for s in series}

    def only(workload: str, metric_start: str, system: str = "prefect-tune") -> float:
        found = [
            v
            for (w, metric, sys_), v in values.items()
            if w == workload and metric.startswith(metric_start) and sys_ == system
        ]
        assert len(found) == 1 and len(found[0]) == 1, (workload, metric_start, system, found)
        return found[0][0]

    assert all(math.isfinite(x) for v in values.values() for x in v)
    for workload in ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"):
        assert any(w == workload and s == "prefect-tune" for w, _, s in values), workload
    assert only("W1", "throughput") > 0
    assert only("W1", "throughput", "floor: dask client.map") > 0
    assert only("W1", "throughput", "floor: prefect tasks") > 0
    assert only("W1", "throughput", "prefect-tune, OptunaSearch") > 0
    assert only("W1", "search cost per trial", "prefect-tune, OptunaSearch") > 0
    assert only("W2", "reports/s (fit wall)") > 0
    for workload, floor in (("W3", "floor: fsspec put (local)"), ("W6", "floor: s3fs put (moto)")):
        assert only(workload, "commit MiB/s") > 0
        assert only(workload, "commit MiB/s", floor) > 0
        assert only(workload, "commit MiB/s", "floor in a trial (raw put from the trainable)") > 0
    assert only("W4", "restore: load_summaries (N=50)") > 0

    # W5: the driver killed half-way, then restored.
    assert only("W5", "trials matching reference") == TINY["W5.trials"]
    assert only("W5", "trials resumed from latest committed checkpoint") == TINY["W5.trials"]
    assert only("W5", "committed iterations run again") == 0
    assert only("W5", "finished trials run again") == 0
    # W7: errored trials retried, resumed and restarted.
    for case in ("(a)", "(b)", "(c)"):
        assert only("W7", f"{case} trials matching reference") == TINY["W7.trials"], case
    assert only("W7", "(b) errored trials resumed from latest checkpoint") == TINY["W7.failing"]
    assert only("W7", "(b) finished trials run again") == 0
    assert only("W7", "(c) finished trials run again") == 0


W8_TINY = {
    "W8.trials": 16,
    "W8.workers": 4,
    "W8.sleep_s": 0.2,
    "W8.memory_trials": 24,
    "W8.memory_sleep_s": 0.01,
}


def test_w8_runs_its_systems_and_floor_and_prints_span_and_fit(tmp_path):
    """W8 at a tiny size: every system's span and fit() come out as multiples of the ideal,
    beside the per-trial CPU, memory and the gaps around the trials."""
    out = tmp_path / "w8.json"
    sets = [
        arg for key, value in W8_TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--only", "W8", *sets, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    values = {(s["workload"], s["metric"], s["system"]): s["values"] for s in data["series"]}
    assert {w for w, _, _ in values} == {"W8"}
    ideal = W8_TINY["W8.trials"] * W8_TINY["W8.sleep_s"] / W8_TINY["W8.workers"]
    systems = (
        "prefect-tune",
        "prefect-tune, existing cluster",
        "prefect-tune, existing cluster, trial_tags=()",
        "floor: dask client.submit",
    )
    for system in systems:
        (span_x,) = values[("W8", "span / ideal", system)]
        (fit_x,) = values[("W8", "fit() / ideal", system)]
        (span,) = values[("W8", "span", system)]
        (wall,) = values[("W8", "fit() wall", system)]
        # Every trial slept its full time, so nothing can beat the ideal; the span is inside fit().
        assert span_x >= 1.0 and fit_x >= span_x, system
        assert math.isclose(span, span_x * ideal, rel_tol=1e-9), system
        assert math.isclose(wall, fit_x * ideal, rel_tol=1e-9), system
        (idle,) = values[
            ("W8", "worker slot idle per trial ((slots x span - work) / trials)", system)
        ]
        assert idle >= 0, system
    for system in systems[:3]:
        (driver_cpu,) = values[("W8", "CPU / trial during fit(): driver", system)]
        assert driver_cpu > 0, system
        assert ("W8", "driver RSS growth during fit()", system) in values
    memory = [k for k in values if k[1].startswith("driver peak memory / trial (24 trials")]
    assert len(memory) == 1 and values[memory[0]][0] > 0
    printed = proc.stdout
    assert "| W8 | span / ideal (x) | prefect-tune |" in printed
    assert "| W8 | fit() / ideal (x) | floor: dask client.submit |" in printed
    assert "ideal 0.8 s" in printed  # the note states the ideal the ratios divide by
    assert "W8 memory: 24 trials x 0.01 s: driver peak" in printed
