"""The services a test or a benchmark starts on 127.0.0.1: S3, GCS, a Prefect API, a Dask cluster.

Each is a context manager that stops what it started, also when the block raises. Their
packages (moto, boto3, gcp-storage-emulator, gcsfs, distributed) are imported inside the function
that needs them, so importing this module needs none of them.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# -- object stores ------------------------------------------------------------------------------


@dataclass
class ObjectStoreServer:
    """An object-store server on 127.0.0.1, reachable from any process on the host.

    Attributes:
        endpoint_url: ``http://127.0.0.1:<port>``.
        make_bucket: Creates a bucket of the given name on the server.
        base_options: The fsspec storage options that reach the server.
    """

    endpoint_url: str
    make_bucket: Callable[[str], Any] = field(repr=False)
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
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client of the server at ``endpoint_url``, with moto's dummy credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@contextlib.contextmanager
def moto_server(
    *, own_process: bool = False, startup_timeout: float = 60.0
) -> Iterator[ObjectStoreServer]:
    """A moto S3 server on 127.0.0.1, in memory, for s3fs through ``endpoint_url``.

    moto accepts any credentials until its IAM checks are switched on through its
    ``/moto-api/reset-auth`` endpoint.

    Args:
        own_process: Run it as ``python -m moto.server`` in a child process rather than in a
            thread of this one. A benchmark wants that: S3 is a service apart from the driver,
            and in the driver's process the server would compete with it for the GIL.
        startup_timeout: Seconds the child process may take to answer (``own_process``).

    Yields:
        The running server.

    Raises:
        RuntimeError: The child process exited or did not answer within ``startup_timeout``.
    """
    with contextlib.ExitStack() as stack:
        if own_process:
            endpoint_url = stack.enter_context(_moto_process(startup_timeout))
        else:
            endpoint_url = stack.enter_context(_moto_thread())
        client = s3_client(endpoint_url)
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


@contextlib.contextmanager
def _moto_thread() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def _moto_process(startup_timeout: float) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint_url = f"http://127.0.0.1:{port}"
        client = s3_client(endpoint_url)
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port}") from None
                time.sleep(0.2)
        yield endpoint_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def gcs_emulator() -> Iterator[ObjectStoreServer]:
    """A gcp-storage-emulator server on 127.0.0.1, in memory, for gcsfs through ``endpoint_url``.

    Yields:
        The running server.
    """
    import gcsfs
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        endpoint_url = f"http://127.0.0.1:{port}"
        options: dict[str, Any] = {"token": "anon", "endpoint_url": endpoint_url}
        admin = gcsfs.GCSFileSystem(**options, skip_instance_cache=True)
        yield ObjectStoreServer(
            endpoint_url=endpoint_url, make_bucket=admin.mkdir, base_options=options
        )
    finally:
        server.stop()


# -- Prefect ------------------------------------------------------------------------------------


@contextlib.contextmanager
def prefect_api(startup_timeout: int = 120) -> Iterator[str]:
    """A temporary Prefect API server with its own database (``prefect_test_harness``).

    Args:
        startup_timeout: Seconds the server may take to start.

    Yields:
        The API URL, also set as ``PREFECT_API_URL`` in this process's Prefect settings (pass it
        in the environment of any child process that should talk to the same API).
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=startup_timeout):
        yield str(PREFECT_API_URL.value())


def flow_runs_named(name: str) -> list[Any]:
    """The flow runs of an experiment, read from the current Prefect API.

    An experiment's flow runs are named after it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
        )


# -- Dask ---------------------------------------------------------------------------------------


def local_cluster_kwargs(n_workers: int, threads_per_worker: int) -> dict[str, Any]:
    """``LocalCluster`` arguments of ``n_workers`` worker processes on 127.0.0.1, no dashboard
    (also what ``DaskTaskRunner(cluster_kwargs=...)`` takes)."""
    return {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
    }


@contextlib.contextmanager
def local_cluster(
    *, n_workers: int, threads_per_worker: int, api_url: str, env: dict[str, str] | None = None
) -> Iterator[Any]:
    """A ``distributed.LocalCluster`` of worker processes whose task runs report to ``api_url``.

    Pass ``DaskTaskRunner(address=cluster.scheduler_address)`` to run flows on it, as a real
    deployment's flows would reach a real cluster.

    Args:
        n_workers: Worker processes.
        threads_per_worker: Threads of each worker: trials that run at once on it.
        api_url: The Prefect API of the workers (``PREFECT_API_URL``).
        env: More environment variables of the worker processes (``PREFECT_LOGGING_LEVEL``).

    Yields:
        The running cluster.
    """
    from distributed import LocalCluster

    with LocalCluster(
        **local_cluster_kwargs(n_workers, threads_per_worker),
        env={**(env or {}), "PREFECT_API_URL": api_url},
    ) as cluster:
        yield cluster


# -- PostgreSQL and a Prefect server on it ------------------------------------------------------


def _initdb() -> str:
    """Debian's ``initdb`` (``apt-get install postgresql``): the newest one installed."""
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_pg_version)
    if found:
        return found[-1]
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb and no initdb on "
            "PATH (apt-get install postgresql)."
        )
    return on_path


def _pg_version(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


@contextlib.contextmanager
def postgres_server(startup_timeout: float = 60.0) -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1: ``initdb`` in a temp dir, ``postgres``
    started on a free port as a non-root user (``postgres`` when this process is root, as
    PostgreSQL refuses to run as root), stopped and deleted after.

    Yields:
        The SQLAlchemy URL of its database ``prefect`` for Prefect,
        ``postgresql+asyncpg://tune@127.0.0.1:<port>/prefect`` (trust authentication).
    """
    import os
    import pwd
    import shutil
    import signal
    import tempfile

    initdb = _initdb()
    bindir = os.path.dirname(initdb)
    run_as: dict[str, Any] = {}
    workdir = tempfile.mkdtemp(prefix="prefect-tune-pg-")
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data = os.path.join(workdir, "data")
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [initdb, "-D", data, "-U", "tune", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            env=env,
            cwd=workdir,
            **run_as,
        )
        log = open(os.path.join(workdir, "postgres.log"), "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [
                os.path.join(bindir, "postgres"),
                "-D",
                data,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                workdir,
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            **run_as,
        )
        log.close()
        deadline = time.monotonic() + startup_timeout
        while True:
            ready = subprocess.run(
                [os.path.join(bindir, "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
                env=env,
            )
            if ready.returncode == 0:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(workdir, "postgres.log"), errors="replace") as f:
                    raise RuntimeError(f"PostgreSQL did not start: {f.read()[-2000:]}")
            time.sleep(0.2)
        subprocess.run(
            [os.path.join(bindir, "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tune"]
            + ["prefect"],
            check=True,
            capture_output=True,
            env=env,
        )
        yield f"postgresql+asyncpg://tune@127.0.0.1:{port}/prefect"
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def prefect_server(
    database_url: str | None = None, startup_timeout: float = 120.0
) -> Iterator[str]:
    """``prefect server start`` on a free port of 127.0.0.1, as its own process, with its own
    ``PREFECT_HOME``; its database at ``database_url`` (``postgresql+asyncpg://...``, see
    :func:`postgres_server`) or, when None, SQLite in that home.

    Yields:
        The API URL, also set as ``PREFECT_API_URL`` in this process's Prefect settings while
        inside (pass it in the environment of any child process that should use it).
    """
    import os
    import shutil
    import signal
    import tempfile
    import urllib.request

    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tempfile.mkdtemp(prefix="prefect-tune-server-")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=home,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    if database_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    url = f"http://127.0.0.1:{port}/api"
    log = open(os.path.join(home, "server.log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(home, "server.log"), errors="replace") as f:
                    raise RuntimeError(f"prefect server start failed: {f.read()[-3000:]}")
            time.sleep(0.5)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        # Its own session: the uvicorn process it starts goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(home, ignore_errors=True)
