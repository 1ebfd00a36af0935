"""Fixtures shared by the whole suite: a Prefect API, object-store servers, storage roots, Dask.

Every server runs on 127.0.0.1 and is started at most once per session, and only when a test
asks for it: a test that uses only in-memory storage starts nothing.

- ``prefect_api``: a temporary Prefect API (``prefect_test_harness``); yields its URL.
- ``s3_server`` / ``gcs_server``: a moto S3 server / a GCS emulator (:class:`ObjectStoreServer`).
- ``storage_backend``: one of :data:`~prefect_tune.testing.storage_suite.BACKENDS` with its
  capabilities (:class:`~prefect_tune.testing.storage_suite.StorageBackend`).
- ``storage_spec``: a fresh, empty :class:`StorageSpec` on that backend; a test that takes it
  runs once per backend (ids ``memory``, ``local``, ``shared``, ``s3``, ``gcs``).
- ``dask_cluster``: a ``LocalCluster`` with two worker processes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The environment must be settled before Prefect, gcsfs or boto are imported, here and in every
# process the tests start (Dask workers, subprocesses), which inherit it.
REPO_ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-tune-tests-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
for _name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
    os.environ.pop(_name, None)
# Without this gcsfs probes for hierarchical namespaces, and every call waits 60 s for a timeout.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# Dummy AWS settings so that boto never looks for real credentials, config files or an
# instance-metadata endpoint. No session token: the moto IAM checks would reject it.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_EC2_METADATA_DISABLED="true",
)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)
# Dask worker processes and subprocesses import `tests.*` modules (trainables, task functions).
_python_path = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if REPO_ROOT not in _python_path:
    os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *filter(None, _python_path)])

import contextlib  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

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
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


# -- object-store servers -----------------------------------------------------------------------


@dataclass
class ObjectStoreServer:
    """An object-store server running in this process, reachable from any process on the host.

    Attributes:
        endpoint_url: ``http://127.0.0.1:<port>``.
        make_bucket: Creates a bucket of the given name on the server.
        base_options: The fsspec storage options that reach the server.
    """

    endpoint_url: str
    make_bucket: Callable[[str], None] = field(repr=False)
    base_options: dict[str, Any] = field(repr=False)

    @property
    def options(self) -> dict[str, Any]:
        """Storage options for the fsspec driver (a fresh copy: callers may change it)."""
        return {
            key: dict(value) if isinstance(value, dict) else value
            for key, value in self.base_options.items()
        }

    def new_bucket(self) -> str:
        """Creates a bucket with a unique name and returns the name."""
        name = f"tune-{uuid.uuid4().hex[:20]}"
        self.make_bucket(name)
        return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[ObjectStoreServer]:
    """A moto S3 server on 127.0.0.1, for s3fs through ``endpoint_url``.

    moto accepts any credentials until IAM checks are switched on through its
    ``/moto-api/reset-auth`` endpoint (see the credentials test in ``tests/conformance``).
    """
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield ObjectStoreServer(
            endpoint_url=endpoint_url,
            make_bucket=lambda name: client.create_bucket(Bucket=name),
            base_options={
                "key": "testing",
                "secret": "testing",
                "endpoint_url": endpoint_url,
                "client_kwargs": {"region_name": "us-east-1"},
            },
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[ObjectStoreServer]:
    """A gcp-storage-emulator server on 127.0.0.1, in memory, for gcsfs through ``endpoint_url``."""
    import gcsfs
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint_url = f"http://127.0.0.1:{port}"
    options: dict[str, Any] = {"token": "anon", "endpoint_url": endpoint_url}
    admin = gcsfs.GCSFileSystem(**options, skip_instance_cache=True)
    try:
        yield ObjectStoreServer(
            endpoint_url=endpoint_url, make_bucket=admin.mkdir, base_options=options
        )
    finally:
        server.stop()


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
        server: ObjectStoreServer = request.getfixturevalue("s3_server")
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

    Pass ``DaskTaskRunner(address=dask_cluster.scheduler_address)`` to run flows on it. Its
    workers report task runs to the test Prefect API, as a real deployment's workers would.
    """
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        env={"PREFECT_API_URL": prefect_api},
    ) as cluster:
        yield cluster
