"""How decisions travel: results up to the driver's decision cores, decisions down to trials.

Status: ``TuneConfig(scheduler=ASHAScheduler | MedianStoppingRule)`` and
``RunConfig(stop=Stopper)`` are wired: over Dask by the channel in ``_channel.py``
(``DaskDeskChannel`` on the driver, ``RemoteDeskControl`` in the trial), with trials in the
driver's process by :class:`DeskControl` directly. The desk's state is ``decisions.json``,
written at each decision other than CONTINUE (before it is sent) and with each snapshot.
PBT (PAUSE and exploit) and ``TuneConfig(search_alg=...)`` are not wired yet (refused with a
ConfigError).

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
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from prefect_tune.engine._control import Decision, DecisionPoints
from prefect_tune.engine._decision_state import Stateful, result_number
from prefect_tune.exceptions import DecisionStateMismatchError

__all__ = ["DECISIONS_FILE", "DecisionDesk", "DeskControl"]

_RANK = {Decision.CONTINUE: 0, Decision.PAUSE: 1, Decision.STOP: 2}


class DecisionDesk(Stateful):
    """The driver's side: asks the stopper, then the scheduler, about each result row.

    A trial once stopped stays stopped: every later row of it (a replay, or a row sent before
    the decision reached it) is answered STOP again without asking the cores. The desk keeps,
    per trial, the highest ``training_iteration`` it judged (what a restore still has to judge
    from storage) and the one that stopped it.

    Args:
        scheduler: A ``TrialScheduler`` (None: FIFO).
        stopper: A ``Stopper`` (None: none).

    Examples:
        >>> from prefect_tune.stopper import MaximumIterationStopper
        >>> desk = DecisionDesk(stopper=MaximumIterationStopper(2))
        >>> [desk.on_result("t", {"training_iteration": i}) for i in (1, 2, 3)]
        [<Decision.CONTINUE: 'CONTINUE'>, <Decision.STOP: 'STOP'>, <Decision.STOP: 'STOP'>]
        >>> desk.stopped_at("t"), desk.judged("t")
        (2.0, 2.0)
    """

    #: 2: ``judged`` and ``stopped_at`` (a version-1 document loads with both empty).
    STATE_VERSION = 2

    def __init__(self, scheduler: Any = None, stopper: Any = None) -> None:
        self.scheduler = scheduler
        self.stopper = stopper
        self._stopped: set[str] = set()
        self._stop_all = False
        self._judged: dict[str, float] = {}
        self._stopped_at: dict[str, float] = {}
        self._points: dict[str, DecisionPoints | None] = {}

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """A trial was created; the scheduler learns of it before its first result."""
        if self.scheduler is not None:
            self.scheduler.on_trial_add(trial_id, config)

    def points(self, trial_id: str) -> DecisionPoints | None:
        """Where the trial waits for its decisions (the scheduler's decision points)."""
        if trial_id not in self._points:
            self._points[trial_id] = (
                None if self.scheduler is None else self.scheduler.decision_points(trial_id)
            )
        return self._points[trial_id]

    def on_result(self, trial_id: str, row: Mapping[str, Any]) -> Decision:
        """The decision for ``trial_id`` after its result ``row``."""
        if trial_id in self._stopped or self._stop_all:
            return Decision.STOP
        iteration = result_number(row, "training_iteration")
        if iteration is not None:
            self._judged[trial_id] = max(iteration, self._judged.get(trial_id, -math.inf))
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
            if iteration is not None:
                self._stopped_at[trial_id] = iteration
            if self.scheduler is not None:
                self.scheduler.on_trial_remove(trial_id)
        return decision

    @property
    def stopped_all(self) -> bool:
        """The stopper ended the whole experiment."""
        return self._stop_all

    def is_stopped(self, trial_id: str) -> bool:
        return trial_id in self._stopped or self._stop_all

    def judged(self, trial_id: str) -> float:
        """The highest ``training_iteration`` of the trial the desk judged (0: none)."""
        return self._judged.get(trial_id, 0.0)

    def stopped_at(self, trial_id: str) -> float | None:
        """The ``training_iteration`` whose result stopped the trial, if it was stopped."""
        return self._stopped_at.get(trial_id)

    def settings(self) -> dict[str, Any]:
        return {
            "scheduler": None if self.scheduler is None else type(self.scheduler).__name__,
            "stopper": None if self.stopper is None else type(self.stopper).__name__,
        }

    def state(self) -> dict[str, Any]:
        return {
            "stopped": sorted(self._stopped),
            "stop_all": self._stop_all,
            "judged": dict(sorted(self._judged.items())),
            "stopped_at": dict(sorted(self._stopped_at.items())),
            "scheduler": None if self.scheduler is None else self.scheduler.to_state(),
            "stopper": None if self.stopper is None else self.stopper.to_state(),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        stopped = data["stopped"]
        if not isinstance(stopped, list):
            raise TypeError(f"'stopped' must be a list, got {type(stopped).__name__}")
        self._stopped = {str(t) for t in stopped}
        self._stop_all = bool(data["stop_all"])
        self._judged = _iterations(data.get("judged", {}), "judged")
        self._stopped_at = _iterations(data.get("stopped_at", {}), "stopped_at")
        if self.scheduler is not None:
            self.scheduler.from_state(data["scheduler"])
        if self.stopper is not None:
            self.stopper.from_state(data["stopper"])


def _iterations(value: Any, key: str) -> dict[str, float]:
    """A stored ``trial id -> training_iteration`` table, checked."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{key!r} must be an object, got {type(value).__name__}")
    out = {str(k): float(v) for k, v in value.items()}
    if not all(math.isfinite(v) for v in out.values()):
        raise ValueError(f"{key!r} holds a value that is not a finite number")
    return out


#: Where the desk's state (its stopped trials, the scheduler's and the stopper's) is stored,
#: relative to the experiment.
DECISIONS_FILE = "decisions.json"


class DeskControl:
    """The desk, its storage and its lock: the driver's one way to judge rows and store state.

    Rows are judged one at a time, in the order they come (:meth:`judge`); the state is
    written by :meth:`commit` when it changed in a way a restore cannot rebuild from the
    stored results: a decision other than CONTINUE, or one taken at a decision point (the
    trial waits for it). Callers commit before any such decision leaves the driver.
    In the driver's own process (the thread executor), it is also the trials' control:
    :meth:`on_result` judges, commits and answers inside ``report()``.
    """

    def __init__(self, desk: DecisionDesk, storage: Any) -> None:
        self.desk = desk
        self.storage = storage
        self._lock = threading.Lock()
        self._dirty = False
        self._last_time: dict[str, float] = {}  # trial -> its last time_attr, in this process

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        with self._lock:
            self.desk.on_trial_add(trial_id, config)

    def points(self, trial_id: str) -> DecisionPoints | None:
        with self._lock:
            return self.desk.points(trial_id)

    def is_stopped(self, trial_id: str) -> bool:
        with self._lock:
            return self.desk.is_stopped(trial_id)

    def judged(self, trial_id: str) -> float:
        with self._lock:
            return self.desk.judged(trial_id)

    def judge(self, trial_id: str, row: Mapping[str, Any], waits: bool) -> Decision:
        """Judges one row; ``waits``: its trial waits for this decision (a decision point)."""
        with self._lock:
            decision = self.desk.on_result(trial_id, row)
            if waits or decision is not Decision.CONTINUE:
                self._dirty = True
            return decision

    def commit(self) -> None:
        """Writes the state if a decision since the last write must outlive a crash."""
        with self._lock:
            if self._dirty:
                self._write()

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        """The trial-side control with trials in this process: judged and stored at once."""
        with self._lock:
            waits = self._at_point(trial_id, result)
            decision = self.desk.on_result(trial_id, result)
            if waits or decision is not Decision.CONTINUE:
                self._write()
            return decision

    def _at_point(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        points = self.desk.points(trial_id)
        if points is None:
            return False
        now = result_number(result, points.time_attr)
        if now is None:
            return False
        last = self._last_time.get(trial_id)
        self._last_time[trial_id] = now
        return points.crossed(last, now)

    def catch_up(
        self, trial_id: str, config: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]
    ) -> int:
        """Judges stored rows of a trial that the stored state had not judged (a restore);
        returns how many. Every row counts as a decision point: the next commit stores them."""
        count = 0
        with self._lock:
            self.desk.on_trial_add(trial_id, config)
            for row in rows:
                self.desk.on_result(trial_id, row)
                count += 1
            self._dirty = self._dirty or count > 0
        return count

    def save(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        self.storage.write_bytes(DECISIONS_FILE, json.dumps(self.desk.to_state()).encode())
        self._dirty = False

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
