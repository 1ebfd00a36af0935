"""Which Prefect API the experiment talks to, and making every Dask worker talk to the same one.

With no ``PREFECT_API_URL`` set, Prefect starts a temporary API server in each process that
needs one. A Dask worker process is such a process: left to itself, every worker of an
experiment would start a server of its own (eight workers, eight servers and their databases
on the same cores), and its trials' task runs would land there instead of in the experiment's
flow run. So the experiment flow runs with ``PREFECT_API_URL`` pointing at the driver's
temporary server: the settings that travel to the workers with each trial name it. And that
server is stopped when the driver dies, even by SIGKILL (`prefect_tune.prefect._reaper`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_ENABLED,
    temporary_settings,
)

from prefect_tune.prefect._reaper import watch

__all__ = ["driver_api_url", "workers_use_the_driver_api"]

_WATCHED: set[int] = set()  # pids of temporary servers a watcher stops when this process dies


def driver_api_url() -> str | None:
    """The Prefect API URL of this process: ``PREFECT_API_URL``, or else the temporary server
    Prefect runs for this process (started now if it is not running yet); None when there is
    neither (Prefect then refuses to run flows)."""
    url = PREFECT_API_URL.value()
    if url:
        return str(url)
    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    # The one temporary server of this process, shared with Prefect's own clients in it.
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    process = server.server_process
    if process is not None and process.pid not in _WATCHED:
        # Prefect stops it when this process exits normally; a SIGKILL would orphan it.
        _WATCHED.add(process.pid)
        watch(process.pid)
    return str(server.api_url)


@contextlib.contextmanager
def workers_use_the_driver_api() -> Iterator[str | None]:
    """Runs the block with ``PREFECT_API_URL`` set to this process's API (see the module's
    docstring), so that whatever it sends to Dask workers names that API. Yields the URL."""
    if PREFECT_API_URL.value():
        yield str(PREFECT_API_URL.value())
        return
    url = driver_api_url()
    if url is None:
        yield None
        return
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
