"""Recording measurements and printing them: standard library only (shared with ``ray_side``)."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

PREFECT_TUNE = "prefect-tune"
RAY = "ray tune"


@dataclass
class Series:
    """Repeated measurements of one metric of one workload by one system."""

    workload: str
    metric: str
    unit: str
    better: str | None  # "higher", "lower" or None (not comparable)
    system: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(median=self.median, min=min(self.values), max=max(self.values))
        return out


class Recorder:
    """Everything a benchmark run measured, in the order it was measured."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], Series] = {}
        self.notes: dict[str, list[str]] = {}
        self.setup: dict[str, float] = {}
        self.details: dict[str, Any] = {}

    def add(
        self,
        workload: str,
        metric: str,
        value: float,
        *,
        unit: str,
        better: str | None,
        system: str = PREFECT_TUNE,
    ) -> None:
        key = (workload, metric, system)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series(workload, metric, unit, better, system)
        series.values.append(float(value))

    def note(self, workload: str, text: str) -> None:
        notes = self.notes.setdefault(workload, [])
        if text not in notes:
            notes.append(text)

    def add_setup(self, name: str, seconds: float) -> None:
        self.setup[name] = round(seconds, 3)

    def merge(self, data: dict[str, Any]) -> None:
        """Adds the series, notes and setup times of another recorder's :meth:`to_json`."""
        for item in data.get("series", []):
            for value in item["values"]:
                self.add(
                    item["workload"],
                    item["metric"],
                    value,
                    unit=item["unit"],
                    better=item["better"],
                    system=item["system"],
                )
        for workload, notes in data.get("notes", {}).items():
            for text in notes:
                self.note(workload, text)
        for name, seconds in data.get("setup", {}).items():
            self.setup[name] = seconds
        self.details.update(data.get("details", {}))

    def to_json(self) -> dict[str, Any]:
        return {
            "series": [s.summary() for s in self.series.values()],
            "notes": self.notes,
            "setup": self.setup,
            "details": self.details,
        }


def fmt(value: float | None) -> str:
    """A number with about three significant digits, without exponents for common ranges."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.001 or magnitude == 0:
        return f"{value:.3f}"
    return f"{value:.2e}"


def relative(ours: Series, other: Series) -> str:
    """How prefect-tune compares with ``other``: >1x means prefect-tune is better."""
    if ours.better is None or other.better is None:
        return ""
    a, b = ours.median, other.median
    if a <= 0 or b <= 0:
        return ""
    factor = a / b if ours.better == "higher" else b / a
    return f"{factor:.2f}x ({factor * 100:.0f}%)"


def _system_order(system: str) -> tuple[int, str]:
    if system == PREFECT_TUNE:
        return (0, system)
    if system.startswith("floor"):
        return (1, system)
    return (2, system)


def format_table(rec: Recorder, workload_titles: dict[str, str]) -> str:
    """A Markdown table: every metric, each system's median [min-max], prefect-tune vs it."""
    lines = [
        "| workload | metric | system | median | min | max | prefect-tune vs this |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    metrics: dict[tuple[str, str], list[Series]] = {}
    for series in rec.series.values():
        metrics.setdefault((series.workload, series.metric), []).append(series)
    workloads = list(dict.fromkeys(w for w, _ in metrics))
    for workload in sorted(workloads, key=_workload_key):
        for (w, metric), group in metrics.items():
            if w != workload:
                continue
            group = sorted(group, key=lambda s: _system_order(s.system))
            ours = next((s for s in group if s.system == PREFECT_TUNE), None)
            for series in group:
                versus = relative(ours, series) if ours is not None and series is not ours else ""
                lines.append(
                    f"| {workload} | {metric} ({series.unit}) | {series.system} | "
                    f"{fmt(series.median)} | {fmt(min(series.values))} | "
                    f"{fmt(max(series.values))} | {versus} |"
                )
    out = ["\n".join(lines)]
    notes = [
        f"- {workload} ({workload_titles.get(workload, '')}): {text}"
        for workload in sorted(rec.notes, key=_workload_key)
        for text in rec.notes[workload]
    ]
    if notes:
        out.append("Notes:\n" + "\n".join(notes))
    if rec.setup:
        out.append(
            "Set-up (not in any number above):\n"
            + "\n".join(f"- {name}: {fmt(seconds)} s" for name, seconds in rec.setup.items())
        )
    return "\n\n".join(out)


def _workload_key(name: str) -> tuple[int, str]:
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else 99, name)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    packages = {
        name: _version(name)
        for name in (
            "prefect",
            "prefect-dask",
            "distributed",
            "fsspec",
            "s3fs",
            "moto",
            "pydantic",
            "ray",
        )
    }
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {k: v for k, v in packages.items() if v},
        "git_commit": commit,
    }


@contextlib.contextmanager
def search_time(cls: Any, methods: tuple[str, ...]) -> Iterator[dict[str, float]]:
    """Adds up the time spent in ``cls``'s ``methods`` (the driver's search calls) while open."""
    spent = {"s": 0.0}
    originals = {name: getattr(cls, name) for name in methods}

    def timed(original: Any) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                spent["s"] += time.perf_counter() - start

        return call

    for name, original in originals.items():
        setattr(cls, name, timed(original))
    try:
        yield spent
    finally:
        for name, original in originals.items():
            setattr(cls, name, original)
