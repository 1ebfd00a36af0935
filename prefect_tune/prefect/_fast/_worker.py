"""Trial task runs on Dask workers, with Prefect's run context built once per worker process
(the worker's half of the fast path).

prefect-dask's ``DaskTaskRunner.submit`` serialises the whole flow run context for every task
(the flow object, every setting) and the worker rebuilds it from scratch for every task run: the
settings are validated again and a new API client with its own SSL context is made, about 250 ms
of a trial's overhead on a small machine. Trials of one experiment share all of it, so here the
driver captures the context once per experiment (`WorkerContext`) and each worker process builds
the expensive parts once (`_Connection`) and keeps them for later trials and experiments.

Each trial is still a real Prefect task run of the experiment's flow run, run by Prefect's own
task engine: its states, logs, name and tags reach the API as with ``task.submit``. Only the
plumbing around it changes, and the tag concurrency slot request when no limit exists for the
trial tags (`prefect_tune.prefect._fast._engine`).
"""

from __future__ import annotations

import hashlib
import pickle
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext, SettingsContext, SyncClientContext
from prefect.logging.configuration import ensure_logging_setup
from prefect.results import ResultStore
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_tune.engine import TrialOutcome, TrialRequest
from prefect_tune.exceptions import PrefectAPIUnreachableError
from prefect_tune.prefect._fast._engine import TagLimits, run_task
from prefect_tune.prefect._task import Sealed, trial_run_name, trial_task


@dataclass(frozen=True)
class WorkerContext:
    """What a worker needs to run task runs inside the experiment's flow run.

    Captured once on the driver, inside the running flow; pickled with every trial (a few KiB).
    A worker process turns its settings into a `_Connection` once per set of settings (so once
    for all experiments on a long-lived cluster) and the rest into a `_WorkerEnv` once per
    experiment.
    """

    key: str
    settings_key: str
    experiment_name: str
    tags: tuple[str, ...]
    flow_run: dict[str, Any]
    settings: dict[str, Any] = field(repr=False)

    @classmethod
    def capture(cls, experiment_name: str, tags: tuple[str, ...] = ()) -> WorkerContext:
        run_context = FlowRunContext.get()
        if run_context is None or run_context.flow_run is None:
            raise RuntimeError("WorkerContext.capture() must run inside the experiment's flow.")
        serialized, settings_key = _serialized_settings(SettingsContext.get())
        flow_run = run_context.flow_run.model_dump(mode="json")
        key = _digest((settings_key, experiment_name, tags, flow_run["id"]))
        return cls(key, settings_key, experiment_name, tuple(tags), flow_run, serialized)


_SERIALIZED: dict[int, tuple[Any, dict[str, Any], str]] = {}


def _serialized_settings(context: SettingsContext | None) -> tuple[dict[str, Any], str]:
    """The settings context as Prefect serialises it for remote runs, with its digest; made
    once per settings object (it takes a third of a second; experiments share it)."""
    if context is None:
        return {}, _digest({})
    cached = _SERIALIZED.get(id(context.settings))
    if cached is not None and cached[0] is context.settings:
        return cached[1], cached[2]
    serialized = context.serialize()
    digest = _digest(serialized)
    if len(_SERIALIZED) >= 8:
        _SERIALIZED.clear()
    # The settings object is kept, so its id cannot be reused by another one.
    _SERIALIZED[id(context.settings)] = (context.settings, serialized, digest)
    return serialized, digest


def _digest(value: Any) -> str:
    return hashlib.sha256(pickle.dumps(value)).hexdigest()[:16]


class _Connection:
    """The settings, one open API client and the result store of a worker process: the parts
    of Prefect's run context that cost the most to build (validating the settings, an HTTP
    client with its SSL context, asking the API for the default result storage)."""

    def __init__(self, context: WorkerContext):
        ensure_logging_setup()
        self.settings_context = (
            SettingsContext(**context.settings) if context.settings else SettingsContext.get()
        )
        with ExitStack() as stack:
            if self.settings_context is not None:
                stack.enter_context(self.settings_context.model_copy())
            # Opened once and never closed while the process lives: the engine reuses it
            # through SyncClientContext instead of making a client per task run.
            self.client_context = SyncClientContext()
            self.client_context.__enter__()
            stack.callback(self._forget_client_context_token)
            _check_reachable(self.client_context.client)
            flow: Flow[[], None] = Flow(fn=_experiment_flow_stub, name="prefect-tune")
            store = ResultStore().update_for_flow(flow, _sync=True)  # type: ignore[call-arg]
            assert isinstance(store, ResultStore)
            self.result_store = store

    def _forget_client_context_token(self) -> None:
        self.client_context.__var__.reset(self.client_context._token)  # type: ignore[arg-type]
        self.client_context._token = None


def _check_reachable(client: SyncPrefectClient) -> None:
    """Raises `PrefectAPIUnreachableError`, naming the API's URL, if ``client`` cannot reach it
    (checked once per worker process, before its first trial's task run)."""
    unhealthy = client.api_healthcheck()
    if unhealthy is None:
        return
    raise PrefectAPIUnreachableError(
        f"The Dask worker on {socket.gethostname()} cannot reach the Prefect API at "
        f"{client.api_url} ({type(unhealthy).__name__}: {unhealthy}). Every worker reports its "
        "trials there: set PREFECT_API_URL to a Prefect server that the driver and every worker "
        "can reach (a temporary API that Prefect starts on the driver, when none is set, "
        "listens on 127.0.0.1 of the driver's host only)."
    )


class _WorkerEnv:
    """Prefect's run context for one experiment in one worker process; `entered` puts it in
    place for a task run."""

    def __init__(self, context: WorkerContext, connection: _Connection):
        self.connection = connection
        self.flow: Flow[[], None] = Flow(fn=_experiment_flow_stub, name=context.experiment_name)
        self.flow_run = FlowRun.model_validate(context.flow_run)
        self.task = trial_task.with_options(task_run_name=trial_run_name, tags=list(context.tags))
        self.tag_limits = TagLimits(context.tags)
        self._local = threading.local()

    def _flow_context(self) -> FlowRunContext:
        """This thread's flow run context (a context object is entered by one thread at a
        time, so each thread has its own; its task runner runs the tasks a trainable may
        submit itself)."""
        context: FlowRunContext | None = getattr(self._local, "flow_context", None)
        if context is None:
            runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=1)
            runner.__enter__()
            context = FlowRunContext(
                flow=self.flow,
                flow_run=self.flow_run,
                client=self.connection.client_context.client,
                task_runner=runner,
                result_store=self.connection.result_store,
                persist_result=False,
                detached=True,
            )
            self._local.flow_context = context
        return context

    @contextmanager
    def entered(self) -> Iterator[None]:
        connection = self.connection
        with ExitStack() as stack:
            if connection.settings_context is not None:
                settings_token = SettingsContext.__var__.set(connection.settings_context)
                stack.callback(SettingsContext.__var__.reset, settings_token)
            client_token = SyncClientContext.__var__.set(connection.client_context)
            stack.callback(SyncClientContext.__var__.reset, client_token)
            flow_token = FlowRunContext.__var__.set(self._flow_context())
            stack.callback(FlowRunContext.__var__.reset, flow_token)
            yield


def _experiment_flow_stub() -> None:
    """Stands for the experiment's flow in a worker's run context (never called)."""


_CONNECTIONS: dict[str, _Connection] = {}
_ENVS: dict[str, _WorkerEnv] = {}
_LOCK = threading.Lock()
_MAX_ENVS = 16  # a long-lived worker serving many experiments keeps the latest


def _env_for(context: WorkerContext) -> _WorkerEnv:
    env = _ENVS.get(context.key)
    if env is not None:
        return env
    with _LOCK:
        env = _ENVS.get(context.key)
        if env is None:
            connection = _CONNECTIONS.get(context.settings_key)
            if connection is None:
                connection = _CONNECTIONS[context.settings_key] = _Connection(context)
            env = _WorkerEnv(context, connection)
            if len(_ENVS) >= _MAX_ENVS:
                _ENVS.pop(next(iter(_ENVS)))
            _ENVS[context.key] = env
    return env


def run_trial_task(context: WorkerContext, request: TrialRequest) -> TrialOutcome:
    """Runs one trial as a task run of the experiment's flow run (on a Dask worker).

    Returns:
        The trial's outcome.

    Raises:
        TrialError: the trainable raised (the task run is FAILED with it).
    """
    env = _env_for(context)
    with env.entered():
        limited = env.tag_limits.limited(env.connection.client_context.client)
        return run_task(env.task, parameters={"sealed": Sealed(request)}, ask_for_slots=limited)


__all__ = ["WorkerContext", "run_trial_task"]
