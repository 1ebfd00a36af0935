"""`TuneController`: the driver loop. It owns the trial table and is the only writer of the
experiment-level state; trials run elsewhere through a :class:`TrialExecutor`."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect_tune.config import CheckpointConfig, FailureConfig
from prefect_tune.engine._control import Decision
from prefect_tune.engine._decisions import (
    DECISIONS_FILE,
    DecisionDesk,
    DeskControl,
    warn_no_checkpoint,
)
from prefect_tune.engine._executor import ThreadTrialExecutor, TrialExecutor
from prefect_tune.engine._exploits import already_made, make_exploit
from prefect_tune.engine._progress import ExperimentObserver, ProgressTracker
from prefect_tune.engine._search import BasicVariantGenerator
from prefect_tune.engine._suggestions import (
    FINISHED,
    SEARCH_FILE,
    SearchRecord,
    listens_to_results,
    stored_search_kind,
)
from prefect_tune.engine._trial_run import TrialOutcome, TrialRequest
from prefect_tune.exceptions import (
    ConfigError,
    DamagedStateError,
    DecisionStateMismatchError,
    TrialError,
)
from prefect_tune.state import (
    DEFAULT_LEASE_TTL_S,
    ExperimentDefinition,
    ExperimentState,
    ExperimentStore,
    FlowRunRecord,
    Lease,
    LeaseHolder,
    PackedSummary,
    TrialState,
    TrialStatus,
)

logger = logging.getLogger("prefect_tune")

#: Trials submitted per trial the executor can run at once when ``max_concurrent_trials`` is
#: not set: the rest wait in its queue.
QUEUED_PER_SLOT = 2

#: A failed trial runs again after this many seconds, each next failure of it (in one run of
#: the driver) twice as long as the last, up to `RETRY_DELAY_MAX_S`: a trial that fails at once,
#: every time, with ``max_failures=-1`` must not keep a worker spinning.
RETRY_DELAY_S = 1.0
RETRY_DELAY_MAX_S = 60.0


@dataclass(frozen=True)
class ResumePolicy:
    """Which stored trials run again (``Tuner.restore`` flags)."""

    resume_unfinished: bool = True
    resume_errored: bool = False
    restart_errored: bool = False


def trial_summary(config: dict[str, Any], limit: int = 60) -> str:
    """A short ``key=value,...`` rendering of a config for names (``lr=0.0012,opt=adam``)."""
    parts: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}." if isinstance(inner, dict) else f"{prefix}{key}", inner)
            return
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{prefix.rstrip('.')}={text[:20]}")

    walk("", config)
    out = ",".join(parts)
    return out if len(out) <= limit else out[: limit - 3] + "..."


class TuneController:
    """Runs an experiment to its end: creates trials from the searcher, submits them, records
    their outcomes, retries failures and persists the experiment's state.

    Args:
        store: The experiment's store; its definition is already written, unless ``prepare``
            writes it.
        definition: The stored definition (ids, metric), or the one expected until ``prepare``
            gives it.
        generator: Yields trial configs by index (of ``definition``).
        trainable: The user's function.
        executor: Where trials run.
        checkpoint_config: Passed to every trial.
        failure_config: Retries and fail-fast.
        stop: ``RunConfig.stop`` (a dict, a function, or a ``Stopper``, which the driver's
            decision desk asks about every result).
        search_alg: ``TuneConfig.search_alg`` other than the default (None: ``generator``
            makes every config). Bound to the space already (``set_search_properties``); asked
            on this thread as trials free up, each suggestion stored before its trial is
            submitted (see ``engine/_suggestions.py``).
        scheduler: ``TuneConfig.scheduler`` (None: FIFO). A scheduler or a ``Stopper`` runs
            only with an executor that runs trials in this process (``ThreadTrialExecutor``)
            in this version; its state is stored with the experiment and checked on restore.
        max_concurrent_trials: At most this many trials submitted at once (default: twice the
            executor's capacity, half of them waiting in its queue).
        time_budget_s: No new trials after this many seconds; running ones stop at their next
            report.
        policy: Which stored trials run again.
        flow_run: The flow run driving this, recorded in the experiment's lineage.
        trainable_name: Prefix of trial directory and trial names.
        state_save_interval_s: Least time between two writes of the experiment snapshot.
        lease_ttl_s: Seconds without lease renewal after which another driver may take over.
        fence_interval_s: How often running trials check the lease.
        on_takeover: Called with the lease of a driver that was taken over (it crashed).
        on_acquired: Called each time this driver has taken the lease, after ``on_takeover``.
        prepare: Called while this driver holds the lease, before any trial state is read:
            checks the stored definition or writes a new one (deleting a stored experiment it
            replaces), and returns the definition to run with its generator. What destroys or
            writes a definition thus never races another driver.
        observers: Shown the experiment's progress at the start, every observer's
            ``interval_s`` while trials run, and at the end.
        check_stored: Read the stored experiment whole before taking the lease, so that a
            damaged one is refused with nothing written; False when ``prepare`` replaces it.
        retry_delay_s: Wait before the first retry of a failed trial (doubling each time after,
            up to ``retry_delay_max_s``).
        retry_delay_max_s: Longest wait before a retry.
    """

    def __init__(
        self,
        *,
        store: ExperimentStore,
        definition: ExperimentDefinition,
        generator: BasicVariantGenerator,
        trainable: Callable[[dict[str, Any]], Any],
        executor: TrialExecutor,
        checkpoint_config: CheckpointConfig,
        failure_config: FailureConfig,
        stop: Any = None,
        search_alg: Any = None,
        scheduler: Any = None,
        max_concurrent_trials: int | None = None,
        time_budget_s: float | None = None,
        policy: ResumePolicy | None = None,
        flow_run: FlowRunRecord | None = None,
        trainable_name: str = "trainable",
        state_save_interval_s: float = 1.0,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        fence_interval_s: float = 2.0,
        on_takeover: Callable[[Lease], None] | None = None,
        on_acquired: Callable[[], None] | None = None,
        prepare: Callable[[], tuple[ExperimentDefinition, BasicVariantGenerator]] | None = None,
        observers: Sequence[ExperimentObserver] = (),
        check_stored: bool = True,
        retry_delay_s: float = RETRY_DELAY_S,
        retry_delay_max_s: float = RETRY_DELAY_MAX_S,
    ):
        self.store = store
        self.definition = definition
        self.generator = generator
        self.trainable = trainable
        self.executor = executor
        self.checkpoint_config = checkpoint_config
        self.failure_config = failure_config
        self.stop = stop
        self.search = SearchRecord(search_alg, store.storage) if search_alg is not None else None
        listener = (
            self.search.on_trial_result
            if self.search is not None and listens_to_results(search_alg)
            else None
        )
        self.decisions = self._desk(stop, scheduler, executor, store, listener)
        if self.decisions is not None and self.decisions.desk.stopper is not None:
            self.stop = None  # the Stopper is the desk's; a dict or function stays the trial's
        self.max_concurrent = max_concurrent_trials
        self.time_budget_s = time_budget_s
        self.policy = policy or ResumePolicy()
        self.flow_run = flow_run
        self.trainable_name = trainable_name
        self.save_interval = state_save_interval_s
        self.lease = LeaseHolder(
            store.storage,
            ttl_s=lease_ttl_s,
            flow_run={"id": flow_run.flow_run_id, "name": flow_run.flow_run_name}
            if flow_run
            else None,
        )
        self.fence_interval_s = fence_interval_s
        self.on_takeover = on_takeover
        self.on_acquired = on_acquired
        self.prepare = prepare
        self.observers = list(observers)
        self.check_stored = check_stored
        self._observed: dict[int, float] = {}  # observer's position -> when it was last called
        self._progress: ProgressTracker | None = None
        # The trial table. A trial this driver is running, or has queued with a state newer
        # than its stored one, is in `_live` whole; any other, finished ones above all, is in
        # `_packed` as its summary only: its trial.json holds the rest.
        self._live: dict[int, TrialState] = {}
        self._packed: dict[int, PackedSummary] = {}
        self.state: ExperimentState | None = None
        self._queue: deque[tuple[int, bool]] = deque()  # (trial index, restart from scratch)
        self.retry_delay_s = retry_delay_s
        self.retry_delay_max_s = retry_delay_max_s
        self._delayed: dict[int, float] = {}  # failed trial index -> when it may run again
        self._retries: dict[int, int] = {}  # trial index -> its retries in this run
        self._running: dict[Any, int] = {}
        self._last_save = 0.0
        self._save_cost = 0.0
        self._dirty = False
        self._fail_fast_error: TrialError | None = None
        self._channel: Any = None  # the desk's Dask channel, while trials run on Dask
        self._submissions = 0

    @staticmethod
    def _desk(
        stop: Any, scheduler: Any, executor: Any, store: ExperimentStore, listener: Any = None
    ) -> Any:
        from prefect_tune.schedulers import FIFOScheduler
        from prefect_tune.stopper import Stopper

        stopper = stop if isinstance(stop, Stopper) else None
        if type(scheduler) is FIFOScheduler:
            scheduler = None
        if stopper is None and scheduler is None and listener is None:
            return None
        if not isinstance(executor, ThreadTrialExecutor) and not hasattr(executor, "dask_client"):
            if stopper is None and scheduler is None:
                return None  # the searcher learns from trials' ends only
            raise ConfigError(
                "A scheduler or a Stopper needs trials run in the driver's process "
                f"(ThreadTrialExecutor) or on Dask, not with {type(executor).__name__}."
            )
        desk = DecisionDesk(scheduler=scheduler, stopper=stopper)
        return DeskControl(desk, store.storage, listener=listener)

    def _open_channel(self) -> None:
        """On Dask, rows come up and decisions go down the desk's channel; trials run in this
        process (threads) call the desk directly."""
        client = getattr(self.executor, "dask_client", lambda: None)()
        if self.decisions is not None and client is not None:
            from prefect_tune.engine._channel import DaskDeskChannel

            topic = f"prefect-tune-decisions-{self.definition.experiment_id}-{self.lease.owner}"
            self._channel = DaskDeskChannel(self.decisions, client, topic)

    def _trial_control(self, trial_id: str) -> Any:
        if self._channel is not None:
            self._submissions += 1
            return self._channel.control(self._submissions, trial_id)
        return self.decisions

    def _load_decisions(self) -> None:
        """Gives the scheduler the experiment's metric and takes back the stored decisions."""
        scheduler = self.decisions.desk.scheduler
        if scheduler is not None and not scheduler.set_search_properties(
            self.definition.metric, self.definition.mode
        ):
            raise ConfigError(
                f"{type(scheduler).__name__} has a metric or mode of its own and TuneConfig "
                "gives them too: set them in one place only."
            )
        self.decisions.load()
        self._catch_up_decisions()
        if self.decisions.hears_trial_ends:
            self._tell_ended()

    def _tell_ended(self) -> None:
        """Tells the restored scheduler of the trials that ended (the stored trials are the
        truth; telling one twice changes nothing), in index order; queued trials are not over."""
        assert self.decisions is not None
        queued = {index for index, _ in self._queue}
        for index, packed in sorted(self._packed.items()):
            if index in queued or not packed.status.is_finished():
                continue
            summary = packed.unpack()
            self.decisions.on_trial_end(
                summary.trial_id, summary.last_result, error=packed.status is TrialStatus.ERROR
            )
        self.decisions.commit()

    def _catch_up_decisions(self) -> None:
        """Judges the stored results that the stored decisions have not judged yet: those a
        driver judged in its last moments without storing (none of them had been acted on),
        and those it never saw. In index order, each trial's rows in order, so that the same
        stored experiment always resumes to the same decisions. A trial that runs again
        reports the rows after its latest checkpoint anew: only those up to it are judged here.
        """
        judged = 0
        for index in sorted(self._packed):
            packed = self._packed[index]
            summary = packed.unpack()
            if self.decisions.is_stopped(summary.trial_id):
                continue
            if packed.status is TrialStatus.TERMINATED:
                last = (summary.last_result or {}).get("training_iteration")
                if not isinstance(last, (int, float)) or last <= self.decisions.judged(
                    summary.trial_id
                ):
                    continue
            trial = self.store.read_trial(summary.dir_name)
            if trial is None:
                continue
            if trial.status is TrialStatus.TERMINATED or (
                trial.status is TrialStatus.ERROR
                and not (self.policy.resume_errored or self.policy.restart_errored)
            ):
                upto = math.inf
            elif trial.status is TrialStatus.ERROR and self.policy.restart_errored:
                upto = 0.0
            else:
                latest = trial.latest_checkpoint
                upto = float(latest.training_iteration) if latest is not None else 0.0
            since = self.decisions.judged(trial.trial_id)
            if upto <= since:
                continue
            rows = [
                row
                for row in self.store.read_history(trial)
                if isinstance(row.get("training_iteration"), (int, float))
                and since < row["training_iteration"] <= upto
            ]
            judged += self.decisions.catch_up(trial.trial_id, trial.config, rows)
        if judged:
            logger.info("Judged %d stored results the stored decisions had not judged.", judged)
            self.decisions.commit()

    # -- trial table ---------------------------------------------------------------------------

    def _trial_name(self, trial: TrialState) -> str:
        summary = trial_summary(trial.config)
        base = f"{self.trainable_name}_{trial.trial_id}"
        return f"{base} {summary}" if summary else base

    def _trial_id(self, index: int) -> str:
        return f"{self.definition.experiment_id}_{index:05d}"

    def _new_trial(self, index: int) -> TrialState:
        trial_id = self._trial_id(index)
        if self.search is None:
            config = self.generator.config_for(index)
        else:
            recorded = self.search.recorded(index)
            if recorded is None:
                raise DamagedStateError(
                    f"Trial {index} of the experiment has no stored state and no suggestion in "
                    f"{SEARCH_FILE}: the search record is behind the experiment's snapshot."
                )
            config = recorded
        return TrialState(
            trial_id=trial_id,
            index=index,
            dir_name=f"{self.trainable_name}_{trial_id}",
            config=config,
        )

    def _load(self) -> list[str]:
        """Reads the stored experiment into the trial table and queues what runs again.

        Returns:
            The directories of queued trials whose ``trial.json`` was not read (the snapshot
            shows them finished): they are read when they start.
        """
        state, trials = self.store.load_summaries()
        self._queue.clear()
        unread: list[str] = []
        self.state = state or ExperimentState(name=self.definition.name)
        self._live = {}
        self._packed = {t.index: t for t in trials}
        self.state.next_trial_index = max(
            [self.state.next_trial_index, *(i + 1 for i in self._packed)]
        )
        if self.search is None and self.store.storage.exists(SEARCH_FILE):
            raise DecisionStateMismatchError(
                f"The experiment was run with the search algorithm {stored_search_kind(self.store.storage)} "
                f"(its suggestions are stored in {SEARCH_FILE}); restore it with the same one "
                "(TuneConfig(search_alg=...), Tuner.restore(search_alg=...)), never without."
            )
        if self.search is not None:
            self.search.load(stored_trials=len(self._packed))
            self._check_search_record()
            # Suggested (and stored) just before the driver died: the trial is made from it.
            self.state.next_trial_index = max(self.state.next_trial_index, self.search.next_index)
        # A trial submitted but not yet started when its driver stopped has no directory, and
        # is in no snapshot if none was saved after it was created: made again from its index.
        for index in range(self.state.next_trial_index):
            if index not in self._packed:
                self._packed[index] = PackedSummary.of(self._new_trial(index))
        self._packed = dict(sorted(self._packed.items()))
        for trial in list(self._packed.values()):
            if trial.status is TrialStatus.TERMINATED:
                continue
            if trial.status is TrialStatus.ERROR:
                if self.policy.restart_errored or self.policy.resume_errored:
                    unread.append(trial.dir_name)
                if self.policy.restart_errored:
                    self._enqueue_stored(trial, restart=True)
                elif self.policy.resume_errored:
                    self._enqueue_stored(trial)
            elif self.policy.resume_unfinished:
                self._enqueue_stored(trial)
        if self.flow_run is not None:
            self.state.flow_runs.append(self.flow_run)
        self.state.finished = False
        return unread

    def _check_search_record(self) -> None:
        """The stored suggestions name this experiment's trials, as stored."""
        assert self.search is not None
        total = self.definition.total_trials
        if total is not None and self.search.next_index > total:
            raise DamagedStateError(
                f"{SEARCH_FILE} records {self.search.next_index} suggestions; the experiment "
                f"has {total} trials."
            )
        for index in range(self.search.next_index):
            recorded = self.search.recorded_id(index)
            if recorded is not None and recorded != self._trial_id(index):
                raise DamagedStateError(
                    f"{SEARCH_FILE}: suggestion {index} names trial {recorded!r}, not "
                    f"{self._trial_id(index)!r} of this experiment."
                )

    def _tell_finished(self) -> None:
        """Tells the restored searcher of the trials that ended after its record was written
        (the stored trials are the truth), in index order; queued trials are not over."""
        assert self.search is not None
        queued = {index for index, _ in self._queue}
        for index, packed in sorted(self._packed.items()):
            if index in queued or not packed.status.is_finished():
                continue
            summary = packed.unpack()
            self.search.on_trial_complete(
                summary.trial_id,
                summary.last_result,
                error=summary.status is TrialStatus.ERROR,
            )

    def _tell_complete(self, trial: TrialState) -> None:
        if self.decisions is not None and trial.status.is_finished():
            self.decisions.on_trial_end(
                trial.trial_id, trial.last_result, error=trial.status is TrialStatus.ERROR
            )
        if self.search is not None and trial.status.is_finished():
            self.search.on_trial_complete(
                trial.trial_id, trial.last_result, error=trial.status is TrialStatus.ERROR
            )

    def _check_stored(self) -> None:
        """Reads everything the run will read of the stored experiment before this driver
        writes anything, its lease included: a damaged file raises here, naming it, and leaves
        every stored byte as it was. Once the lease is held it is all read again, for good.

        Raises:
            DamagedStateError: a state file is damaged.
            UnsupportedSchemaVersionError: a state file is from a newer prefect-tune.
        """
        self.store.read_trials(self._load())

    def _enqueue(
        self, trial: TrialState, restart: bool = False, after_s: float | None = None
    ) -> None:
        """Queues a trial this driver holds whole; ``after_s`` keeps it out of the queue (in
        `_delayed`) for that many seconds."""
        trial.status = TrialStatus.PENDING
        self._live[trial.index] = trial
        self._packed.pop(trial.index, None)
        if after_s is None:
            self._queue.append((trial.index, restart))
        else:
            self._delayed[trial.index] = time.monotonic() + after_s
        self._dirty = True

    def _enqueue_stored(self, trial: PackedSummary, restart: bool = False) -> None:
        """Queues a trial known by its summary; its whole state is read when it starts."""
        self._packed[trial.index] = trial.with_status(TrialStatus.PENDING)
        self._queue.append((trial.index, restart))
        self._dirty = True

    def _whole(self, index: int) -> TrialState:
        """The whole state of a queued trial: the one this driver holds, else the stored one."""
        live = self._live.get(index)
        if live is not None:
            return live
        packed = self._packed[index]
        return packed.whole(self.store.read_trial(packed.dir_name))

    def _finish(self, trial: TrialState) -> None:
        """Keeps only the summary of a trial that will not run again in this driver."""
        if self._progress is not None and trial.status.is_finished():
            self._progress.finished(trial)
        self._live.pop(trial.index, None)
        self._packed[trial.index] = PackedSummary.of(trial)

    def _row(self, index: int) -> PackedSummary:
        live = self._live.get(index)
        return PackedSummary.of(live) if live is not None else self._packed[index]

    def _rows(self) -> list[PackedSummary]:
        return [self._row(i) for i in sorted(self._packed.keys() | self._live.keys())]

    def _has_more_trials(self) -> bool:
        # The stored definition decides: a restored generator may be a stand-in.
        total = self.definition.total_trials
        assert self.state is not None
        if self.search is not None and self.search.finished:
            return self.state.next_trial_index < self.search.next_index
        return total is None or self.state.next_trial_index < total

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> list[PackedSummary]:
        """Runs until every trial is finished (or the budget or fail-fast ends the experiment).

        Returns:
            Every trial of the experiment, in index order, as the summaries the snapshot
            records (``ExperimentStore.read_trial`` reads a trial's whole state).

        Raises:
            TrialError: a trial errored and ``FailureConfig(fail_fast="raise")``.
            DamagedStateError: a state file is damaged (nothing was written).
        """
        if self.check_stored:
            self._check_stored()
        previous = self.lease.acquire()
        try:
            # Trials the old driver left running see the new lease at their next fence check;
            # give them that long to stop before their trials start again (the cluster starts
            # meanwhile).
            resume_at = time.monotonic()
            if previous is not None:
                self._taken_over(previous)
                resume_at += self.fence_interval_s + 0.5
            if self.on_acquired is not None:
                try:
                    self.on_acquired()
                except Exception as exc:  # bookkeeping only: never block the run
                    logger.warning("Could not tidy up the experiment's old drivers: %s", exc)
            self.executor.start()
            try:
                self.executor.check_storage(self.store.storage)
                time.sleep(max(0.0, resume_at - time.monotonic()))
                # Not earlier: the trials of a driver taken over have stopped writing by now,
                # so none of their files outlive an overwrite.
                if self.prepare is not None:
                    self.definition, self.generator = self.prepare()
                self._open_channel()
                return self._run()
            finally:
                if self._channel is not None:
                    self._channel.close()
                    self._channel = None
                self.executor.close()
        finally:
            self.lease.release()

    def _taken_over(self, previous: Lease) -> None:
        logger.warning(
            "Taking over experiment %s from %s, which stopped without releasing it.",
            self.definition.name,
            previous.describe(),
        )
        if self.on_takeover is not None:
            try:
                self.on_takeover(previous)
            except Exception as exc:  # bookkeeping only: never block the resume
                logger.warning("Could not record the takeover of %s: %s", previous.describe(), exc)

    def _run(self) -> list[PackedSummary]:
        self._load()
        if self.search is not None:
            self._tell_finished()
        if self.decisions is not None:
            self._load_decisions()
        elif self.store.storage.exists(DECISIONS_FILE):
            raise DecisionStateMismatchError(
                "The experiment was run with a scheduler or a Stopper (its decisions are "
                f"stored in {DECISIONS_FILE}); restore it with the same one "
                "(TuneConfig(scheduler=...), RunConfig(stop=...); Tuner.restore(scheduler=..., "
                "stop=...)), never without: its stopped trials would run on."
            )
        self._save(force=True)
        self._progress = ProgressTracker(
            self.definition.name,
            self.definition.total_trials,
            self.definition.metric,
            self.definition.mode,
        )
        if self.observers:
            self._progress.load(list(self._packed.values()))
        self._observe(force=True)
        start = time.monotonic()
        deadline = time.time() + self.time_budget_s if self.time_budget_s else None
        # By default one trial waits in the executor's queue behind each running one, so a
        # worker starts its next trial without waiting for the driver to hear of the last.
        limit = self.max_concurrent or QUEUED_PER_SLOT * max(1, self.executor.capacity())
        try:
            while True:
                out_of_time = (
                    self.time_budget_s is not None
                    and time.monotonic() - start >= self.time_budget_s
                )
                stopping = out_of_time or self._fail_fast_error is not None
                self._release_due_retries()
                while len(self._running) < limit and not stopping:
                    if not self._launch_next(deadline):
                        break
                if not self._running and (stopping or not self._delayed):
                    if not stopping and self._has_more_trials() and not self._queue:
                        logger.warning(
                            "%s suggests no config while no trial runs: the experiment stops "
                            "with %d trial(s); a later run asks it again.",
                            type(self.search.searcher).__name__ if self.search else "search",
                            self.state.next_trial_index if self.state else 0,
                        )
                    break
                for handle, result in self.executor.wait(timeout=self._wait_s()):
                    self._on_done(handle, result)
                self.lease.check()
                self._save()
                self._observe()
        finally:
            assert self.state is not None
            self.state.finished = (
                not self._running
                and not self._queue
                and not self._delayed
                and not self._has_more_trials()
            )
            if self._channel is not None:
                self._channel.drain()  # the last rows of the last trials, judged and stored
            self._save(force=True)
            self._observe(done=True)
        if self._fail_fast_error is not None and self.failure_config.fail_fast == "raise":
            raise self._fail_fast_error
        return self._rows()

    def _launch_next(self, deadline: float | None) -> bool:
        assert self.state is not None
        restart = False
        if self._queue:
            index, restart = self._queue.popleft()
            trial = self._whole(index)
        elif self._has_more_trials():
            index = self.state.next_trial_index
            if self.search is not None:
                answer = self.search.suggest(index, self._trial_id(index))
                if answer is None or answer == FINISHED:
                    return False  # not now (a trial's end frees a slot), or no more at all
            trial = self._new_trial(index)
            self.state.next_trial_index += 1
        else:
            return False
        self._packed.pop(trial.index, None)
        self._live[trial.index] = trial
        if self.decisions is not None:
            if self.decisions.is_stopped(trial.trial_id):
                # Stopped by a decision stored before its driver died: it never runs again.
                trial.status = TrialStatus.TERMINATED
                self.store.write_trial(trial)
                self._finish(trial)
                self._tell_complete(trial)
                self._dirty = True
                return True
            trial = self._exploit(trial)
            self._live[trial.index] = trial
            self.decisions.on_trial_add(trial.trial_id, trial.config)
        request = TrialRequest(
            experiment=self.store.storage.spec,
            experiment_name=self.definition.name,
            trial=trial,
            trial_name=self._trial_name(trial),
            trainable=self.trainable,
            metric=self.definition.metric,
            mode=self.definition.mode,
            checkpoint_config=self.checkpoint_config,
            stop=self.stop,
            deadline=deadline,
            restart=restart,
            flow_run_id=self.flow_run.flow_run_id if self.flow_run else None,
            lease_owner=self.lease.owner,
            fence_interval_s=self.fence_interval_s,
            decisions=self._trial_control(trial.trial_id),
        )
        trial.status = TrialStatus.RUNNING
        handle = self.executor.submit(request)
        self._running[handle] = trial.index
        self._dirty = True
        return True

    def _exploit(self, trial: TrialState) -> TrialState:
        """Makes the trial's pending PBT exploit, if any, before its next task run: its stored
        state then resumes from a copy of the donor's checkpoint with the explored config
        (see ``engine/_exploits.py``: copy, then commit, then tell the scheduler)."""
        assert self.decisions is not None
        exploit = self.decisions.pending_exploit(trial.trial_id)
        if exploit is None:
            return trial
        stored = self.store.read_trial(trial.dir_name)
        if stored is None:  # it never wrote a state: there is no history to replace
            self.decisions.exploit_skipped(trial.trial_id)
            return trial
        stored = stored.model_copy(
            update={
                "status": trial.status,
                "num_failures": max(stored.num_failures, trial.num_failures),
            }
        )
        made_before = already_made(stored, exploit)
        if made_before is not None:  # committed by a driver killed before it told the desk
            self.decisions.exploit_committed(trial.trial_id, float(made_before.donor_iteration))
            return stored
        made = make_exploit(
            self.store,
            stored,
            lambda: self._stored_trial(exploit.source_trial_id),
            exploit,
            self.decisions.desk.scheduler.time_attr,
            self.checkpoint_config,
        )
        if isinstance(made, str):
            warn_no_checkpoint(made)
            self.decisions.exploit_skipped(trial.trial_id)
            return stored
        if made.dropped:
            try:
                self.store.delete_checkpoints(made.trial.dir_name, made.dropped)
            except Exception as exc:  # no longer listed: the trial's next attempt removes them
                logger.warning(
                    "Could not delete dropped checkpoints of %s: %s", trial.trial_id, exc
                )
        self.decisions.exploit_committed(trial.trial_id, float(made.record.donor_iteration))
        logger.info(
            "Trial %s exploits trial %s: resumes from its checkpoint %s (iteration %d) with %s.",
            trial.trial_id,
            made.record.donor_trial_id,
            made.record.donor_checkpoint,
            made.record.donor_iteration,
            trial_summary(made.trial.config),
        )
        return made.trial

    def _stored_trial(self, trial_id: str) -> TrialState | None:
        """The stored state of the experiment's trial ``trial_id`` (None: unknown or none)."""
        prefix = f"{self.definition.experiment_id}_"
        number = trial_id[len(prefix) :] if trial_id.startswith(prefix) else ""
        if not number.isdigit() or self._trial_id(int(number)) != trial_id:
            return None
        index = int(number)
        if index not in self._live and index not in self._packed:
            return None
        return self.store.read_trial(self._row(index).unpack().dir_name)

    def _on_done(self, handle: Any, result: TrialOutcome | BaseException) -> None:
        index = self._running.pop(handle)
        self._dirty = True
        if isinstance(result, TrialOutcome):
            if result.decision is Decision.PAUSE and self._fail_fast_error is None:
                self._enqueue(result.trial)
            else:
                self._finish(result.trial)
                self._tell_complete(result.trial)
            return
        trial = self._failed_trial(index, result)
        max_failures = self.failure_config.max_failures
        if max_failures == -1 or trial.num_failures <= max_failures:
            delay = self._retry_delay(index)
            logger.warning(
                "Trial %s failed (%d of %s allowed failures); resuming it from its latest "
                "checkpoint in %.3g s: %s",
                trial.trial_id,
                trial.num_failures,
                "unlimited" if max_failures == -1 else max_failures,
                delay,
                trial.error,
            )
            self._enqueue(trial, after_s=delay)
            return
        logger.error("Trial %s errored: %s", trial.trial_id, trial.error)
        self._finish(trial)
        self._tell_complete(trial)
        if self.failure_config.fail_fast and self._fail_fast_error is None:
            self._fail_fast_error = TrialError(f"Trial {trial.trial_id} errored: {trial.error}")
            # Running trials pause at their next fence check and stay resumable.
            self.lease.request_stop_trials()

    def _retry_delay(self, index: int) -> float:
        """The wait before the next retry of trial ``index``, counting its retries so far."""
        retries = self._retries[index] = self._retries.get(index, 0) + 1
        return min(self.retry_delay_max_s, self.retry_delay_s * 2.0 ** min(retries - 1, 32))

    def _release_due_retries(self) -> None:
        """Queues the failed trials whose wait is over."""
        now = time.monotonic()
        for index, due in list(self._delayed.items()):
            if due <= now:
                del self._delayed[index]
                self._queue.append((index, False))

    def _wait_s(self) -> float:
        """How long to wait for trials to end: until the next retry is due, at most 1 s."""
        if not self._delayed:
            return 1.0
        return min(1.0, max(0.0, min(self._delayed.values()) - time.monotonic()))

    def _failed_trial(self, index: int, error: BaseException) -> TrialState:
        """The stored state of a trial whose task run raised, completed if its worker died."""
        known = self._live[index]
        try:
            stored = self.store.read_trial(known.dir_name)
        except Exception:  # storage trouble: fall back to what the driver knows
            stored = None
        if stored is not None and stored.status is TrialStatus.ERROR:
            return stored
        # The worker died or could not write: count the failure here.
        trial = (stored or known).model_copy(deep=True)
        trial.status = TrialStatus.ERROR
        trial.num_failures = max(trial.num_failures, known.num_failures) + 1
        trial.error = f"{type(error).__name__}: {error}"
        trial.error_type = type(error).__name__
        return trial

    def _observe(self, force: bool = False, done: bool = False) -> None:
        """Hands the observers that are due (all of them when forced or done) a snapshot."""
        if not self.observers or self._progress is None:
            return
        now = time.monotonic()
        due = [
            (i, observer)
            for i, observer in enumerate(self.observers)
            if force or done or now - self._observed.get(i, -math.inf) >= observer.interval_s
        ]
        if not due:
            return
        counts: Counter[TrialStatus] = Counter(t.status for t in self._live.values())
        counts.update(t.status for i, t in self._packed.items() if i not in self._live)
        progress = self._progress.snapshot(counts, done=done)
        for i, observer in due:
            self._observed[i] = now
            try:
                observer.on_progress(progress, self._rows)
            except Exception as exc:  # showing progress never stops the experiment
                logger.warning("Could not show the experiment's progress (%r): %s", observer, exc)

    def _save(self, force: bool = False) -> None:
        assert self.state is not None
        if not self._dirty and not force:
            return
        if self.lease.lost is not None:  # never overwrite the new driver's snapshot
            return
        now = time.monotonic()
        # Rewriting a large snapshot too often would dominate; space saves by their own cost.
        if not force and now - self._last_save < max(self.save_interval, 10 * self._save_cost):
            return
        if self.decisions is not None:
            self.decisions.save()  # first: the snapshot must not be ahead of the decisions
        if self.search is not None:
            self.search.save()
        self.store.write_state(self.state, self._rows())
        self._save_cost = time.monotonic() - now
        self._last_save = time.monotonic()
        self._dirty = False
