"""A trial's ``print`` and ``logging`` output in the Prefect logs of its task run.

While a trial runs, in its thread (a Dask worker runs several trials at once, one per thread):

- ``print`` (to stdout or stderr) becomes an INFO record of the task run's logger, as Prefect's
  ``log_prints=True`` makes it. Prefect's own switch swaps ``builtins.print`` for the length of
  each task run and puts the previous one back at its end, so of two trials overlapping on one
  worker the first to end would silence the other's prints. Here the swap is counted: it is made
  when the first trial of the process starts and undone when the last one ends, and the
  replacement looks up the trial of the calling thread (a context variable), printing as usual
  anywhere else.
- A record of any logger that reaches the root logger (every logger propagates there unless told
  otherwise) is sent to the API as a log of the task run, named after its logger, if its level
  is at least the Prefect logging level (``PREFECT_LOGGING_LEVEL``, INFO by default). Records
  already bound for the API (Prefect's loggers, ``PREFECT_LOGGING_EXTRA_LOGGERS``) are left to
  Prefect, so none is sent twice. A logger's own level still decides first: Python's default is
  WARNING, so ``logging.getLogger(__name__).info(...)`` reaches the API once that logger (or
  an ancestor) is set to INFO.

Output of threads or processes the trainable starts itself is not the trial's and stays where it
goes today (the worker's console).
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import io
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prefect.logging.handlers import APILogHandler

_TRIAL_LOGGER: contextvars.ContextVar[logging.LoggerAdapter[Any] | None] = contextvars.ContextVar(
    "prefect_tune_trial_logger", default=None
)

_lock = threading.Lock()
_active = 0  # trials running in this process
_original_print: Any = None
# What print was when this module was imported: the fallback should another swap of
# builtins.print (Prefect's log_prints in a task run here) put ours back after the last trial.
_IMPORTED_PRINT = builtins.print
_handler: _ToTaskRun | None = None


def _print(*args: Any, **kwargs: Any) -> None:
    """``print``, sent to the calling thread's trial task run log when there is one."""
    logger = _TRIAL_LOGGER.get()
    target = kwargs.get("file")
    original = _original_print or _IMPORTED_PRINT
    if logger is None or target not in (None, sys.stdout, sys.stderr):
        original(*args, **kwargs)
        return
    buffer = io.StringIO()
    kwargs["file"] = buffer
    original(*args, **kwargs)
    logger.info(buffer.getvalue().rstrip("\n"), stacklevel=2)


class _ToTaskRun(logging.Handler):
    """On the root logger: records of the calling thread's trial, to its task run's log."""

    def __init__(self, level: int):
        super().__init__(level)
        self._api = APILogHandler()
        self._bound: dict[str, bool] = {}  # logger name -> already sends to the API

    def _sends_to_api(self, name: str) -> bool:
        found = self._bound.get(name)
        if found is None:
            found = False
            logger: logging.Logger | None = logging.getLogger(name)
            while logger is not None:
                if any(isinstance(h, APILogHandler) for h in logger.handlers):
                    found = True
                    break
                if not logger.propagate:
                    break
                logger = logger.parent
            self._bound[name] = found
        return found

    def emit(self, record: logging.LogRecord) -> None:
        adapter = _TRIAL_LOGGER.get()
        if adapter is None:
            return
        if record.name == "prefect" or record.name.startswith("prefect."):
            return
        if self._sends_to_api(record.name):
            return
        for key, value in (adapter.extra or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        self._api.handle(record)


def _install() -> None:
    global _active, _original_print, _handler
    with _lock:
        _active += 1
        if _active > 1:
            return
        if builtins.print is not _print:
            _original_print = builtins.print
            builtins.print = _print
        level = logging.getLogger("prefect.task_runs").getEffectiveLevel()
        _handler = _ToTaskRun(level)
        logging.getLogger().addHandler(_handler)


def _uninstall() -> None:
    global _active, _handler
    with _lock:
        _active -= 1
        if _active > 0:
            return
        if builtins.print is _print and _original_print is not None:
            builtins.print = _original_print
        if _handler is not None:
            logging.getLogger().removeHandler(_handler)
            _handler = None


@contextlib.contextmanager
def trial_output(logger: logging.LoggerAdapter[Any]) -> Iterator[None]:
    """Sends this thread's ``print`` and log records to ``logger``'s task run while the block
    runs (``logger`` is the task run's ``get_run_logger()``)."""
    token = _TRIAL_LOGGER.set(logger)
    _install()
    try:
        yield
    finally:
        _uninstall()
        _TRIAL_LOGGER.reset(token)


__all__ = ["trial_output"]
