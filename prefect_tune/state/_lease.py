"""The driver lease: one live driver writes an experiment at a time (DESIGN promise 5).

A driver holds ``lease.json`` (owner, host, pid, flow run, renewal time, time to live) and renews
it every ``ttl / 3`` seconds from a background thread. Another driver may take the experiment over
only when the lease was released, has not been renewed for ``ttl`` seconds, or names a process on
this same host that no longer exists (a killed local driver is taken over at once).

Object stores have no compare-and-swap that every backend supports, so acquisition writes the
lease, waits a moment and reads it back: of two drivers racing, the one whose write landed last
wins and the other gets :class:`ExperimentLockedError`.

Trials read the lease too (at most every ``fence_interval_s``): a trial whose driver lost the
lease stops writing, and ``stop_trials`` (set for fail-fast) pauses running trials.

A damaged ``lease.json`` (cut short, edited by hand) tells no one whether its driver is live: a
driver refuses to take the experiment (:class:`DamagedStateError` naming the file), and the
driver holding it, unable to renew it, stops once it went unrenewed for its time to live, as if
another driver had taken over (:class:`LeaseLostError`). Its trials stop writing by then too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from prefect_tune.exceptions import DamagedStateError, ExperimentLockedError, LeaseLostError
from prefect_tune.state._models import SCHEMA_VERSION, _Model
from prefect_tune.state._store import read_document
from prefect_tune.storage import Storage, layout

logger = logging.getLogger("prefect_tune")

DEFAULT_LEASE_TTL_S = 60.0


class Lease(_Model):
    """Who drives the experiment, until when."""

    schema_version: int = SCHEMA_VERSION
    owner: str
    host: str
    pid: int
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    acquired_at: float = Field(default_factory=time.time)
    renewed_at: float = Field(default_factory=time.time)
    ttl_s: float = DEFAULT_LEASE_TTL_S
    released: bool = False
    stop_trials: bool = False

    @property
    def expires_at(self) -> float:
        return self.renewed_at + self.ttl_s

    def is_live(self, now: float | None = None) -> bool:
        """Whether its holder may still be driving (not released, renewed recently, and, on
        this host, its process exists)."""
        if self.released:
            return False
        if (now if now is not None else time.time()) >= self.expires_at:
            return False
        return not (self.host == socket.gethostname() and not _pid_alive(self.pid))

    def describe(self) -> str:
        run = (
            f"flow run {self.flow_run_name or ''} ({self.flow_run_id})"
            if self.flow_run_id
            else "a driver"
        )
        return f"{run} on {self.host}, pid {self.pid}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) no longer drives anything.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_lease(storage: Storage) -> Lease | None:
    """The experiment's lease, or None when no driver ever took it.

    Raises:
        DamagedStateError: ``lease.json`` is damaged (no driver can tell whether it is live).
        StorageError: the storage could not be read.
    """
    return read_document(storage, layout.LEASE_FILE, Lease)


class LeaseHolder:
    """Acquires, renews and releases the lease of one experiment for one driver.

    Args:
        storage: The experiment's storage.
        ttl_s: Seconds without renewal after which another driver may take over.
        flow_run: ``{"id": ..., "name": ...}`` of the flow run driving, for messages.
        settle_s: Longest pause between writing the lease and reading it back (a quarter of
            it on fast storage).
    """

    def __init__(
        self,
        storage: Storage,
        ttl_s: float = DEFAULT_LEASE_TTL_S,
        flow_run: Mapping[str, Any] | None = None,
        settle_s: float = 0.2,
    ):
        self.storage = storage
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.lease = Lease(
            owner=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            flow_run_id=(flow_run or {}).get("id"),
            flow_run_name=(flow_run or {}).get("name"),
            ttl_s=ttl_s,
        )
        self.lost: LeaseLostError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def owner(self) -> str:
        return self.lease.owner

    def acquire(self) -> Lease | None:
        """Takes the lease and starts renewing it.

        Returns:
            The previous holder's lease when it was taken over without being released (its
            driver crashed or was killed), else None.

        Raises:
            ExperimentLockedError: a live driver holds the experiment.
            DamagedStateError: ``lease.json`` is damaged.
        """
        try:
            previous = read_lease(self.storage)
        except DamagedStateError as exc:
            raise DamagedStateError(
                f"{exc} Nothing tells whether a driver holds the experiment: if none is running "
                "it, delete that file and run it again.",
                exc.path,
            ) from exc
        if previous is not None and previous.owner != self.owner and previous.is_live():
            raise self._locked(previous)
        now = time.time()
        self.lease.acquired_at = self.lease.renewed_at = now
        started = time.monotonic()
        self._write()
        # A driver racing for the lease wrote it (or will) within about as long as this
        # write took: wait many times that, within [settle_s / 4, settle_s], then read back.
        wrote = time.monotonic() - started
        time.sleep(min(self.settle_s, max(self.settle_s / 4, 20 * wrote)))
        current = read_lease(self.storage)
        if current is None or current.owner != self.owner:
            raise (
                self._locked(current)
                if current is not None
                else ExperimentLockedError(
                    f"The lease of {self.storage.url} vanished while it was being taken."
                )
            )
        self._thread = threading.Thread(
            target=self._renew_loop, name="prefect-tune-lease", daemon=True
        )
        self._thread.start()
        if previous is not None and not previous.released:
            return previous
        return None

    def _locked(self, holder: Lease) -> ExperimentLockedError:
        wait = max(0.0, holder.expires_at - time.time())
        return ExperimentLockedError(
            f"The experiment at {self.storage.url} is being driven by {holder.describe()}, "
            f"whose lease runs for another {wait:.0f} s. Wait for it to finish, or stop it; a "
            f"driver that stops renewing is taken over after {holder.ttl_s:.0f} s "
            "(RunConfig(lease_ttl_s=...))."
        )

    def _write(self) -> None:
        with self._lock:
            self.storage.write_bytes(layout.LEASE_FILE, self.lease.model_dump_json().encode())

    def _renew_loop(self) -> None:
        interval = min(max(0.05, self.ttl_s / 3), threading.TIMEOUT_MAX)
        renewed = self.lease.renewed_at  # as last stored
        while not self._stop.wait(interval):
            try:
                self.renew()
                renewed = self.lease.renewed_at
            except Exception as exc:  # a storage hiccup: try again next time, within the ttl
                if time.time() - renewed < self.ttl_s:
                    logger.warning("Could not renew the lease of %s: %s", self.storage.url, exc)
                    continue
                # Past its time to live another driver may take over: stop as if one had.
                self.lost = LeaseLostError(
                    f"This driver could not renew its lease {self.storage.uri(layout.LEASE_FILE)} "
                    f"for {self.ttl_s:.0f} s, its time to live ({type(exc).__name__}: {exc}); it "
                    "stops writing, since another driver may have taken the experiment over. "
                    "Run the experiment again once the lease can be read."
                )
                logger.error("%s", self.lost)
                self._stop.set()
                return

    def renew(self) -> None:
        """Renews the lease, or records that another driver took it (``lost``)."""
        current = read_lease(self.storage)
        if current is not None and current.owner != self.owner:
            self.lost = LeaseLostError(
                f"{current.describe()} took over the experiment at {self.storage.url}: this "
                "driver stopped renewing its lease for longer than its time to live."
            )
            self._stop.set()
            return
        self.lease.renewed_at = time.time()
        self._write()

    def check(self) -> None:
        """Raises LeaseLostError if another driver took the experiment over."""
        if self.lost is not None:
            raise self.lost

    def request_stop_trials(self) -> None:
        """Asks running trials to pause at their next fence check (fail-fast)."""
        self.lease.stop_trials = True
        self._write()

    def release(self) -> None:
        """Stops renewing and marks the lease released (if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost is not None:
            return
        try:
            current = read_lease(self.storage)
            if current is None or current.owner == self.owner:
                self.lease.released = True
                self._write()
        except Exception as exc:
            logger.warning("Could not release the lease of %s: %s", self.storage.url, exc)
