"""Multi-host Dask as users run it: ``dask scheduler`` and ``dask worker`` processes, the workers
standing for other hosts (``tests/_hosts.py``: 127.0.0.2 and 127.0.0.3, each with an empty tmpfs
of its own over ``<base>/local`` and a hostname of its own), storage every host reaches: a shared
directory (the NFS stand-in) or S3 (the session's moto server). The workers report to the
session's Prefect API through ``PREFECT_API_URL``.

- an experiment with checkpoints runs on the other hosts;
- a worker killed (SIGKILL) mid-trial: the trial resumes from its checkpoint on the other host;
- a driver killed mid-experiment: ``Tuner.restore`` from a second "host" (a driver in a mount
  namespace of its own, which sees only the shared directory or S3) finishes it.

Every wait is on a file or on stored state, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect_dask import DaskTaskRunner

import prefect_tune as tune
from prefect_tune import FailureConfig, RunConfig, TuneConfig, Tuner
from prefect_tune.state import ExperimentStore, Lease, TrialState, TrialStatus
from prefect_tune.storage import Storage, StorageSpec, layout
from tests._hosts import OtherHosts, hostname_of, on_other_host, other_hosts
from tests.multihost import trainables
from tests.multihost.driver import DONE

pytestmark = pytest.mark.slow

HOSTS = ("127.0.0.2", "127.0.0.3")
SECOND_DRIVER = "127.0.0.4"
STEPS = 4


@dataclass
class Where:
    """Where an experiment is stored: ``storage_path`` and its fsspec options."""

    kind: str
    storage_path: str
    options: dict[str, Any] | None

    def store(self, name: str) -> ExperimentStore:
        Storage._cache.clear()  # read what is stored now, not what a cached listing remembers
        return ExperimentStore(StorageSpec(self.storage_path, self.options).child(name).open())

    def path(self, name: str) -> str:
        return f"{self.storage_path.rstrip('/')}/{name}"


def _env(prefect_api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_api}  # PYTHONPATH is set by conftest


@pytest.fixture(scope="module")
def cluster(prefect_api: str, base: Path) -> Iterator[OtherHosts]:
    with other_hosts(base / "local", base / "logs", _env(prefect_api), hosts=HOSTS) as hosts:
        yield hosts


@pytest.fixture(params=["shared", "s3"])
def where(request: pytest.FixtureRequest, base: Path) -> Where:
    if request.param == "shared":
        return Where("shared", str(base / "nfs" / f"root-{uuid.uuid4().hex[:8]}"), None)
    server = request.getfixturevalue("s3_server")
    return Where("s3", f"s3://{server.new_bucket()}/root", server.options)


@pytest.fixture
def marks(base: Path) -> Path:
    """A directory on the shared disk, where trials leave markers and tests open gates."""
    path = base / "nfs" / f"marks-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def wait_for(what: str, check: Callable[[], Any], timeout: float, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s\n{logs()}")
        time.sleep(0.1)


def history_iterations(store: ExperimentStore, trial: TrialState) -> list[int]:
    return [row["training_iteration"] for row in store.read_history(trial)]


def attempt_hosts(trial: TrialState) -> list[str]:
    return [a.host for a in trial.attempts if a.host]


def flow_run_states(name: str) -> list[str]:
    async def read() -> list[str]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
        return sorted(run.state.type.value for run in runs if run.state is not None)

    return asyncio.run(read())


# -- an experiment with checkpoints ---------------------------------------------------------------


def test_an_experiment_with_checkpoints_runs_on_the_other_hosts(cluster, where):
    name = f"runs-{uuid.uuid4().hex[:6]}"

    results = Tuner(
        trainables.stepped,
        param_space={"x": tune.grid_search([1.0, 2.0]), "steps": STEPS},
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(
            name=name, storage_path=where.storage_path, storage_options=where.options
        ),
        task_runner=DaskTaskRunner(address=cluster.scheduler_address),
    ).fit()

    assert results.num_terminated == 2 and results.errors == [], cluster.logs()
    store = where.store(name)
    _, trials = store.load_trials()
    workers = {hostname_of(host) for host in HOSTS}
    for trial in trials:
        assert trial.status is TrialStatus.TERMINATED
        assert set(attempt_hosts(trial)) <= workers, trial.attempts  # never the driver's host
        assert history_iterations(store, trial) == list(range(1, STEPS + 1))
        assert [c.training_iteration for c in trial.checkpoints] == list(range(1, STEPS + 1))
    # The checkpoints the workers wrote are read back on the driver.
    best = results.get_best_result()
    with best.checkpoint.as_directory() as d:
        assert json.loads((Path(d) / "state.json").read_text()) == {"step": STEPS}
    assert flow_run_states(name) == ["COMPLETED"]


# -- a worker killed mid-trial --------------------------------------------------------------------


@pytest.fixture
def own_cluster(prefect_api: str, base: Path) -> Iterator[OtherHosts]:
    """A cluster of its own, for a test that kills one of its workers."""
    run = uuid.uuid4().hex[:6]
    with other_hosts(base / "local", base / f"logs-{run}", _env(prefect_api), hosts=HOSTS) as hosts:
        yield hosts


def test_a_worker_killed_mid_trial_resumes_the_trial_on_the_other_host(own_cluster, where, marks):
    cluster = own_cluster
    name = f"killed-worker-{uuid.uuid4().hex[:6]}"
    gate = marks / "gate"
    killed: list[str] = []
    failures: list[BaseException] = []

    def kill_the_worker_holding_the_trial() -> None:
        try:
            held = wait_for(
                "held trial",
                lambda: (marks / "held-1.0").exists() and (marks / "held-1.0").read_text(),
                180,
                cluster.logs,
            )
            host = next(h for h in HOSTS if hostname_of(h) == held)
            cluster.kill_worker(host)
            killed.append(host)
        except BaseException as exc:  # seen by the test below
            failures.append(exc)
        finally:
            gate.touch()  # whatever happened, let the trial finish

    killer = threading.Thread(target=kill_the_worker_holding_the_trial, daemon=True)
    killer.start()
    results = Tuner(
        trainables.stepped,
        param_space={
            "x": 1.0,
            "steps": STEPS,
            "hold_at": 2,
            "marks": str(marks),
            "gate": str(gate),
        },
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(
            name=name,
            storage_path=where.storage_path,
            storage_options=where.options,
            failure_config=FailureConfig(max_failures=2),
        ),
        task_runner=DaskTaskRunner(address=cluster.scheduler_address),
    ).fit()
    killer.join(timeout=30)

    assert failures == [] and len(killed) == 1, (failures, cluster.logs())
    (survivor,) = set(HOSTS) - set(killed)
    assert results.num_terminated == 1 and results.errors == [], cluster.logs()
    store = where.store(name)
    _, (trial,) = store.load_trials()
    assert trial.status is TrialStatus.TERMINATED and trial.num_failures == 1
    hosts = attempt_hosts(trial)
    assert hosts[0] == hostname_of(killed[0]) and hosts[-1] == hostname_of(survivor), trial.attempts
    assert trial.attempts[-1].start_iteration >= 2, trial.attempts  # from its checkpoint
    assert trial.attempts[-1].resumed_from, trial.attempts
    assert history_iterations(store, trial) == list(range(1, STEPS + 1))  # each once
    assert results[0].metrics["host"] == hostname_of(survivor)


# -- a driver killed, restored from another host ---------------------------------------------------


def _start_driver(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, killed as a whole
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _lease(store: ExperimentStore) -> Lease | None:
    try:
        return Lease.model_validate_json(store.storage.read_bytes(layout.LEASE_FILE))
    except FileNotFoundError:
        return None


def test_restore_from_another_host_finishes_an_experiment_whose_driver_was_killed(
    cluster, where, marks, prefect_api, base
):
    name = f"killed-driver-{uuid.uuid4().hex[:6]}"
    gate = marks / "gate"
    env = _env(prefect_api)
    address = cluster.scheduler_address
    options = json.dumps(where.options)
    driver_module = [sys.executable, "-m", "tests.multihost.driver"]
    first_log, second_log = marks / "first.log", marks / "second.log"
    first = _start_driver(
        [
            *driver_module,
            "fit",
            f"--storage-path={where.storage_path}",
            f"--name={name}",
            f"--address={address}",
            f"--options={options}",
            f"--marks={marks}",
            f"--gate={gate}",
            "--lease-ttl=5",
        ],
        env,
        first_log,
    )
    second = None

    def logs() -> str:
        parts = [
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
            for p in (first_log, second_log)
            if p.exists()
        ]
        return "\n".join([*parts, cluster.logs()])

    try:
        # Both trials hold after step 2 (its checkpoint committed): the driver dies there.
        wait_for(
            "held trials",
            lambda: (marks / "held-1.0").exists() and (marks / "held-2.0").exists(),
            180,
            logs,
        )
        store = where.store(name)
        held_by = _lease(store)
        assert held_by is not None and not held_by.released
        _kill(first)
        # Its lease runs out (5 s without renewal); a driver on another host may then take over.
        wait_for(
            "lease expiry",
            lambda: time.time() > (_lease(store) or held_by).expires_at + 0.5,
            60,
            logs,
        )

        second = _start_driver(
            on_other_host(
                base / "local",
                SECOND_DRIVER,
                [
                    *driver_module,
                    "restore",
                    f"--path={where.path(name)}",
                    f"--address={address}",
                    f"--options={options}",
                ],
            ),
            env,
            second_log,
        )
        wait_for(
            "takeover",
            lambda: (lease := _lease(store)) is not None and lease.owner != held_by.owner,
            120,
            logs,
        )
        gate.touch()  # the first driver's trials go on, see the new lease and stop
        second.wait(timeout=180)
        assert second.returncode == 0, logs()
    finally:
        gate.touch()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                _kill(proc)

    done = [line for line in second_log.read_text().splitlines() if line.startswith(DONE)]
    assert done and json.loads(done[-1][len(DONE) :]) == {
        "host": hostname_of(SECOND_DRIVER),
        "terminated": 2,
        "errors": 0,
    }, logs()
    store = where.store(name)
    lease = _lease(store)
    assert lease is not None and lease.host == hostname_of(SECOND_DRIVER) and lease.released
    state, trials = store.load_trials()
    assert state is not None and len(state.flow_runs) == 2, state
    for trial in trials:
        assert trial.status is TrialStatus.TERMINATED, trial
        assert history_iterations(store, trial) == list(range(1, STEPS + 1)), trial.attempts
        assert trial.attempts[-1].start_iteration >= 2, trial.attempts  # from its checkpoint
        assert trial.attempts[-1].flow_run_id == state.flow_runs[-1].flow_run_id  # the 2nd run
    # The killed driver's flow run is marked CRASHED by the one that took over.
    assert flow_run_states(name) == ["COMPLETED", "CRASHED"]
