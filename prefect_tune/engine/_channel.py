"""The Dask channel of the decision desk: rows up by ``Worker.log_event``, decisions down by
``Client.run`` (see :mod:`prefect_tune.engine._decisions` for the design)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect_tune.engine._control import Decision
from prefect_tune.engine._decisions import DeskControl

logger = logging.getLogger(__name__)

#: Least time between two batches of rows sent up by one trial.
BATCH_S = 0.005

#: (trial id, attempt) -> decision, in each worker process; written by the driver's Client.run.
_INBOX: dict[tuple[str, int], str] = {}


def _deliver(trial_id: str, attempt: int, decision: str) -> None:
    _INBOX[(trial_id, attempt)] = decision


@dataclass
class RemoteDeskControl:
    """The trial's side of the channel, sent to its worker with the trial's request."""

    topic: str
    attempt: int = 0
    _rows: list[dict[str, Any]] = field(default_factory=list)
    _sent: float = 0.0

    def on_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        self._rows.append(dict(result))
        if time.monotonic() - self._sent >= BATCH_S:
            self.flush(trial_id)
        answer = _INBOX.get((trial_id, self.attempt))
        return Decision(answer) if answer is not None else Decision.CONTINUE

    def flush(self, trial_id: str) -> None:
        if not self._rows:
            return
        from distributed import get_worker

        worker = get_worker()
        rows, self._rows = self._rows, []
        worker.log_event(
            self.topic,
            {"trial": trial_id, "attempt": self.attempt, "worker": worker.address, "rows": rows},
        )
        self._sent = time.monotonic()

    def close(self, trial_id: str) -> None:
        """Sends the rows not sent yet (the desk judges every row, the last ones too)."""
        try:
            self.flush(trial_id)
        except Exception as exc:  # a trial's end never fails on its channel
            logger.warning("Trial %s: could not send its last results: %s", trial_id, exc)
        _INBOX.pop((trial_id, self.attempt), None)


class DaskDeskChannel:
    """The driver's side: rows from ``subscribe_topic`` judged in one thread, in arrival order;
    a decision other than CONTINUE stored (by the desk control) before it is sent down."""

    def __init__(self, desk: DeskControl, client: Any, topic: str) -> None:
        self.desk = desk
        self.client = client
        self.topic = topic
        self._queue: queue.Queue[Any] = queue.Queue()
        self._sent: set[tuple[str, int]] = set()
        self._thread = threading.Thread(target=self._loop, name="prefect-tune-desk", daemon=True)
        client.subscribe_topic(topic, self._queue.put)
        self._thread.start()

    def control(self, attempt: int) -> RemoteDeskControl:
        return RemoteDeskControl(self.topic, attempt)

    def _loop(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self._judge(event[1])
            except Exception as exc:  # a damaged message must not end the desk
                logger.warning("Decision desk: could not judge %r: %s", event, exc)

    def _judge(self, message: Mapping[str, Any]) -> None:
        trial_id, attempt = str(message["trial"]), int(message["attempt"])
        for row in message["rows"]:
            decision = self.desk.on_result(trial_id, row)  # stored first when not CONTINUE
            if decision is not Decision.CONTINUE and (trial_id, attempt) not in self._sent:
                self._sent.add((trial_id, attempt))
                self.client.run(
                    _deliver,
                    trial_id,
                    attempt,
                    decision.value,
                    workers=[message["worker"]],
                    on_error="return",
                )

    def drain(self, timeout_s: float = 2.0) -> None:
        """Waits (a bounded time) for the rows already queued to be judged."""
        end = time.monotonic() + timeout_s
        while not self._queue.empty() and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the client may be closed already
            self.client.unsubscribe_topic(self.topic)
        self._queue.put(None)
        self._thread.join(timeout=5)
