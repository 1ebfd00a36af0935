"""Prefect's task engine for trial task runs, asking the API for tag concurrency slots only when
a limit exists.

Prefect's engine asks the API for a concurrency slot for every task run that has tags
(``POST /v2/concurrency_limits/increment-with-lease``), even when no limit is set for any of
them; the server then answers with no limits and the engine runs the task. That request opens a
write transaction on the server. On a SQLite-backed server (``prefect server start`` by default,
the test harness) it collides with the server's own writes of the task runs' events, the server
answers 503, and the client waits 2, 4, 8... seconds before asking again: the experiment's name
tag on every trial made a quarter of a second trial wait seconds.

So a worker process reads, at most every `LIMITS_TTL_S` seconds, whether a concurrency limit
named ``tag:<tag>`` exists for any trial tag (a plain GET, no write). With none, the engine skips
the request that would have returned nothing; with one (active or not), trials go through
Prefect's own path and the limit holds as it would for any task. A limit created while an
experiment runs applies to the trials that start at most `LIMITS_TTL_S` seconds later.

Skipping the request means running `SyncTaskRunEngine.start` without it, which this module
copies. The copy, and the rest of the fast path, are used only while the Prefect code they copy
or rely on is the code they were written against (`PREFECT_INTERNALS_DIGEST`,
`internals_are_known`): with any other Prefect, the driver sends trials through Prefect's own
``task_runner.submit`` (`prefect_tune.prefect._fast.fast_dispatch`), and a worker whose Prefect
differs from the driver's still asks for every slot through Prefect's own `start`.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager, nullcontext
from functools import cache
from typing import Any
from uuid import UUID

from opentelemetry import trace
from prefect._flow_run_suspension import raise_if_flow_run_suspension_requested
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import RunInput
from prefect.context import ContextModel, SyncClientContext
from prefect.exceptions import ObjectNotFound, UpstreamTaskError
from prefect.states import Pending
from prefect.task_engine import SyncTaskRunEngine
from prefect.tasks import Task

LIMITS_TTL_S = 5.0

# The Prefect code the fast path copies (`SyncTaskRunEngine.start`, into `_start_without_slots`)
# or relies on beyond its documented use: how a context keeps the token of the context variable
# it set, which `_worker._Connection` resets to keep a client context open for good.
RELIED_ON: tuple[Any, ...] = (
    SyncTaskRunEngine.start,
    ContextModel.__enter__,
    ContextModel.__exit__,
    SyncClientContext.__enter__,
    SyncClientContext.__exit__,
)

# sha256 of the sources of `RELIED_ON`, one after the other, in the Prefect release they were
# checked against (3.9.1).
PREFECT_INTERNALS_DIGEST = "b05826147c291e62ed46981340e8b73a6b80737313fc748818abfbb6c57af370"


def internals_digest() -> str | None:
    """sha256 of the installed Prefect's sources of `RELIED_ON`; None if they cannot be read."""
    digest = hashlib.sha256()
    try:
        for function in RELIED_ON:
            digest.update(inspect.getsource(function).encode())
    except (OSError, TypeError):  # no source shipped (a frozen or compiled install)
        return None
    return digest.hexdigest()


@cache
def internals_are_known() -> bool:
    """Whether the installed Prefect's code in `RELIED_ON` is the code the fast path was
    written against."""
    return internals_digest() == PREFECT_INTERNALS_DIGEST


class TagLimits:
    """Whether a concurrency limit exists for any of a set of tags, read from the API at most
    every `ttl_s` seconds (per worker process and experiment)."""

    def __init__(self, tags: tuple[str, ...], ttl_s: float = LIMITS_TTL_S):
        self.names = tuple(f"tag:{tag}" for tag in tags)
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._limited = True
        self._read_at = float("-inf")

    def limited(self, client: SyncPrefectClient) -> bool:
        """True if a limit exists for any tag, or if the API could not say."""
        if not self.names:
            return False
        if time.monotonic() - self._read_at < self.ttl_s:
            return self._limited
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl_s:
                self._limited = self._read(client)
                self._read_at = time.monotonic()
        return self._limited

    def _read(self, client: SyncPrefectClient) -> bool:
        for name in self.names:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                continue
            except Exception:
                return True  # unknown: let Prefect ask for the slot
            return True
        return False


class _TrialTaskEngine(SyncTaskRunEngine[Any, Any]):
    """Prefect's sync task engine; `ask_for_slots=False` leaves out the tag concurrency slot
    request (made only when no limit exists for the task run's tags)."""

    ask_for_slots: bool = True

    @contextmanager
    def start(
        self,
        task_run_id: UUID | None = None,
        dependencies: dict[str, set[RunInput]] | None = None,
    ) -> Generator[None, None, None]:
        if self.ask_for_slots:
            with super().start(task_run_id=task_run_id, dependencies=dependencies):
                yield
            return
        with self._start_without_slots(task_run_id, dependencies):
            yield

    @contextmanager
    def _start_without_slots(
        self,
        task_run_id: UUID | None,
        dependencies: dict[str, set[RunInput]] | None,
    ) -> Generator[None, None, None]:
        # `SyncTaskRunEngine.start` of Prefect 3.9 without its `_concurrency(...)` block.
        with (
            self.initialize_run(task_run_id=task_run_id, dependencies=dependencies),
            (
                # the span exists once initialize_run has started it
                trace.use_span(self._telemetry.span) if self._telemetry.span else nullcontext()
            ),
        ):
            try:
                self._resolve_parameters()
                self._set_custom_task_run_name()
                self._wait_for_dependencies()
            except UpstreamTaskError as upstream_exc:
                self.set_state(
                    Pending(name="NotReady", message=str(upstream_exc)),
                    force=self.state.is_pending(),
                )
                yield
                self.call_hooks()
                return

            raise_if_flow_run_suspension_requested()
            self.begin_run()
            try:
                yield
            finally:
                self.call_hooks()


def run_task(task: Task[Any, Any], parameters: dict[str, Any], ask_for_slots: bool) -> Any:
    """Prefect's `run_task_sync(task, parameters=..., return_type="result")`, through
    `_TrialTaskEngine`."""
    engine = _TrialTaskEngine(task=task, parameters=parameters)
    engine.ask_for_slots = ask_for_slots or not internals_are_known()
    with engine.start():
        while engine.is_running():
            engine.wait_until_ready()
            with (
                engine.asset_context(),
                engine.run_context(),
                engine.transaction_context() as txn,
            ):
                engine.call_task_fn(txn)
            raise_if_flow_run_suspension_requested()
    return engine.result()


__all__ = [
    "LIMITS_TTL_S",
    "PREFECT_INTERNALS_DIGEST",
    "TagLimits",
    "internals_are_known",
    "internals_digest",
    "run_task",
]
