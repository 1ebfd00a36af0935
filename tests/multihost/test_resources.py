"""Trial resources: ``with_resources(trainable, {"gpu": 1})`` as Dask worker resources.

On a cluster of real ``dask worker`` processes standing for other hosts (``tests/_hosts.py``),
one of which is started with ``--resources GPU=1`` (a fake GPU: Dask resources are labels).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect_dask import DaskTaskRunner

import prefect_tune as tune
from prefect_tune import ConfigError, ResourcesUnavailableError, RunConfig, TuneConfig, Tuner
from prefect_tune.state import ExperimentStore
from prefect_tune.storage import StorageSpec, layout
from tests._hosts import OtherHosts, hostname_of, other_hosts
from tests.multihost import trainables

PLAIN, GPU = "127.0.0.2", "127.0.0.3"


# -- the request, without a cluster ---------------------------------------------------------------


def _train(config: dict, data: list[int]) -> None:
    tune.report({"loss": float(sum(data))})


def test_ray_names_map_to_dask_resources_and_custom_names_are_kept():
    wrapped = tune.with_resources(
        _train, {"cpu": 2, "GPU": 0.5, "memory": 1e9, "gpu_0": 0, "custom_resources": {"tpu": 1}}
    )
    assert wrapped.__prefect_tune_resources__ == {
        "CPU": 2,
        "GPU": 0.5,
        "MEMORY": 1e9,
        "tpu": 1,
    }
    assert not hasattr(_train, "__prefect_tune_resources__")  # the original is untouched


def test_the_request_survives_with_parameters_either_way_round():
    inner = tune.with_parameters(tune.with_resources(_train, {"gpu": 1}), data=[1, 2])
    outer = tune.with_resources(tune.with_parameters(_train, data=[1, 2]), {"gpu": 1})
    for wrapped in (inner, outer):
        assert wrapped.__prefect_tune_resources__ == {"GPU": 1}
        assert wrapped.__name__ == "_train"


@pytest.mark.parametrize(
    "resources",
    [
        {"gpu": -1},
        {"gpu": "1"},
        {"gpu": True},
        {"gpu": float("nan")},
        [("gpu", 1)],
        {"cpu": 1, "CPU": 2},
    ],
)
def test_a_bad_request_is_a_config_error(resources):
    with pytest.raises(ConfigError, match="with_resources"):
        tune.with_resources(_train, resources)


def test_slots_count_what_each_worker_runs_at_once():
    from prefect_tune._resources import slots

    workers = {
        "tcp://a:1": {"nthreads": 4, "resources": {"GPU": 2}},
        "tcp://b:1": {"nthreads": 1, "resources": {"GPU": 4}},
        "tcp://c:1": {"nthreads": 8, "resources": {}},
    }
    assert slots(workers, {"GPU": 1}) == 2 + 1 + 0  # fewer of threads and of GPUs
    assert slots(workers, {"GPU": 0.5}) == 4 + 1 + 0
    assert slots(workers, {"GPU": 3}) == 0 + 1 + 0
    assert slots(workers, {"GPU": 1, "TPU": 1}) == 0


def test_the_check_names_the_resource_the_workers_and_the_fix():
    from prefect_tune._resources import check_workers

    workers = {
        "tcp://10.0.0.2:1": {"nthreads": 1, "resources": {}},
        "tcp://10.0.0.3:1": {"nthreads": 1, "resources": {"GPU": 1}},
    }
    check_workers(workers, {"GPU": 1}, "tcp://s:8786")  # one worker has it
    check_workers({}, {"GPU": 1}, "tcp://s:8786")  # none connected yet: not checked
    check_workers(workers, {}, "tcp://s:8786")
    with pytest.raises(ResourcesUnavailableError) as info:
        check_workers(workers, {"GPU": 1, "MEMORY": 1.5e9}, "tcp://s:8786")
    message = str(info.value)
    assert "GPU=1,MEMORY=1500000000" in message, message
    assert "tcp://10.0.0.2:1 has no resources" in message, message
    assert "tcp://10.0.0.3:1 has GPU=1" in message, message
    assert 'dask worker tcp://s:8786 --resources "GPU=1,MEMORY=1500000000"' in message, message
    assert isinstance(info.value, ConfigError)


# -- on a cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(prefect_api: str, base: Path) -> Iterator[OtherHosts]:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    with other_hosts(
        base / "local",
        base / "logs",
        env,
        hosts=(PLAIN, GPU),
        worker_args={GPU: ["--resources", "GPU=1"]},
    ) as hosts:
        yield hosts


def _tuner(trainable, name: str, base: Path, cluster: OtherHosts) -> Tuner:
    return Tuner(
        trainable,
        param_space={"x": tune.grid_search([1.0, 2.0, 3.0, 4.0]), "sleep": 0.4},
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name=name, storage_path=str(base / "nfs")),
        task_runner=DaskTaskRunner(address=cluster.scheduler_address),
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", ["fast", "plain"])
def test_gpu_trials_run_one_at_a_time_on_the_gpu_worker_only(cluster, base, path, monkeypatch):
    if path == "plain":  # Prefect's own task_runner.submit, with dask.annotate
        monkeypatch.setenv("PREFECT_TUNE_FAST_TRIAL_DISPATCH", "false")
    name = f"gpu-{path}-{uuid.uuid4().hex[:6]}"
    trainable = tune.with_resources(trainables.where, {"gpu": 1})

    results = _tuner(trainable, name, base, cluster).fit()

    assert results.num_terminated == 4 and results.errors == [], cluster.logs()
    hosts = {r.metrics["host"] for r in results}
    assert hosts == {hostname_of(GPU)}, hosts
    runs = sorted((r.metrics["started"], r.metrics["ended"]) for r in results)
    overlaps = [(a, b) for a, b in zip(runs, runs[1:], strict=False) if b[0] < a[1]]
    assert overlaps == [], runs  # GPU=1: one trial at a time


@pytest.mark.slow
def test_no_worker_with_the_resource_fails_fit_before_any_trial(cluster, base):
    name = f"no-gpu-{uuid.uuid4().hex[:6]}"
    trainable = tune.with_resources(trainables.stepped, {"gpu": 2})
    started = time.monotonic()

    with pytest.raises(ResourcesUnavailableError) as info:
        _tuner(trainable, name, base, cluster).fit()

    assert time.monotonic() - started < 60
    message = str(info.value)
    assert "GPU=2" in message and '--resources "GPU=2"' in message, message
    assert f"tcp://{PLAIN}:" in message and f"tcp://{GPU}:" in message, message
    assert "has GPU=1" in message and "has no resources" in message, message
    assert cluster.scheduler_address in message, message
    # No trial ran, nor was the experiment written (that happens once the cluster passed).
    store = ExperimentStore(StorageSpec(str(base / "nfs" / name)).open())
    assert not store.exists()
    assert not store.storage.exists(layout.TRIALS_DIR)
