"""How the controller runs trials: the `TrialExecutor` interface and an in-process executor.

The Prefect implementation (one task run per trial on a Dask cluster) lives in
``prefect_tune.prefect``; the thread executor here lets the engine be tested without Prefect.
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from prefect_tune.engine._trial_run import TrialOutcome, TrialRequest, run_trial
from prefect_tune.storage import Storage

Completion = tuple[Any, "TrialOutcome | BaseException"]


class TrialExecutor(Protocol):
    """Runs trial requests somewhere and tells the controller when each one ends."""

    def start(self) -> None:
        """Gets ready to run trials (starts or connects to a cluster); called once the driver
        holds the experiment, so a driver that is refused starts nothing."""
        ...

    def close(self) -> None:
        """Releases what `start` acquired."""
        ...

    def capacity(self) -> int:
        """How many trials can usefully run at once (the default ``max_concurrent_trials``)."""
        ...

    def submit(self, request: TrialRequest) -> Any:
        """Starts one task run of a trial; returns a handle."""
        ...

    def wait(self, timeout: float | None) -> list[Completion]:
        """Blocks until at least one submitted request ends (or ``timeout``); returns the ended
        ones as ``(handle, outcome or the exception it raised)``."""
        ...

    def check_storage(self, storage: Storage) -> None:
        """Proves every place a trial may run can read ``storage`` (DESIGN promise 8).

        Raises:
            StorageNotSharedError: some of them cannot.
        """
        ...


class QueueingExecutor:
    """Base for executors whose futures report completion through a callback."""

    def __init__(self) -> None:
        self._done: queue.Queue[Any] = queue.Queue()

    def _on_done(self, handle: Any) -> None:
        self._done.put(handle)

    def _outcome(self, handle: Any) -> TrialOutcome | BaseException:
        raise NotImplementedError

    def wait(self, timeout: float | None) -> list[Completion]:
        try:
            first = self._done.get(timeout=timeout)
        except queue.Empty:
            return []
        handles = [first]
        while True:
            try:
                handles.append(self._done.get_nowait())
            except queue.Empty:
                break
        return [(handle, self._outcome(handle)) for handle in handles]


class ThreadTrialExecutor(QueueingExecutor):
    """Runs trials in threads of this process (tests, debugging)."""

    def __init__(self, max_workers: int | None = None):
        super().__init__()
        self._workers = max_workers or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="prefect-tune-trial")

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def capacity(self) -> int:
        return self._workers

    def submit(self, request: TrialRequest) -> Future[TrialOutcome]:
        future = self._pool.submit(run_trial, request)
        future.add_done_callback(self._on_done)
        return future

    def _outcome(self, handle: Future[TrialOutcome]) -> TrialOutcome | BaseException:
        error = handle.exception()
        return error if error is not None else handle.result()

    def check_storage(self, storage: Storage) -> None:
        return None  # trials run in this very process
