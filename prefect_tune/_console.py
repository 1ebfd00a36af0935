"""What ``fit()`` shows on the console, by ``RunConfig(verbose=...)`` (as Ray Tune's levels):

- ``0``: silent: no progress lines; Dask's own logs at ERROR.
- ``1``: a progress line every 30 s (and one at the start and the end); Dask's logs at WARNING.
- ``2`` (default): a progress line every 5 s; Dask's logs at WARNING.
- ``3``: as 2, and Dask's INFO logs (nanny, scheduler, worker start and stop).

Prefect's flow and task run lines are Prefect's to set (``PREFECT_LOGGING_LEVEL``). An orderly
shutdown of the local Dask cluster logs no traceback; a real failure's traceback still shows,
since only Dask's INFO/WARNING chatter and the ``CommClosedError`` of workers closing during the
shutdown are held back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from prefect_tune.engine._progress import Progress
from prefect_tune.state import PackedSummary

__all__ = [
    "ConsoleProgress",
    "dask_log_level",
    "progress_interval_s",
    "quiet_dask",
    "quiet_worker_shutdown",
]

VERBOSE_LEVELS = (0, 1, 2, 3)
_INTERVALS = {1: 30.0, 2: 5.0, 3: 5.0}
_DASK_LEVELS = {0: "error", 1: "warning", 2: "warning", 3: "info"}
# The environment variable Dask reads when a (worker, nanny, scheduler) process imports
# distributed: it sets the level of the `distributed` loggers in processes Dask spawns.
_DASK_ENV = "DASK_LOGGING__DISTRIBUTED"


def progress_interval_s(verbose: int) -> float | None:
    """Seconds between two progress lines at ``verbose``; None: no progress lines."""
    return _INTERVALS.get(verbose)


def dask_log_level(verbose: int) -> str:
    """The level of Dask's ``distributed`` loggers at ``verbose``."""
    return _DASK_LEVELS[verbose]


class ConsoleProgress:
    """An :class:`~prefect_tune.engine.ExperimentObserver` that writes one progress line
    (:meth:`Progress.line`) to ``stream`` every ``interval_s``, and one at the end."""

    def __init__(self, interval_s: float, stream: TextIO | None = None):
        self.interval_s = interval_s
        self._stream = stream

    def on_progress(
        self, progress: Progress, trials: Callable[[], Sequence[PackedSummary]]
    ) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        prefix = "Done: " if progress.done else "Progress: "
        print(prefix + progress.line(), file=stream, flush=True)

    def __repr__(self) -> str:
        return f"ConsoleProgress(interval_s={self.interval_s})"


class _ShutdownNoise(logging.Filter):
    """Drops what Dask logs when a worker's or the client's connection closes during an
    orderly shutdown (``CommClosedError``, ``StreamClosedError``), with its traceback."""

    _CLOSED = ("CommClosedError", "StreamClosedError")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ in self._CLOSED:
            return False
        message = record.getMessage()
        return not any(name in message for name in self._CLOSED)


_worker_quieted = False


def quiet_worker_shutdown() -> None:
    """In a Dask worker's process (called by the trial task, once per process): drops the
    ``CommClosedError`` a worker logs when its heartbeat meets a scheduler that closed first at
    an orderly shutdown. The driver's filter (:func:`quiet_dask`) cannot reach a worker's own
    logs. A worker that loses its scheduler for real still closes, and the driver reports the
    lost worker and the trials it ran."""
    global _worker_quieted
    if _worker_quieted:
        return
    _worker_quieted = True
    logging.getLogger("distributed.worker").addFilter(_ShutdownNoise())


@contextlib.contextmanager
def quiet_dask(verbose: int) -> Iterator[None]:
    """Sets Dask's log level for ``verbose`` in this process and in the processes it spawns
    while inside (the local cluster's), unless the user set ``DASK_LOGGING__DISTRIBUTED``;
    restores both after."""
    if _DASK_ENV in os.environ:  # the user's choice
        yield
        return
    level = dask_log_level(verbose)
    loggers = [logging.getLogger("distributed"), logging.getLogger("tornado.application")]
    before = [lg.level for lg in loggers]
    noise = _ShutdownNoise()
    os.environ[_DASK_ENV] = level
    loggers[0].setLevel(level.upper())
    # A logger's filter sees only what is logged on it, a handler's what reaches it: both.
    filtered: list[logging.Filterer] = [*loggers, *loggers[0].handlers]
    filtered += [
        lg
        for name, lg in logging.root.manager.loggerDict.items()
        if name.startswith("distributed.") and isinstance(lg, logging.Logger)
    ]
    for item in filtered:
        item.addFilter(noise)
    try:
        yield
    finally:
        os.environ.pop(_DASK_ENV, None)
        for lg, old in zip(loggers, before, strict=True):
            lg.setLevel(old)
        for item in filtered:
            item.removeFilter(noise)
