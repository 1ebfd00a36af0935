"""A real ``prefect server start`` (services on) with the ``tune-pool`` process pool, the example
deployments deployed from the repository root and a ``prefect worker start``, for the module."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests._env import REPO_ROOT

PREFECT = os.path.join(os.path.dirname(sys.executable), "prefect")


@dataclass
class Stack:
    api_url: str
    ui_url: str
    env: dict[str, str]
    storage: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[Any], name: str) -> None:
    """SIGINT, a second SIGINT (a worker wants two), then SIGKILL; each wait bounded."""
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGKILL):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            print(f"{name} still running after {sig.name}")


def _prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PREFECT, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="package")
def nightly_run(stack: Stack) -> Any:
    """One finished run of ``tune-digits/nightly`` with small parameters (shared by the tests
    that look at what it left: the experiment, its artifacts, events, the UI)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    storage = os.path.join(stack.storage, "nightly")
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        run = run_deployment(
            "tune-digits/nightly",
            parameters={
                "storage_path": storage,
                "num_samples": 1,
                "epochs": 2,
                "max_concurrent_trials": 1,
            },
            timeout=0,
        )
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 300
            while True:
                run = client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    return run
                assert time.monotonic() < deadline, f"{run.name} still {run.state} after 300 s"
                time.sleep(1)


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    root = tempfile.mkdtemp(prefix="prefect-tune-deploy-")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=os.path.join(root, "home"),
        PREFECT_API_URL=api_url,
        PREFECT_UI_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root}/prefect.db",
        PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
        PREFECT_LOGGING_LEVEL="INFO",
    )
    env.pop("PREFECT_PROFILES_PATH", None)
    server_log = open(os.path.join(root, "server.log"), "w")  # noqa: SIM115 (open while the server runs)
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    worker = None
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"prefect server exited; see {server_log.name}"
            try:
                with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"server not up in 180 s; see {server_log.name}"
            time.sleep(0.5)
        _prefect(env, "work-pool", "create", "tune-pool", "--type", "process")
        _prefect(
            env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"
        )
        worker_log = open(os.path.join(root, "worker.log"), "w")  # noqa: SIM115 (open while the worker runs)
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "tune-pool"],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        print(f"prefect server {api_url}, logs in {root}")
        yield Stack(api_url, f"http://127.0.0.1:{port}", env, os.path.join(root, "results"))
    finally:
        if worker is not None:
            _stop(worker, "worker")
        _stop(server, "server")
