"""The Dask channel of the decision desk: rows up by ``Worker.log_event``, decisions down by
``Client.run`` (see :mod:`prefect_tune.engine._decisions` for the design)."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from prefect_tune.engine._control import Decision, DecisionPoints
from prefect_tune.engine._decision_state import result_number
from prefect_tune.engine._decisions import DeskControl

logger = logging.getLogger(__name__)

#: Least time between two batches of rows sent up by one trial.
BATCH_S = 0.005

#: Longest wait of a trial at a decision point; past it the trial goes on (a driver that died
#: is then found out by the trial's fence at its next report).
POINT_WAIT_S = 30.0

# In each worker process, written by the driver's Client.run (in the worker's event loop):
#: (trial id, attempt) -> a decision other than CONTINUE.
_INBOX: dict[tuple[str, int], str] = {}
#: (trial id, attempt) -> the highest training_iteration whose decision point was answered.
_ANSWERED: dict[tuple[str, int], float] = {}
_ARRIVED = threading.Condition()


def _deliver(answers: list[tuple[str, int, float | None, str]]) -> None:
    """Takes a batch of answers: (trial id, attempt, iteration of a decision point or None,
    decision)."""
    with _ARRIVED:
        for trial_id, attempt, iteration, decision in answers:
            key = (trial_id, attempt)
            if decision != Decision.CONTINUE.value:
                _INBOX[key] = decision
            if iteration is not None:
                _ANSWERED[key] = max(iteration, _ANSWERED.get(key, iteration))
        _ARRIVED.notify_all()


def pack_rows(rows: list[dict[str, Any]]) -> tuple[str, bytes]:
    """Rows as one ``bytes`` value: Dask then sends it without walking every value of every
    row (``log_event`` checks a message value by value, in the trial's thread)."""
    try:
        return "msgpack", msgpack.packb(rows, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):  # an int beyond 64 bits
        return "json", json.dumps(rows).encode()


def unpack_rows(fmt: str, data: bytes) -> list[dict[str, Any]]:
    rows = msgpack.unpackb(data, raw=False) if fmt == "msgpack" else json.loads(data)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("the rows are not a list of objects")
    return rows


@dataclass
class RemoteDeskControl:
    """The trial's side of the channel, sent to its worker with the trial's request.

    Rows are buffered and sent up every :data:`BATCH_S`; a row at one of the trial's decision
    ``points`` is sent at once, and ``report()`` waits until its decision came back (stored
    by the driver first).
    """

    topic: str
    attempt: int = 0
    points: DecisionPoints | None = None
    _rows: list[dict[str, Any]] = field(default_factory=list)
    _waits: list[float] = field(default_factory=list)
    _sent: float = 0.0
    _last_time: float | None = None

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        self._rows.append(result)  # type: ignore[arg-type]  # report() makes a new dict each time
        iteration = self._point(result)
        if iteration is not None:
            self._waits.append(iteration)
            self.flush(trial_id)
            return self._await(trial_id, iteration)
        if time.monotonic() - self._sent >= BATCH_S:
            self.flush(trial_id)
        answer = _INBOX.get((trial_id, self.attempt))
        return Decision(answer) if answer is not None else Decision.CONTINUE

    def _point(self, result: Mapping[str, Any]) -> float | None:
        """The row's training_iteration if it is at a decision point, else None."""
        if self.points is None:
            return None
        now = result_number(result, self.points.time_attr)
        iteration = result_number(result, "training_iteration")
        if now is None or iteration is None:
            return None
        last, self._last_time = self._last_time, now
        return iteration if self.points.crossed(last, now) else None

    def _await(self, trial_id: str, iteration: float) -> Decision:
        from distributed import get_worker
        from distributed.core import Status

        key = (trial_id, self.attempt)
        worker = get_worker()
        deadline = time.monotonic() + POINT_WAIT_S
        with _ARRIVED:
            while key not in _INBOX and _ANSWERED.get(key, -1.0) < iteration:
                left = deadline - time.monotonic()
                if left <= 0 or worker.status in (Status.closing, Status.closed, Status.failed):
                    logger.warning(
                        "Trial %s: no decision for iteration %s came in %.0f s; going on.",
                        trial_id,
                        iteration,
                        POINT_WAIT_S,
                    )
                    break
                _ARRIVED.wait(min(left, 0.2))
            answer = _INBOX.get(key)
        return Decision(answer) if answer is not None else Decision.CONTINUE

    def flush(self, trial_id: str) -> None:
        if not self._rows:
            return
        from distributed import get_worker

        worker = get_worker()
        rows, self._rows = self._rows, []
        waits, self._waits = self._waits, []
        fmt, data = pack_rows(rows)
        message: dict[str, Any] = {
            "trial": trial_id,
            "attempt": self.attempt,
            "worker": worker.address,
            "fmt": fmt,
            "rows": data,
        }
        if waits:
            message["wait"] = waits
        worker.log_event(self.topic, message)
        self._sent = time.monotonic()

    def close(self, trial_id: str) -> None:
        """Sends the rows not sent yet (the desk judges every row, the last ones too)."""
        try:
            self.flush(trial_id)
        except Exception as exc:  # a trial's end never fails on its channel
            logger.warning("Trial %s: could not send its last results: %s", trial_id, exc)
        with _ARRIVED:
            _INBOX.pop((trial_id, self.attempt), None)
            _ANSWERED.pop((trial_id, self.attempt), None)


class DaskDeskChannel:
    """The driver's side: rows from ``subscribe_topic`` judged in one thread, in arrival order.

    The thread takes every message queued, judges their rows, stores the desk's state once
    if a decision must outlive a crash (a group commit: one write per batch, however many
    trials wait), and only then sends the decisions down, one ``Client.run`` per worker.
    """

    def __init__(self, desk: DeskControl, client: Any, topic: str) -> None:
        self.desk = desk
        self.client = client
        self.topic = topic
        self._queue: queue.Queue[Any] = queue.Queue()
        self._sent: set[tuple[str, int]] = set()
        self._pending = 0  # events queued or being judged
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="prefect-tune-desk", daemon=True)
        client.subscribe_topic(topic, self._put)
        self._thread.start()

    def control(self, attempt: int, trial_id: str) -> RemoteDeskControl:
        return RemoteDeskControl(self.topic, attempt, self.desk.points(trial_id))

    def _put(self, event: Any) -> None:
        with self._pending_lock:
            self._pending += 1
        self._queue.put(event)

    def _loop(self) -> None:
        while True:
            events = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    events.append(self._queue.get_nowait())
            answers: dict[str, list[tuple[str, int, float | None, str]]] = {}
            heard: list[tuple[str, Mapping[str, Any]]] = []
            for event in events:
                if event is None:
                    continue
                try:
                    self._judge(event[1], answers, heard)
                except Exception as exc:  # a damaged message must not end the desk
                    logger.warning("Decision desk: could not judge %r: %s", event, exc)
            try:
                self.desk.commit()  # before any decision leaves: it must outlive a crash
            except Exception as exc:
                # Unsent, the trials waiting go on after POINT_WAIT_S; the next commit
                # stores these decisions with the later ones.
                logger.warning("Decision desk: could not store its decisions: %s", exc)
                for batch in answers.values():
                    self._sent.difference_update((t, a) for t, a, _, _ in batch)
                answers = {}
            for worker, batch in answers.items():
                with contextlib.suppress(Exception):  # the worker may have gone
                    self.client.run(_deliver, batch, workers=[worker], on_error="return")
            for trial_id, row in heard:  # the searcher hears rows once decisions have left
                self.desk.tell(trial_id, row)
            with self._pending_lock:
                self._pending -= len(events)
            if None in events:
                return

    def _judge(
        self,
        message: Mapping[str, Any],
        answers: dict[str, list[tuple[str, int, float | None, str]]],
        heard: list[tuple[str, Mapping[str, Any]]],
    ) -> None:
        trial_id, attempt = str(message["trial"]), int(message["attempt"])
        worker = str(message["worker"])
        waits = {float(w) for w in message.get("wait", ())}
        for row in unpack_rows(str(message["fmt"]), message["rows"]):
            iteration = result_number(row, "training_iteration")
            waiting = iteration is not None and iteration in waits
            decision = self.desk.judge(trial_id, row, waiting)
            heard.append((trial_id, row))
            first = decision is not Decision.CONTINUE and (trial_id, attempt) not in self._sent
            if first:
                self._sent.add((trial_id, attempt))
            if first or waiting:
                answers.setdefault(worker, []).append(
                    (trial_id, attempt, iteration if waiting else None, decision.value)
                )

    def drain(self, timeout_s: float = 2.0) -> None:
        """Waits (a bounded time) for the rows already queued to be judged and stored."""
        end = time.monotonic() + timeout_s
        while self._pending > 0 and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the client may be closed already
            self.client.unsubscribe_topic(self.topic)
        self._put(None)
        self._thread.join(timeout=5)
