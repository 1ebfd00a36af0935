"""The fence: a running trial writes to its experiment only while its driver holds the lease.

A driver that takes an experiment over (its previous driver was killed, hung or cut off) holds
a new lease, and trials the old driver left running must stop writing before the new driver's
attempts of the same trials start. Two pieces keep that promise on the worker:

- :class:`ExperimentFence`, a trial control that reads the lease every ``interval_s`` seconds
  at ``report()``: it abandons the trial when another driver holds the lease, and pauses it when
  the driver asked running trials to stop (fail-fast).
- :class:`CommitFence`, the check at a trial's commit points (a checkpoint's commit, a write of
  the trial's state). A driver that takes the experiment over starts no trial for a whole fence
  interval plus a margin, so a read of the lease that began at most half an interval before a
  commit point still stands for it: several quick commits share one read, and a long upload has
  the lease read again before its commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from typing import Any

from prefect_tune.engine._control import Decision
from prefect_tune.state import read_lease
from prefect_tune.storage import Storage

__all__ = ["CommitFence", "ExperimentFence"]


class ExperimentFence:
    """A trial control that reads the experiment's lease every ``interval_s`` seconds.

    Args:
        storage: The experiment's storage.
        owner: The lease owner (driver) that submitted the trial; None reads nothing.
        interval_s: Least time between two reads made for results.
    """

    def __init__(self, storage: Storage, owner: str | None, interval_s: float):
        self.storage = storage
        self.owner = owner
        self.interval_s = interval_s
        self._last = time.monotonic()
        #: What the latest read said; kept so that a check made before a commit (which acts
        #: only on ABANDON) does not hide a PAUSE from the next result.
        self.decision = Decision.CONTINUE

    def check(self) -> Decision:
        """Reads the lease now: ABANDON once another driver holds it (for good), PAUSE when
        the driver asked running trials to stop, CONTINUE otherwise."""
        self._last = time.monotonic()
        if self.owner is None or self.decision is Decision.ABANDON:
            return self.decision
        try:
            lease = read_lease(self.storage)
        except Exception:  # unreadable now: the next check will tell
            return Decision.CONTINUE
        if lease is None:
            return Decision.CONTINUE
        if lease.owner != self.owner:
            self.decision = Decision.ABANDON
        elif lease.stop_trials:
            self.decision = Decision.PAUSE
        return self.decision

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        if self.decision is Decision.CONTINUE and time.monotonic() - self._last < self.interval_s:
            return Decision.CONTINUE
        return self.check()


class CommitFence:
    """Whether a trial may still commit: the lease as read at most ``window_s`` before.

    Not thread-safe beyond what a trial session does: reads may run in its background pool
    while the trainable's thread waits for them.

    Args:
        read: Reads the lease now (such as ``ExperimentFence.check``); ABANDON means another
            driver holds the experiment.
        window_s: A read that began at most this long before a commit point stands for it
            (half the fence interval: the new driver waits a whole one before starting trials).
    """

    def __init__(self, read: Callable[[], Decision], window_s: float):
        self._read = read
        self.window_s = window_s
        #: When the latest read that said the lease is ours began (``time.monotonic()``).
        self._read_at: float | None = None

    def read(self) -> Decision:
        """Reads the lease now, remembering when a read that found it ours began."""
        started = time.monotonic()
        decision = self._read()
        if decision is not Decision.ABANDON:
            self._read_at = max(started, self._read_at or started)
        return decision

    def read_within(self, seconds: float) -> bool:
        """Whether a read that found the lease ours began at most ``seconds`` ago."""
        at = self._read_at
        return at is not None and time.monotonic() - at <= seconds

    def read_during(self, pool: Executor) -> Future[Decision] | None:
        """Starts a read in ``pool`` while an upload runs, unless a read began within half the
        window (it would still stand at a commit point the upload reaches quickly)."""
        if self.read_within(self.window_s / 2):
            return None
        return pool.submit(self.read)

    def at_commit(self, during: Future[Decision] | None = None) -> Decision:
        """The decision at a commit point: the read made ``during`` the upload, or a recent
        one, or a new read when the latest began more than ``window_s`` ago (a long upload)."""
        if during is not None and during.result() is Decision.ABANDON:
            return Decision.ABANDON
        if self.read_within(self.window_s):
            return Decision.CONTINUE
        return self.read()
