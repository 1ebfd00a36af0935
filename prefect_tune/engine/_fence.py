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

A lease the trial cannot read (a storage hiccup, a damaged ``lease.json``) says nothing: the
trial goes on, with a warning in the log, for as long as no other driver could have taken the
experiment over meanwhile, the lease's time to live (``unreadable_limit_s`` when it was never
read). Unreadable for longer, the trial is abandoned: it writes nothing more, since the lease
may now be another driver's, and keeps what it committed; a later run of the experiment resumes
it from its latest checkpoint. (A pause would write the trial's state once more.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from typing import Any

from prefect_tune.engine._control import Decision
from prefect_tune.state import read_lease
from prefect_tune.storage import Storage, layout

__all__ = ["CommitFence", "ExperimentFence"]

logger = logging.getLogger("prefect_tune")

#: How long a lease that was never read may stay unreadable: at least this many seconds...
UNREADABLE_LIMIT_S = 30.0
#: ...and this many fence intervals.
UNREADABLE_LIMIT_INTERVALS = 5
#: Least time between two warnings that the lease is unreadable.
UNREADABLE_WARN_EVERY_S = 30.0


class ExperimentFence:
    """A trial control that reads the experiment's lease every ``interval_s`` seconds.

    Args:
        storage: The experiment's storage.
        owner: The lease owner (driver) that submitted the trial; None reads nothing.
        interval_s: Least time between two reads made for results.
        unreadable_limit_s: How long the lease may stay unreadable before the trial is
            abandoned, when no read told its time to live (default: `UNREADABLE_LIMIT_S`, and
            at least `UNREADABLE_LIMIT_INTERVALS` intervals).
    """

    def __init__(
        self,
        storage: Storage,
        owner: str | None,
        interval_s: float,
        unreadable_limit_s: float | None = None,
    ):
        self.storage = storage
        self.owner = owner
        self.interval_s = interval_s
        self.unreadable_limit_s = (
            unreadable_limit_s
            if unreadable_limit_s is not None
            else max(UNREADABLE_LIMIT_S, UNREADABLE_LIMIT_INTERVALS * interval_s)
        )
        self._last = time.monotonic()
        self._ttl_s: float | None = None  # of the lease as last read
        self._unreadable_since: float | None = None  # the first of the failed reads in a row
        self._warned_at: float | None = None
        #: What the latest read said; kept so that a check made before a commit (which acts
        #: only on ABANDON) does not hide a PAUSE from the next result.
        self.decision = Decision.CONTINUE

    def check(self) -> Decision:
        """Reads the lease now: ABANDON once another driver holds it (for good), or once it
        stayed unreadable for too long, PAUSE when the driver asked running trials to stop,
        CONTINUE otherwise."""
        self._last = time.monotonic()
        if self.owner is None or self.decision is Decision.ABANDON:
            return self.decision
        try:
            lease = read_lease(self.storage)
        except Exception as exc:  # unreadable now: the next check may tell
            return self._unreadable(exc)
        self._unreadable_since = None
        if lease is None:
            return Decision.CONTINUE
        self._ttl_s = lease.ttl_s
        if lease.owner != self.owner:
            self.decision = Decision.ABANDON
        elif lease.stop_trials:
            self.decision = Decision.PAUSE
        return self.decision

    def _unreadable(self, exc: Exception) -> Decision:
        now = time.monotonic()
        if self._unreadable_since is None:
            self._unreadable_since = now
        unread_s = now - self._unreadable_since
        limit = self._ttl_s if self._ttl_s is not None else self.unreadable_limit_s
        where = self.storage.uri(layout.LEASE_FILE)
        if unread_s >= limit:
            logger.error(
                "The trial stops writing: the experiment's lease %s has been unreadable for "
                "%.1f s (%s: %s), so another driver may hold the experiment now. What it "
                "committed is kept; a later run of the experiment resumes it.",
                where,
                unread_s,
                type(exc).__name__,
                exc,
            )
            self.decision = Decision.ABANDON
            return self.decision
        if self._warned_at is None or now - self._warned_at >= UNREADABLE_WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "Could not read the experiment's lease %s (%s: %s); the trial goes on, and "
                "stops writing if it stays unreadable for %.3g s.",
                where,
                type(exc).__name__,
                exc,
                limit,
            )
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
