"""Embedded mode: no ``PREFECT_API_URL``, Prefect's temporary API server in the driver's process.

Every Dask worker reports to the driver's one temporary server, however many workers there
are; nothing the experiment started (that server, Dask's processes) outlives the driver,
whether it ends or is killed with SIGKILL. Each driver runs as its own process, with its own
``PREFECT_HOME``: the processes it leaves behind are those whose environment names that home.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_tune import ResultGrid, TrialStatus
from tests._env import REPO_ROOT


def _driver_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",  # as `make demo` runs
    )
    return env


def _processes_with_home(home: Path) -> list[str]:
    """``pid cmdline`` of every process whose environment has ``PREFECT_HOME=<home>``."""
    marker = f"PREFECT_HOME={home}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(f"{entry} {cmdline.decode(errors='replace')[:150]}")
    return found


def _wait_until_gone(home: Path, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = _processes_with_home(home)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _start(tmp_path: Path, home: Path, *args: str) -> subprocess.Popen[str]:
    home.mkdir()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.embedded.driver",
            "--storage",
            str(tmp_path / "store"),
            *args,
        ],
        cwd=REPO_ROOT,
        env=_driver_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_sixteen_workers_report_to_the_one_temporary_server_and_nothing_outlives_the_driver(
    tmp_path,
):
    home = tmp_path / "home"
    driver = _start(tmp_path, home, "--name", "wide", "--workers", "16", "--trials", "32")
    try:
        output, _ = driver.communicate(timeout=420)
    finally:
        driver.kill()
    assert driver.returncode == 0, output[-4000:]
    assert "EMBEDDED-DONE trials=32 errors=0" in output, output[-4000:]
    # One temporary server, the driver's: none of the 16 workers started its own.
    assert output.count("Starting temporary server") == 1, output[-4000:]
    results = ResultGrid.from_path(tmp_path / "store" / "wide")
    assert [r.status for r in results] == [TrialStatus.TERMINATED] * 32
    assert _wait_until_gone(home, timeout=30) == []


@pytest.mark.slow
def test_a_driver_killed_mid_run_leaves_no_server_and_no_worker_behind(tmp_path):
    home, hold = tmp_path / "home", tmp_path / "hold"
    hold.mkdir()
    (hold / "hold").touch()
    driver = _start(
        tmp_path, home, "--name", "killed", "--workers", "4", "--trials", "8", "--hold", str(hold)
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(hold.glob("*.started"))) < 4:  # every worker is running a trial
            assert driver.poll() is None, driver.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "the trials did not start"
            time.sleep(0.2)
        assert any("uvicorn" in line for line in _processes_with_home(home))
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        assert _wait_until_gone(home, timeout=30) == []
    finally:
        driver.kill()
        for line in _processes_with_home(home):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def test_a_worker_that_cannot_reach_the_prefect_api_says_which_url():
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_tune.exceptions import PrefectAPIUnreachableError
    from prefect_tune.prefect._fast._worker import _check_reachable

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    with (
        temporary_settings(updates={PREFECT_API_URL: url}),
        get_client(sync_client=True) as client,
        pytest.raises(PrefectAPIUnreachableError, match=re.escape(url)),
    ):
        _check_reachable(client)
