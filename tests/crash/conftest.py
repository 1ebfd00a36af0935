"""Fixtures of the crash suite: storage backends, the reference run, experiments to crash, and
a table of how long each crash test took (printed at the end of the session)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._env import REPO_ROOT
from tests.crash.checks import Reference, check_experiment, load_reference
from tests.crash.harness import (
    TIMINGS,
    Backend,
    CrashExperiment,
    local_backend,
    s3_backend,
    unique_name,
)

ITERATIONS = 12  # the driver's default --iterations


@pytest.fixture(scope="session")
def crash_env(prefect_api: str) -> dict[str, str]:
    """The environment of driver processes: every run reports to the session's Prefect API."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = prefect_api
    env["PREFECT_LOGGING_LEVEL"] = "INFO"  # timestamps of each phase, in the run's .err file
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *(p for p in paths if p != REPO_ROOT)])
    return env


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path / "store")
    return s3_backend(request.getfixturevalue("s3_server"))


@pytest.fixture
def make_experiment(
    crash_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., CrashExperiment]]:
    """Makes a :class:`CrashExperiment`; records the test's duration for the timing table."""
    made: list[CrashExperiment] = []

    def make(backend: Backend, extra_args: list[str] | None = None) -> CrashExperiment:
        name = unique_name("crash")
        exp = CrashExperiment(
            name, backend, tmp_path / name, crash_env, extra_args=list(extra_args or [])
        )
        made.append(exp)
        return exp

    started = time.monotonic()
    yield make
    runs = sum(exp.runs for exp in made)
    kills = ", ".join(f"{k.point}/{k.mode}@{k.at_s:.1f}s" for exp in made for k in exp.kills)
    TIMINGS.append((request.node.nodeid, time.monotonic() - started, f"{runs} runs; {kills}"))


@pytest.fixture(scope="session")
def reference(crash_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The experiment run once, without faults, on local storage."""
    workdir = tmp_path_factory.mktemp("crash-reference")
    exp = CrashExperiment("reference", local_backend(workdir / "store"), workdir, crash_env)
    started = time.monotonic()
    exp.run_to_end()
    duration = time.monotonic() - started
    TIMINGS.append(("reference run", duration, "1 run"))
    ref = load_reference(exp, duration, ITERATIONS)
    check_experiment(exp, ref)
    return ref


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("crash suite timings")
    for nodeid, seconds, detail in TIMINGS:
        terminalreporter.write_line(f"{seconds:7.1f} s  {nodeid}  [{detail}]")
    terminalreporter.write_line(f"{sum(s for _, s, _ in TIMINGS):7.1f} s  total")
