"""Promise 8: storage is checked up front, on a cluster whose workers stand for other hosts.

A ``dask scheduler`` on 127.0.0.1 and two ``dask worker`` processes bound to 127.0.0.2 and
127.0.0.3, each in a mount namespace of its own with an empty tmpfs over ``<base>/local``
(see ``tests/_hosts.py``). ``<base>/local`` is then a local disk as a multi-node user has one:
the driver's files there are invisible to the workers. ``<base>/nfs`` is seen by every process
alike and stands for an NFS mount.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    TaskRunFilter,
)
from prefect_dask import DaskTaskRunner

import prefect_tune as tune
from prefect_tune import RunConfig, TuneConfig, Tuner
from prefect_tune.exceptions import StorageNotSharedError
from prefect_tune.state import ExperimentStore, TrialStatus, read_lease
from prefect_tune.storage import Storage, StorageSpec, layout
from tests import trainables
from tests._hosts import OtherHosts, namespaces_unavailable, other_hosts

pytestmark = pytest.mark.slow

HOSTS = ("127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hosts")


@pytest.fixture(scope="module")
def cluster(prefect_api: str, base: Path) -> Iterator[OtherHosts]:
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(f"cannot stand up other hosts here: {reason}")
    (base / "nfs").mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_api}  # PYTHONPATH is set by conftest
    with other_hosts(base / "local", base / "logs", env, hosts=HOSTS) as hosts:
        yield hosts


def quadratic_tuner(name: str, storage_path: Path, cluster: OtherHosts) -> Tuner:
    return Tuner(
        trainables.quadratic,
        param_space={"x": tune.grid_search([1.0, 3.0])},
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name=name, storage_path=str(storage_path)),
        task_runner=DaskTaskRunner(address=cluster.scheduler_address),
    )


def flow_and_task_runs(name: str):
    async def read():
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[run.id for run in flow_runs])
                ),
                task_run_filter=TaskRunFilter(),
            )
            return flow_runs, task_runs

    return asyncio.run(read())


def test_the_workers_see_their_own_local_disk_and_share_the_nfs_one(cluster, base):
    """The stand-in itself: what the driver writes under local/ the workers do not see."""
    from distributed import Client

    marker = f"driver-{uuid.uuid4().hex}"
    (base / "local" / marker).write_text("on the driver's disk")
    (base / "nfs" / marker).write_text("on the shared disk")
    with Client(cluster.scheduler_address) as client:
        local = client.run(os.listdir, str(base / "local"))
        shared = client.run(os.path.exists, str(base / "nfs" / marker))
    assert sorted(local) == sorted(shared) and len(local) == 2, cluster.logs()
    assert {address.split("://")[1].rsplit(":", 1)[0] for address in local} == set(HOSTS)
    assert all(names == [] for names in local.values()), local
    assert all(shared.values()), shared


def test_local_storage_fails_before_any_trial_naming_workers_and_fix(cluster, base):
    name = f"not-shared-{uuid.uuid4().hex[:8]}"
    experiment = base / "local" / name

    with pytest.raises(StorageNotSharedError) as info:
        quadratic_tuner(name, base / "local", cluster).fit()

    message = str(info.value)
    for host in HOSTS:
        assert f"tcp://{host}:" in message, message
    assert "2 of 2" in message, message
    assert "NFS" in message and ("s3://" in message or "gs://" in message), message
    assert str(experiment) in message, message

    # No trial ran: nothing under trials/, no task run in Prefect, and the flow run failed.
    storage = Storage.open(StorageSpec(str(experiment)))
    assert not storage.exists(layout.TRIALS_DIR) or storage.list_dir(layout.TRIALS_DIR) == []
    flow_runs, task_runs = flow_and_task_runs(name)
    assert len(flow_runs) == 1 and flow_runs[0].state.is_failed(), flow_runs
    assert StorageNotSharedError.__name__ in (flow_runs[0].state.message or "")
    assert task_runs == []

    # Nothing written but the released lease: the definition is written only once the storage
    # check passed (under the lease), so a run with shared storage starts the experiment
    # afresh. The probe marker is gone.
    Storage._cache.clear()
    stored = Storage.open(StorageSpec(str(experiment)))
    assert not ExperimentStore(stored).exists()
    lease = read_lease(stored)
    assert lease is None or lease.released
    assert not (experiment / layout.PROBE_DIR).exists() or not any(
        (experiment / layout.PROBE_DIR).iterdir()
    )


def test_shared_storage_passes_and_the_trials_run_on_the_other_hosts(cluster, base):
    name = f"shared-{uuid.uuid4().hex[:8]}"

    results = quadratic_tuner(name, base / "nfs", cluster).fit()

    assert len(results) == 2 and results.num_terminated == 2 and results.errors == []
    assert {r.status for r in results} == {TrialStatus.TERMINATED}
    assert results.get_best_result().config["x"] == 3.0
    assert results.get_best_result().metrics["loss"] == 0.0
    # Written by the workers straight to the shared directory, and readable from it anew.
    Storage._cache.clear()
    again = tune.ResultGrid.from_path(str(base / "nfs" / name))
    assert again.num_terminated == 2
    assert sorted(r.config["x"] for r in again) == [1.0, 3.0]
    for result in again:
        assert list(result.metrics_dataframe["training_iteration"]) == [1, 2, 3, 4, 5]
    # Nothing of it on the driver's local disk, and the task runs are in Prefect.
    assert not (base / "local" / name).exists()
    flow_runs, task_runs = flow_and_task_runs(name)
    assert len(flow_runs) == 1 and flow_runs[0].state.is_completed()
    assert len(task_runs) == 2 and all(run.state.is_completed() for run in task_runs)
