"""A Dask cluster whose workers stand for other hosts, started as real processes.

``dask scheduler`` listens on 127.0.0.1; each ``dask worker`` binds to its own loopback address
(127.0.0.2, 127.0.0.3, ...) and runs in a mount namespace of its own (``unshare -m``) with a
tmpfs mounted over ``local_root``: there it sees its own empty "local disk", not the driver's
files, as a worker on another machine would. Any directory outside ``local_root`` is seen by every
process alike and stands for an NFS mount shared by all hosts. Each also has a hostname of its
own (``unshare -u``; `hostname_of`), which is what a trial's attempts record as their host.
`on_other_host` runs any other command (a second driver) the same way.

Needs root (or CAP_SYS_ADMIN) for ``unshare -m -u``, ``mount`` and ``hostname``; :func:`namespaces_unavailable`
says why not when they do not work. Every process is started in a session of its own and its
whole process group is killed on exit, also when the start fails half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DASK = str(Path(sys.executable).with_name("dask"))

# Run inside the new mount namespace: keep its mounts from propagating back to the host's (util-
# linux `unshare` makes them private already; this says so explicitly), shadow the local root with
# an empty tmpfs, take the hostname given as $1 (in a UTS namespace of its own), then become the
# given command.
_SHADOW = (
    'mount --make-rprivate / && mount -t tmpfs tmpfs "$0" && hostname "$1" && shift && exec "$@"'
)


def hostname_of(host: str) -> str:
    """The hostname of the worker (or driver) bound to the loopback address ``host``."""
    return "host-" + host.replace(".", "-")


def on_other_host(local_root: Path, host: str, argv: list[str]) -> list[str]:
    """``argv`` as a command that runs as if on another host: its own empty tmpfs over
    ``local_root`` and the hostname `hostname_of` ``host`` (it still shares the network)."""
    return ["unshare", "-m", "-u", "sh", "-c", _SHADOW, str(local_root), hostname_of(host), *argv]


def namespaces_unavailable() -> str | None:
    """None when ``unshare -m`` + ``mount -t tmpfs`` work here, else the reason they do not."""
    with tempfile.TemporaryDirectory(prefix="prefect-tune-unshare-") as d:
        try:
            proc = subprocess.run(
                ["unshare", "-m", "-u", "sh", "-c", _SHADOW, d, "x", "true"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`unshare -m` cannot run: {exc}"
        if proc.returncode != 0:
            return (
                f"`unshare -m -u sh -c 'mount -t tmpfs tmpfs DIR && hostname x'` failed (exit "
                f"{proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
    return None


@dataclass
class OtherHosts:
    """The running cluster.

    Attributes:
        scheduler_address: ``tcp://127.0.0.1:<port>``, for ``DaskTaskRunner(address=...)``.
        hosts: The loopback address each worker binds to.
        local_root: The directory each worker sees as its own empty tmpfs.
        log_dir: Where each process's output goes (read it when something fails).
    """

    scheduler_address: str
    hosts: list[str]
    local_root: Path
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def logs(self) -> str:
        """The tail of every process's output, for an assertion message."""
        parts = []
        for name in self.processes:
            path = self.log_dir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} ---\n{text[-3000:]}")
        return "\n".join(parts)

    def kill_worker(self, host: str) -> None:
        """SIGKILLs the worker bound to ``host`` (no nanny restarts it) and waits until it is
        gone: its machine died."""
        proc = self.processes[f"worker-{host}"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _start(
    cluster: OtherHosts, name: str, argv: list[str], env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    with open(cluster.log_dir / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # its own process group, killed as a whole
        )
    cluster.processes[name] = proc
    return proc


def _stop(procs: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process group, then SIGKILL to whatever is left after a few seconds."""
    for proc in procs.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # also any child left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _wait_for(what: str, check: Callable[[], object], cluster: OtherHosts, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for name, proc in cluster.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({proc.returncode}) while waiting for {what}\n{cluster.logs()}"
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s\n{cluster.logs()}")
        time.sleep(0.1)


@contextlib.contextmanager
def other_hosts(
    local_root: Path,
    log_dir: Path,
    env: Mapping[str, str],
    hosts: tuple[str, ...] = ("127.0.0.2", "127.0.0.3"),
    timeout: float = 60,
    worker_args: Mapping[str, list[str]] | None = None,
) -> Iterator[OtherHosts]:
    """Starts a scheduler on 127.0.0.1 and one single-threaded worker per address in ``hosts``.

    Yields once the scheduler has every worker. ``env`` is the environment of every process
    (PYTHONPATH so that ``tests.*`` imports, PREFECT_API_URL so that task runs report to the
    test API). ``worker_args`` adds arguments to the ``dask worker`` command of some hosts
    (``{"127.0.0.3": ["--resources", "GPU=1"]}``).
    """
    from distributed import Client

    local_root.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    scheduler_file = log_dir / "scheduler.json"
    cluster = OtherHosts("", list(hosts), local_root, log_dir)
    try:
        _start(
            cluster,
            "scheduler",
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            env,
        )
        _wait_for("scheduler file", scheduler_file.exists, cluster, timeout)

        def address() -> str:
            with contextlib.suppress(ValueError):  # a file still being written
                return str(json.loads(scheduler_file.read_text())["address"])
            return ""

        _wait_for("scheduler address", address, cluster, timeout)
        cluster.scheduler_address = address()
        for host in hosts:
            _start(
                cluster,
                f"worker-{host}",
                on_other_host(
                    local_root,
                    host,
                    [
                        DASK,
                        "worker",
                        cluster.scheduler_address,
                        "--host",
                        host,
                        "--name",
                        f"host-{host}",
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        *(worker_args or {}).get(host, []),
                    ],
                ),
                env,
            )
        with Client(cluster.scheduler_address, timeout=timeout) as client:
            _wait_for(
                f"{len(hosts)} workers",
                lambda: len(client.scheduler_info(n_workers=-1)["workers"]) >= len(hosts),
                cluster,
                timeout,
            )
        yield cluster
    finally:
        _stop(cluster.processes)
