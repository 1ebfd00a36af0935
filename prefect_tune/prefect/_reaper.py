"""Stops a child process of the driver when the driver dies, however it dies (SIGKILL too).

Prefect stops the temporary API server it starts for a process when that process exits
normally (``atexit``); a driver killed with SIGKILL leaves it running, orphaned, with its port
and database. `watch` starts a small watcher process (this file, run as a script: it imports
nothing of prefect-tune or Prefect) that holds the read end of a pipe whose write end only the
driver holds. When the driver dies the pipe closes, and the watcher stops the child, if the
process of that pid is still the one it was told of (its start time tells a reused pid apart).

Linux only (it reads ``/proc``); elsewhere `watch` does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

__all__ = ["watch"]

#: Seconds the child has to stop after SIGTERM before it gets SIGKILL.
GRACE_S = 5.0


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (``/proc/<pid>/stat`` field 22), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return stat.rpartition(")")[2].split()[19]


_WATCHERS: list[subprocess.Popen[bytes]] = []  # kept so that their pipes stay open


def watch(pid: int) -> None:
    """Stops process ``pid`` (SIGTERM, then SIGKILL) once this process has died."""
    started = _start_time(pid)
    if started is None:
        return
    watcher = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), str(pid), started],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: a Ctrl-C meant for the driver's process group must not stop it.
        start_new_session=True,
        close_fds=True,
    )
    _WATCHERS.append(watcher)


def _stop(pid: int, started: str) -> None:
    if _start_time(pid) != started:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        if _start_time(pid) != started:
            return
        time.sleep(0.1)
    if _start_time(pid) == started:
        os.kill(pid, signal.SIGKILL)


def _main(argv: list[str]) -> None:
    pid, started = int(argv[1]), argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):  # nothing is written: EOF when the driver is gone
        pass
    with contextlib.suppress(OSError):  # gone already, or not ours to signal
        _stop(pid, started)


if __name__ == "__main__":
    _main(sys.argv)
