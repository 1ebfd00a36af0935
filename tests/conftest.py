"""Fixtures shared by the whole suite: a Prefect API, object-store servers, storage roots, Dask.

Every server runs on 127.0.0.1 (started by :mod:`prefect_tune.testing`) at most once per
session, and only when a test asks for it: a test that uses only in-memory storage starts
nothing.

- ``prefect_api``: a temporary Prefect API (``prefect_test_harness``); yields its URL.
- ``s3_server`` / ``gcs_server``: a moto S3 server / a GCS emulator
  (:class:`~prefect_tune.testing.ObjectStoreServer`).
- ``storage_backend``: one of :data:`~prefect_tune.testing.storage_suite.BACKENDS` with its
  capabilities (:class:`~prefect_tune.testing.storage_suite.StorageBackend`).
- ``storage_spec``: a fresh, empty :class:`StorageSpec` on that backend; a test that takes it
  runs once per backend (ids ``memory``, ``local``, ``shared``, ``s3``, ``gcs``).
- ``dask_cluster``: a ``LocalCluster`` with two worker processes; ``runner``: a
  ``DaskTaskRunner`` on it.
"""

from __future__ import annotations

import os
import tempfile

from tests._env import settle_environment

# Before Prefect, gcsfs or boto are imported, here and in every process the tests start (Dask
# workers, subprocesses), which inherit the environment.
settle_environment(
    tempfile.mkdtemp(prefix="prefect-tune-tests-home-"),
    prefect_logging_level=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
)

import contextlib  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from prefect_tune import testing  # noqa: E402
from prefect_tune.exceptions import StorageError  # noqa: E402
from prefect_tune.storage import StorageSpec  # noqa: E402
from prefect_tune.testing.storage_suite import BACKENDS, StorageBackend  # noqa: E402

# -- Prefect ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A temporary Prefect API server with its own database, for the whole session.

    Yields:
        The API URL, also set as ``PREFECT_API_URL`` in this process's Prefect settings (pass it
        in the environment of any subprocess that should talk to the same API).
    """
    with testing.prefect_api(startup_timeout=120) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL cluster (Debian's ``postgresql``, ``initdb`` in a temp dir, run as
    a non-root user) on 127.0.0.1 for one test module.

    Yields:
        Its database's URL, ``postgresql+asyncpg://tune@127.0.0.1:<port>/prefect``.
    """
    with testing.postgres_server() as database_url:
        yield database_url


@pytest.fixture(scope="module")
def postgres_prefect_api(prefect_api: str, postgres_database: str) -> Iterator[str]:
    """A ``prefect server start`` on a throw-away PostgreSQL cluster (Debian's ``postgresql``,
    ``initdb`` in a temp dir), for one test module: Prefect's production setup.

    Yields:
        The API URL, set as ``PREFECT_API_URL`` in this process's Prefect settings while the
        module runs (inside the session's ``prefect_api``, which is back after it).
    """
    with testing.prefect_server(postgres_database) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_dask_cluster(postgres_prefect_api: str) -> Iterator[Any]:
    """As ``dask_cluster``, its workers reporting to ``postgres_prefect_api``."""
    with testing.local_cluster(
        n_workers=2, threads_per_worker=2, api_url=postgres_prefect_api
    ) as cluster:
        yield cluster


# -- object-store servers -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[testing.ObjectStoreServer]:
    """A moto S3 server on 127.0.0.1, in a thread of this process, for s3fs through
    ``endpoint_url``.

    moto accepts any credentials until IAM checks are switched on through its
    ``/moto-api/reset-auth`` endpoint (see the credentials test in ``tests/conformance``).
    """
    with testing.moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[testing.ObjectStoreServer]:
    """A gcp-storage-emulator server on 127.0.0.1, in memory, for gcsfs through ``endpoint_url``."""
    with testing.gcs_emulator() as server:
        yield server


# -- storage roots ------------------------------------------------------------------------------


@pytest.fixture
def storage_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The relative paths of the files read whole through any `Storage`, in order, from now on."""
    from prefect_tune.storage import Storage

    reads: list[str] = []
    original = Storage.read_bytes

    def recording(self: Storage, rel: str) -> bytes:
        reads.append(rel)
        return original(self, rel)

    monkeypatch.setattr(Storage, "read_bytes", recording)
    return reads


@pytest.fixture(params=BACKENDS, ids=[backend.name for backend in BACKENDS])
def storage_backend(request: pytest.FixtureRequest) -> StorageBackend:
    """The backend of the current ``storage_spec`` (a test taking either runs once per backend)."""
    return request.param


@pytest.fixture
def storage_spec(
    storage_backend: StorageBackend,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StorageSpec]:
    """A fresh, empty storage root on the current backend, as a :class:`StorageSpec`.

    ``memory`` is ``memory://<uuid>``; ``local`` the test's ``tmp_path``; ``shared`` a directory
    every process on this host sees (the NFS stand-in); ``s3`` / ``gcs`` ``<scheme>://<new
    bucket>/root`` on the session's server, with the options that reach it.
    """
    name = storage_backend.name
    if name == "memory":
        spec = StorageSpec(f"memory://tune-{uuid.uuid4().hex}")
    elif name == "local":
        spec = StorageSpec(str(tmp_path))
    elif name == "shared":
        spec = StorageSpec(str(tmp_path_factory.mktemp("shared-root")))
    elif name == "s3":
        server: testing.ObjectStoreServer = request.getfixturevalue("s3_server")
        spec = StorageSpec(f"s3://{server.new_bucket()}/root", server.options)
    elif name == "gcs":
        server = request.getfixturevalue("gcs_server")
        spec = StorageSpec(f"gs://{server.new_bucket()}/root", server.options)
    else:  # pragma: no cover - BACKENDS and this function disagree
        raise AssertionError(f"no storage root for backend {name!r}")
    yield spec
    if name in {"memory", "s3", "gcs"}:  # local roots are removed with pytest's tmp dirs
        with contextlib.suppress(StorageError):
            spec.open().delete("")


# -- Dask ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dask_cluster(prefect_api: str) -> Iterator[Any]:
    """A ``distributed.LocalCluster`` of two worker processes with two threads each.

    Pass ``DaskTaskRunner(address=dask_cluster.scheduler_address)`` to run flows on it (the
    ``runner`` fixture). Its workers report task runs to the test Prefect API, as a real
    deployment's workers would.
    """
    with testing.local_cluster(n_workers=2, threads_per_worker=2, api_url=prefect_api) as cluster:
        yield cluster


@pytest.fixture
def store(storage_spec: StorageSpec) -> Any:
    """An :class:`ExperimentStore` on a fresh root of the current backend."""
    from prefect_tune.state import ExperimentStore

    return ExperimentStore(storage_spec.open())


@pytest.fixture
def runner(dask_cluster: Any) -> Any:
    """A ``DaskTaskRunner`` on the session's cluster."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=dask_cluster.scheduler_address)
