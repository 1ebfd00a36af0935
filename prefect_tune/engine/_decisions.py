"""How decisions travel: results up to the driver's decision cores, decisions down to trials.

Status: ``TuneConfig(scheduler=ASHAScheduler | MedianStoppingRule)`` and
``RunConfig(stop=Stopper)`` are wired: over Dask by the channel in ``_channel.py``
(``DaskDeskChannel`` on the driver, ``RemoteDeskControl`` in the trial), with trials in the
driver's process by :class:`DeskControl` directly, and resume exactly after a driver is
killed ("Exact resume" below). So is ``PopulationBasedTraining``: its PAUSE leaves like a STOP
(stored first), the exploit it decided stays pending in the stored state until the driver has
made it between the trial's two task runs (``_exploits.py``: the donor's checkpoint copied into
the trial, then committed to its ``trial.json``, then ``exploit_committed``), and the desk drops
an exploit whose donor never reported a checkpoint, with a warning. A search algorithm with an ``on_trial_result`` hears each row through the desk
(``DeskControl(listener=...)``), after the desk has judged it and stored what must be stored;
its suggestions and state are not the desk's (``_suggestions.py``).

Figures (one run each, 2-core machine shared with other jobs' tests, 2026-12-04; noisy):
``python -m bench.decision_latency``: decision latency p50 5.6 ms, p95 7.5 ms, max 12.4 ms (100
trials; mostly the ~5 ms batching; before the group commit and decision points: p50 4.7 ms,
p95 5.3 ms). ``python -m bench.run --only W2 --full --repeat 1``
(4 x 2,000 reports, ASHA's rungs beyond the run, so no decision points): see "W2 with ASHA".

Design
------
Results still go straight to storage from the worker (``TrialSession.report``: the row is in
the trial's ``result.json`` before anything else happens). Besides, each row goes *up* to the
driver, and a decision other than CONTINUE comes *down*::

    worker (trial t)                      Dask scheduler               driver (flow run)
    report(row) ──► results (storage: at each checkpoint, else every few seconds)
        │ Worker.log_event(topic, row)  ──► batched, fire and forget ──► Client.subscribe_topic
        │                                                                 │ queue → controller
        │                                                                 ▼ thread
        │                                                   DecisionDesk.on_result(t, row)
        │                                                   stopper, then scheduler (pure cores)
        │                                  STOP/PAUSE, or any answer at a decision point:
        │                                  decisions.json written first (one per batch), then
        │ ◄── Client.run(deliver, workers=[t's worker]) ◄── sent to t's worker only
        ▼
    next report(): the trial's control reads the decision from a dict in its own process
    (O(1), no I/O, no wait) and unwinds with TrialStopped(STOP or PAUSE); at a decision point
    (a rung) that report() waits for its answer instead.

Why this way, not decisions on the worker from storage (as Optuna's pruners read their RDB):
ASHA, the median rule and PBT compare a trial with all others. Taken on the worker, every
report would read other trials' results from storage (S3: tens of ms each), and two workers
could judge the same rung from different snapshots, which no restore can replay exactly. Taken
in one driver thread, in the order results arrive, every decision is a function of the event
sequence, and the cores' state (``to_state()``) is stored before any decision leaves the
driver (see "Exact resume"); rows replayed from a checkpoint are judged once (the cores skip a
``training_iteration`` they have seen).

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
them as one event per ~5 ms (an append per report; the decision latency budget absorbs 5 ms).
Down travel only non-CONTINUE decisions and the answers at decision points (ASHA: a few per
trial), so the down path's cost does not scale with reports.

Exact resume
------------
What a crash may cost a decision, and why none is undone or taken twice. A decision *takes
effect* when a trial acts on it: a STOP or PAUSE when it reaches the trial, a CONTINUE when the
trial runs on past the result that was judged. Two rules keep every decision that took effect
in storage:

1. **Stored before it leaves.** The desk's state (``decisions.json``: stopped trials and where,
   the highest iteration judged per trial, the cores' ``to_state()``) is written before any
   decision goes down. Over Dask the desk's thread takes every message queued, judges their
   rows in arrival order, writes the state once for the whole batch (a group commit: one write
   however many trials wait) and only then sends the answers, one ``Client.run`` per worker.
2. **Decision points wait.** A scheduler names the results whose decision changes its state
   (``TrialScheduler.decision_points``: ASHA the first result at or past each of the trial's
   rungs and ``max_t``; the median rule every result from its grace period on). At such a
   result ``report()`` sends its rows at once and waits until the answer, stored first, is
   back (CONTINUE included): a trial never runs past a rung whose decision a crash could lose.
   Elsewhere rows go up in ~5 ms batches and nothing waits (CONTINUE is the default).

What is left in memory only at a kill is therefore either a judgment of a row between decision
points (state a restore rebuilds from the stored results) or one no trial has acted on. On
restore the stored state is loaded, checked (another scheduler, stopper or settings is refused
with ``DecisionStateMismatchError``) and then *caught up*: the rows in storage that it has not
judged (``judged`` per trial) are judged, in trial index order, each trial's rows in order (so
the same stored experiment always resumes to the same decisions), up to each unfinished
trial's latest checkpoint (the rows after it are reported again by the re-run, and judged
then), and the state is stored. A trial whose stored decision is STOP is not run again.

PBT's exploits add one more step after the decision: the exploit is stored as pending with
the PAUSE, made by the driver before the trial's next task run (copy, then commit to
``trial.json``) and only then marked committed in ``decisions.json``. A kill before the commit
leaves it pending: it is made once after the restore, the same (its draws are seeded);
a kill after it is recognised by the trial's ``ExploitRecord`` (same donor, same times) and
the exploit is not made again (``tests/crash/test_crash_pbt.py``). PBT also hears of trials
that ended (``hears_trial_ends``), told again from the stored trials on restore.

So, after any kill: a trial stopped by ASHA stays stopped, at the same iteration; a rung
record is never undone, changed or made twice (each rung as stored at a kill is a prefix of
the rung at the end, in the same order); a trial ASHA let continue at a rung is not judged at
that rung again; with a scheduler that names its decision points a trial stops at the very
report whose result stopped it. A judgment lost at the kill is made again, once, after it,
from the stored rows: its context (which trials had reached the rung before) may differ from
the one the lost judgment saw, but that judgment had not taken effect. Stoppers name no
decision points: their STOP reaches a trial asynchronously, a report or more after the one
that triggered it (as without a crash); their per-trial counts are rebuilt exactly from the
stored rows. ``tests/crash/test_crash_decisions.py`` kills the driver (SIGKILL, process group
and driver alone) right after a STOP and right after a rung decision to go on was stored, and
checks all of this from storage and the trainable's side log.

Why not rebuild the scheduler on restore by replaying every stored row instead (no waits)?
Rows reach the desk in an order no storage records (two trials at one rung: which came first
decides), so a replay in any fixed order can reach other decisions than the ones trials
already acted on; recording the order would be a write per batch of rows, that is, this
design without its waits. The waits cost one round trip per decision point (ASHA: a few per
trial, log-spaced; the median rule: one per result past its grace period, which is cheap at
Ray's usual one report a second or slower, and the thing to avoid with thousands of reports a
second). Catch-up reads the results of only the trials with rows the stored state has not
judged.

W2 with ASHA
------------
The per-row cost on the worker was Dask's own check of a ``log_event`` message
(``_is_dumpable``, in the trial's thread), which walks every value of every row of a batch:
with ~15 values a row it cost more than ``report()`` itself. Rows now go up packed into one
``bytes`` value (msgpack; JSON for an int beyond 64 bits), which Dask checks and sends as it
is. ``python -m bench.run --only W2 --full --repeat 1``, one run
each, machine noisy: inside one trial's loop, before 14,544 reports/s with ASHA on vs 59,877
off (24 %; 21 % in an earlier run), after 76,164 vs 122,727 (62 %) and in a second run
55,212 vs 68,943 (80 %); over ``fit()`` 100-101 %
both times (the fit's wall is mostly start-up at this size).

Should the driver fall behind (a slow custom scheduler), rows queue in its process, trials go
on (CONTINUE is the default of a decision not yet taken), and the decision reaches the trial at
a later report: late, never lost, never applied to the wrong trial (decisions name the trial and
its task run).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prefect_tune.engine._control import Decision, DecisionPoints
from prefect_tune.engine._decision_state import Stateful, result_number
from prefect_tune.exceptions import DecisionStateMismatchError, NoCheckpointToExploitWarning

__all__ = ["DECISIONS_FILE", "DecisionDesk", "DeskControl"]

logger = logging.getLogger("prefect_tune")

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
    #: 3: ``checkpointed``, the trials that reported a checkpoint (PBT's donors need one).
    STATE_VERSION = 3

    def __init__(self, scheduler: Any = None, stopper: Any = None) -> None:
        self.scheduler = scheduler
        self.stopper = stopper
        self._checkpointed: set[str] = set()
        self._warned_no_checkpoint = False
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
        if row.get("checkpoint_dir_name"):
            self._checkpointed.add(trial_id)
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
            if answer is Decision.PAUSE:
                answer = self._exploitable(trial_id)
            if _RANK.get(answer, 0) > _RANK[decision]:
                decision = answer
        if decision is Decision.STOP:
            self._stopped.add(trial_id)
            if iteration is not None:
                self._stopped_at[trial_id] = iteration
            if self.scheduler is not None:
                self.scheduler.on_trial_remove(trial_id)
        return decision

    def _exploitable(self, trial_id: str) -> Decision:
        """PAUSE, unless it is for an exploit whose donor never reported a checkpoint: that
        exploit is dropped (the trial goes on as it is) and the user told once."""
        pending = getattr(self.scheduler, "pending_exploit", None)
        exploit = pending(trial_id) if pending is not None else None
        if exploit is None or exploit.source_trial_id in self._checkpointed:
            return Decision.PAUSE
        self.scheduler.exploit_skipped(trial_id)
        if not self._warned_no_checkpoint:
            self._warned_no_checkpoint = True
            warn_no_checkpoint(
                f"trial {trial_id} would exploit trial {exploit.source_trial_id}, which has "
                "reported no checkpoint"
            )
        return Decision.CONTINUE

    def on_trial_end(self, trial_id: str, result: Mapping[str, Any] | None, error: bool) -> None:
        """A trial ended (TERMINATED, or ERROR for good): told to a scheduler that hears of
        trial ends (``hears_trial_ends``: PBT takes it out of the population)."""
        if self.scheduler is None or not getattr(self.scheduler, "hears_trial_ends", False):
            return
        if error:
            self.scheduler.on_trial_error(trial_id)
        else:
            self.scheduler.on_trial_complete(trial_id, result)

    def set_judged(self, trial_id: str, iteration: float) -> None:
        """The trial's history now ends at ``iteration`` (it resumes from another trial's
        checkpoint): a restore catches up on its rows after that one."""
        self._judged[trial_id] = iteration

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
            "checkpointed": sorted(self._checkpointed),
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
        checkpointed = data.get("checkpointed", [])
        if not isinstance(checkpointed, list):
            raise TypeError(f"'checkpointed' must be a list, got {type(checkpointed).__name__}")
        self._checkpointed = {str(t) for t in checkpointed}
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


def warn_no_checkpoint(what: str) -> None:
    """Tells the user that PBT cannot exploit: the trainable must report checkpoints."""
    message = (
        f"PopulationBasedTraining: {what}; the exploit is skipped and the trial goes on with "
        "its own config. PBT copies a top trial's checkpoint into a bottom one: report one "
        "(prefect_tune.report(metrics, checkpoint=Checkpoint.from_directory(path))) at least "
        "every perturbation_interval, and resume from prefect_tune.get_checkpoint()."
    )
    logger.warning(message)
    warnings.warn(message, NoCheckpointToExploitWarning, stacklevel=2)


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

    ``listener`` (the search algorithm's ``on_trial_result``, when it has one) is handed every
    row after the desk has judged it (:meth:`tell`), outside the desk's lock.
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

    def on_trial_end(self, trial_id: str, result: Mapping[str, Any] | None, error: bool) -> None:
        with self._lock:
            self.desk.on_trial_end(trial_id, result, error)
            self._dirty = self._dirty or self.hears_trial_ends

    @property
    def hears_trial_ends(self) -> bool:
        return bool(getattr(self.desk.scheduler, "hears_trial_ends", False))

    def pending_exploit(self, trial_id: str) -> Any:
        """The scheduler's exploit decided for the trial and not yet committed (PBT), if any."""
        with self._lock:
            pending = getattr(self.desk.scheduler, "pending_exploit", None)
            return pending(trial_id) if pending is not None else None

    def exploit_committed(self, trial_id: str, iteration: float) -> None:
        """The trial's stored state now has its exploit (the copied checkpoint, at the donor's
        ``iteration``, and the new config): the scheduler's state says so, stored at once."""
        with self._lock:
            self.desk.scheduler.exploit_committed(trial_id)
            self.desk.set_judged(trial_id, iteration)
            self._write()

    def exploit_skipped(self, trial_id: str) -> None:
        """The trial's exploit cannot be made: dropped, stored at once."""
        with self._lock:
            self.desk.scheduler.exploit_skipped(trial_id)
            self._write()

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
        self.tell(trial_id, result)
        return decision

    def tell(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Hands a judged row to the listener (the searcher), if any; never raises."""
        if self.listener is None:
            return
        try:
            self.listener(trial_id, result)
        except Exception as exc:  # the searcher's learning never fails the trial
            logger.warning("The search algorithm could not take a result of %s: %r", trial_id, exc)

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
