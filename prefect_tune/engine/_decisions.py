"""How decisions travel: results up to the driver's decision cores, decisions down to trials.

Status: ``TuneConfig(scheduler=ASHAScheduler | MedianStoppingRule)`` and
``RunConfig(stop=Stopper)`` are wired: over Dask by the channel in ``_channel.py``
(``DaskDeskChannel`` on the driver, ``RemoteDeskControl`` in the trial), with trials in the
driver's process by :class:`DeskControl` directly. The desk's state is ``decisions.json``,
written at each decision other than CONTINUE (before it is sent) and with each snapshot.
PBT (PAUSE and exploit) is not wired yet (refused with a ConfigError). A search algorithm
with an ``on_trial_result`` hears each row through the desk (``DeskControl(listener=...)``),
after the desk has judged it; its suggestions and state are not the desk's
(``_suggestions.py``).

Figures of the wired channel (one run each, 2-core machine shared with other jobs, 2026-12-04):
``python -m bench.decision_latency``: decision latency p50 4.7 ms, p95 5.3 ms, max 6.6 ms (100
trials; mostly the ~5 ms batching). ``python -m bench.run --only W2 --repeat 1 --full`` (4 x
2,000 reports): over ``fit()`` 7,564 reports/s with ASHA on vs 7,508 off (101 %; the fit's wall
is mostly start-up at this size); inside one trial's loop 25,332 vs 122,714 reports/s (21 %:
below the 50 % target for the in-trial rate; the per-row cost, serialising the batched rows in
the worker's event loop under the trial's GIL, is to be cut next).

Design
------
Results still go straight to storage from the worker (``TrialSession.report``: the row is in
the trial's ``result.json`` before anything else happens). Besides, each row goes *up* to the
driver, and a decision other than CONTINUE comes *down*::

    worker (trial t)                      Dask scheduler               driver (flow run)
    report(row) ──► result.json (storage)
        │ Worker.log_event(topic, row)  ──► batched, fire and forget ──► Client.subscribe_topic
        │                                                                 │ queue → controller
        │                                                                 ▼ thread
        │                                                   DecisionDesk.on_result(t, row)
        │                                                   stopper, then scheduler (pure cores)
        │                                        STOP/PAUSE: stored in t's state first, then
        │ ◄── Client.run(deliver, workers=[t's worker]) ◄── sent to t's worker only
        ▼
    next report(): the trial's control reads the decision from a dict in its own process
    (O(1), no I/O, no wait) and unwinds with TrialStopped(STOP or PAUSE).

Why this way, not decisions on the worker from storage (as Optuna's pruners read their RDB):
ASHA, the median rule and PBT compare a trial with all others. Taken on the worker, every
report would read other trials' results from storage (S3: tens of ms each), and two workers
could judge the same rung from different snapshots, which no restore can replay exactly. Taken
in one driver thread, in the order results arrive, every decision is a function of the event
sequence, and the cores' state (``to_state()``) is stored with the experiment snapshot; the
stored decision of a trial, written before it is sent, is what makes "a trial stopped by ASHA
stays stopped" hold after a crash: a restored trial whose stored state says STOP is not run,
and rows replayed from a checkpoint are judged once (the cores skip a ``training_iteration``
they have seen).

Figures (``python -m bench.decision_channel``: 2 worker processes x 2 threads, loopback, on a
2-core machine shared with other jobs; one run, 2026-12-04):

==============================================  =========================================
up: ``log_event`` per row, on the worker         123 us (report() itself: ~26 us in W2)
rows reaching the driver, decided by ASHA        7,740 rows/s, 4 trials flat out
                                                 (W2 today: 6,700 rows/s over ``fit()``)
decision round trip, idle                        p50 11.6 ms, p95 46 ms, max 508 ms
decision round trip, 3 other trials flooding     p50 1.9 ms, p95 3.5 ms, one of 200 late
                                                 (> 2 s: to look into before wiring)
==============================================  =========================================

So the driver keeps up with W2's rate and decisions arrive well within 100 ms p95; the cost to
watch is the worker side: one ``log_event`` per row would take W2's in-trial rate from ~38,000
to ~6,500 rows/s per trial. The wiring therefore buffers rows in the trial's process and sends
them as one event per ~5 ms (an append per report; the decision latency budget absorbs 5 ms),
to be measured with W2 + ASHA against the >= 50 % target. Only non-CONTINUE decisions travel
down (ASHA: once per stopped trial), so the down path's cost does not scale with reports.

Should the driver fall behind (a slow custom scheduler), rows queue in its process, trials go
on (CONTINUE is the default of a decision not yet taken), and the decision reaches the trial at
a later report: late, never lost, never applied to the wrong trial (decisions name the trial and
its task run).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prefect_tune.engine._control import Decision
from prefect_tune.engine._decision_state import Stateful
from prefect_tune.exceptions import DecisionStateMismatchError

__all__ = ["DECISIONS_FILE", "DecisionDesk", "DeskControl"]

logger = logging.getLogger("prefect_tune")

_RANK = {Decision.CONTINUE: 0, Decision.PAUSE: 1, Decision.STOP: 2}


class DecisionDesk(Stateful):
    """The driver's side: asks the stopper, then the scheduler, about each result row.

    A trial once stopped stays stopped: every later row of it (a replay, or a row sent before
    the decision reached it) is answered STOP again without asking the cores.

    Args:
        scheduler: A ``TrialScheduler`` (None: FIFO).
        stopper: A ``Stopper`` (None: none).

    Examples:
        >>> from prefect_tune.stopper import MaximumIterationStopper
        >>> desk = DecisionDesk(stopper=MaximumIterationStopper(2))
        >>> [desk.on_result("t", {"training_iteration": i}) for i in (1, 2, 3)]
        [<Decision.CONTINUE: 'CONTINUE'>, <Decision.STOP: 'STOP'>, <Decision.STOP: 'STOP'>]
    """

    def __init__(self, scheduler: Any = None, stopper: Any = None) -> None:
        self.scheduler = scheduler
        self.stopper = stopper
        self._stopped: set[str] = set()
        self._stop_all = False

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """A trial was created; the scheduler learns of it before its first result."""
        if self.scheduler is not None:
            self.scheduler.on_trial_add(trial_id, config)

    def on_result(self, trial_id: str, row: Mapping[str, Any]) -> Decision:
        """The decision for ``trial_id`` after its result ``row``."""
        if trial_id in self._stopped or self._stop_all:
            return Decision.STOP
        decision = Decision.CONTINUE
        if self.stopper is not None:
            if self.stopper(trial_id, row):
                decision = Decision.STOP
            if self.stopper.stop_all():
                self._stop_all = True
                decision = Decision.STOP
        if self.scheduler is not None:
            # The scheduler sees every row, even one a stopper ends: its rungs stay complete.
            answer = self.scheduler.on_trial_result(trial_id, row)
            if _RANK.get(answer, 0) > _RANK[decision]:
                decision = answer
        if decision is Decision.STOP:
            self._stopped.add(trial_id)
            if self.scheduler is not None:
                self.scheduler.on_trial_remove(trial_id)
        return decision

    @property
    def stopped_all(self) -> bool:
        """The stopper ended the whole experiment."""
        return self._stop_all

    def settings(self) -> dict[str, Any]:
        return {
            "scheduler": None if self.scheduler is None else type(self.scheduler).__name__,
            "stopper": None if self.stopper is None else type(self.stopper).__name__,
        }

    def state(self) -> dict[str, Any]:
        return {
            "stopped": sorted(self._stopped),
            "stop_all": self._stop_all,
            "scheduler": None if self.scheduler is None else self.scheduler.to_state(),
            "stopper": None if self.stopper is None else self.stopper.to_state(),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._stopped = {str(t) for t in data["stopped"]}
        self._stop_all = bool(data["stop_all"])
        if self.scheduler is not None:
            self.scheduler.from_state(data["scheduler"])
        if self.stopper is not None:
            self.stopper.from_state(data["stopper"])


#: Where the desk's state (its stopped trials, the scheduler's and the stopper's) is stored,
#: relative to the experiment.
DECISIONS_FILE = "decisions.json"


class DeskControl:
    """The trial-side control of a desk shared in this process (the thread executor).

    Each result row is judged by the desk under a lock, in the order rows arrive; a decision
    other than CONTINUE is written to storage (the desk's whole state) before the trial acts on
    it, so that a trial stopped stays stopped after a driver crash.

    ``listener`` (the search algorithm's ``on_trial_result``, when it has one) is handed every
    row after the desk has judged it, outside the desk's lock.
    """

    def __init__(
        self,
        desk: DecisionDesk,
        storage: Any,
        listener: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.desk = desk
        self.storage = storage
        self.listener = listener
        self._lock = threading.Lock()

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        with self._lock:
            self.desk.on_trial_add(trial_id, config)

    def is_stopped(self, trial_id: str) -> bool:
        with self._lock:
            return trial_id in self.desk._stopped or self.desk.stopped_all

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        with self._lock:
            decision = self.desk.on_result(trial_id, result)
            if decision is not Decision.CONTINUE:
                self._write()
        if self.listener is not None:
            try:
                self.listener(trial_id, result)
            except Exception as exc:  # the searcher's learning never fails the trial
                logger.warning(
                    "The search algorithm could not take a result of %s: %r", trial_id, exc
                )
        return decision

    def save(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        self.storage.write_bytes(DECISIONS_FILE, json.dumps(self.desk.to_state()).encode())

    def load(self) -> None:
        """Takes back the stored state, if any.

        Raises:
            DecisionStateMismatchError: it was written by another scheduler or stopper, or
                with other settings, or is damaged.
        """
        if not self.storage.exists(DECISIONS_FILE):
            return
        try:
            document = json.loads(self.storage.read_bytes(DECISIONS_FILE))
        except ValueError as exc:
            raise DecisionStateMismatchError(
                f"The experiment's stored decisions ({DECISIONS_FILE}) are not JSON: {exc}."
            ) from exc
        with self._lock:
            try:
                self.desk.from_state(document)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise DecisionStateMismatchError(
                    f"The experiment's stored decisions ({DECISIONS_FILE}) are damaged: {exc!r}."
                ) from exc
