"""`Tuner`: Ray Tune's entry point, running the experiment as a Prefect flow on Dask."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from prefect.task_runners import TaskRunner

from prefect_tune._console import ConsoleProgress, progress_interval_s, quiet_dask
from prefect_tune._resources import trial_resources
from prefect_tune.config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from prefect_tune.engine import (
    BasicVariantGenerator,
    ExperimentObserver,
    ResumePolicy,
    TuneController,
    describe_param_space,
    is_custom_search,
    space_from_description,
)
from prefect_tune.exceptions import (
    ConfigError,
    ExperimentExistsError,
    ExperimentNotFoundError,
    SearchSpaceError,
    TrialsErroredError,
)
from prefect_tune.results import ResultGrid
from prefect_tune.state import ExperimentDefinition, ExperimentStore, FlowRunRecord, Lease
from prefect_tune.storage import StorageSpec, TuneStorage, public_url, resolve_spec
from prefect_tune.trainable import class_trainable_runner

logger = logging.getLogger("prefect_tune")

# Configs are validated up front (each is cheap to generate) up to this many trials.
_VALIDATE_UP_TO = 10_000

#: Where the default local cluster serves its Dask dashboard: this machine only, on Dask's usual
#: port (another free one when it is taken, as Dask does). ``task_runner=DaskTaskRunner(
#: cluster_kwargs={"dashboard_address": ...})`` serves it elsewhere.
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:8787"


def _qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _function_trainable(trainable: Any, run_config: Any) -> Callable[[dict[str, Any]], Any]:
    """The trainable as the function a trial runs: a Trainable subclass is wrapped."""
    checkpoints = getattr(run_config, "checkpoint_config", None) or CheckpointConfig()
    if isinstance(trainable, type):
        return class_trainable_runner(
            trainable, checkpoints.checkpoint_frequency, bool(checkpoints.checkpoint_at_end)
        )
    if checkpoints.checkpoint_frequency or checkpoints.checkpoint_at_end:
        raise ConfigError(
            "CheckpointConfig: checkpoint_frequency and checkpoint_at_end apply to class "
            "trainables (prefect_tune.Trainable); a function trainable checkpoints with "
            "report(metrics, checkpoint=Checkpoint.from_directory(...))."
        )
    return trainable


def _trainable_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "trainable"


def _stop_description(stop: Any) -> Any:
    if stop is None or isinstance(stop, dict):
        return stop
    return f"<function {_qualified_name(stop)}>"


def _rebuild_space(definition: ExperimentDefinition, store: ExperimentStore) -> dict[str, Any]:
    """The stored search space, rebuilt; an empty one if it cannot be rebuilt but every trial
    is stored (with its config), so no config is ever drawn from it."""
    try:
        return space_from_description(definition.param_space)
    except SearchSpaceError:
        if definition.total_trials is None:
            raise
        _, trials = store.load_summaries()
        if set(range(definition.total_trials)) - {t.index for t in trials}:
            raise
        return {}


def storage_root(run_config: RunConfig) -> StorageSpec:
    """The storage root (above experiment directories) a RunConfig points at."""
    return resolve_spec(run_config.storage_path, run_config.storage_options, run_config.storage)


class Tuner:
    """Tunes a trainable's hyperparameters: Ray Tune's ``Tuner`` on Prefect and Dask.

    ``fit()`` runs the experiment as a Prefect flow run named after the experiment (a subflow
    when called inside a flow); each trial is a Prefect task run on a Dask cluster.

    Args:
        trainable: ``def train_fn(config: dict) -> None`` calling ``report()``; it must be
            importable on the Dask workers (defined in a module, not in ``__main__`` of a
            notebook that workers cannot import — cloudpickle ships it otherwise); or a
            :class:`~prefect_tune.Trainable` subclass (Ray Tune's class trainable).
        param_space: The search space: a dict of constants, domains (``uniform``...) and
            ``grid_search`` lists, nested dicts allowed.
        tune_config: Metric, mode, samples, concurrency, seed.
        run_config: Name, storage, checkpoints, failures, stop conditions.
        task_runner: Where trials run: default ``DaskTaskRunner()`` (a local Dask cluster,
            its dashboard on 127.0.0.1 only); ``DaskTaskRunner(address="tcp://...")`` for an
            existing cluster.

    Raises:
        ConfigError: a bad argument (the subclass says which, such as SearchSpaceError).

    Examples:
        >>> import prefect_tune as tune
        >>> def train_fn(config):
        ...     for step in range(3):
        ...         tune.report({"loss": config["lr"] * step})
        >>> tuner = tune.Tuner(  # doctest: +SKIP
        ...     train_fn,
        ...     param_space={"lr": tune.loguniform(1e-4, 1e-1)},
        ...     tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=4),
        ...     run_config=tune.RunConfig(name="example", storage_path="/tmp/tune"),
        ... )
        >>> best = tuner.fit().get_best_result()  # doctest: +SKIP
    """

    def __init__(
        self,
        trainable: Callable[[dict[str, Any]], Any],
        *,
        param_space: dict[str, Any] | None = None,
        tune_config: TuneConfig | None = None,
        run_config: RunConfig | None = None,
        task_runner: TaskRunner[Any] | None = None,
    ):
        if not callable(trainable):
            raise ConfigError(
                f"Tuner: trainable must be a function taking a config dict, got {type(trainable).__name__}."
            )
        tune_config = tune_config if tune_config is not None else TuneConfig()
        run_config = run_config if run_config is not None else RunConfig()
        if not isinstance(tune_config, TuneConfig):
            raise ConfigError("Tuner: tune_config must be a TuneConfig.")
        if not isinstance(run_config, RunConfig):
            raise ConfigError("Tuner: run_config must be a RunConfig.")
        if task_runner is not None and not isinstance(task_runner, TaskRunner):
            raise ConfigError(
                "Tuner: task_runner must be a Prefect task runner such as DaskTaskRunner(...)."
            )
        trainable = _function_trainable(trainable, run_config)
        self.trainable = trainable
        self.param_space = dict(param_space or {})
        check_space = getattr(tune_config.scheduler, "check_param_space", None)
        if check_space is not None and (
            self.param_space or not is_custom_search(tune_config.search_alg)
        ):
            check_space(self.param_space)
        self.tune_config = tune_config
        self.run_config = run_config
        self.task_runner = task_runner
        self.name = (
            run_config.name or f"{_trainable_name(trainable)}_{dt.datetime.now():%Y-%m-%d_%H-%M-%S}"
        )
        self.generator = BasicVariantGenerator(
            self.param_space, tune_config.num_samples, tune_config.seed
        )
        total = self.generator.total_trials
        for index in range(min(total if total is not None else 1, _VALIDATE_UP_TO)):
            self.generator.config_for(index)
        # TuneConfig(search_alg=...) other than the default: it makes the configs instead.
        self.search_alg = (
            tune_config.search_alg if is_custom_search(tune_config.search_alg) else None
        )
        self._bind_search(self.generator.seed)
        self.experiment = storage_root(run_config).child(self.name)
        # "Any later run of the same experiment runs what is unfinished or errored."
        self._policy = ResumePolicy(resume_unfinished=True, resume_errored=True)
        self._restoring = False
        self._results: ResultGrid | None = None

    # -- definition ------------------------------------------------------------------------------

    def _bind_search(self, seed: int) -> None:
        """Hands the search algorithm TuneConfig's metric, mode and samples, the param_space
        and the experiment's seed (the stored one when resuming).

        Raises:
            ConfigError: it has a space of its own and a param_space is given too, or it has
                no metric and mode and TuneConfig neither.
            SearchSpaceError: the space holds what it cannot sample.
        """
        if self.search_alg is None:
            return
        tc = self.tune_config
        if not self.search_alg.set_search_properties(
            tc.metric, tc.mode, self.param_space, num_samples=tc.num_samples, seed=seed
        ):
            raise ConfigError(
                f"{type(self.search_alg).__name__} was given a search space of its own and the "
                "Tuner a param_space too: give the space in one place only."
            )

    def _total_trials(self) -> int | None:
        """How many trials the experiment has: the search algorithm's count when it knows one
        (``BasicVariantGenerator(points_to_evaluate=...)``), else ``num_samples`` times the
        grid (None for ``num_samples=-1``: until its time budget, a stopper or FINISHED)."""
        searcher = self.search_alg
        while searcher is not None and hasattr(searcher, "searcher"):
            searcher = searcher.searcher  # a ConcurrencyLimiter's
        total = getattr(searcher, "total_trials", None)
        if isinstance(total, int):
            return total
        return self.generator.total_trials

    def _tune_config_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for f in dataclasses.fields(self.tune_config):
            if f.name == "reuse_actors":
                continue  # ignored: not part of what defines the experiment
            value = getattr(self.tune_config, f.name)
            if f.name in ("search_alg", "scheduler"):
                value = None if value is None else type(value).__name__
            record[f.name] = value
        result: dict[str, Any] = json.loads(json.dumps(record, default=repr))
        return result

    def _definition(self) -> ExperimentDefinition:
        tc = self.tune_config
        return ExperimentDefinition(
            name=self.name,
            experiment_id=secrets.token_hex(3)[:5],
            trainable=_qualified_name(self.trainable),
            param_space=describe_param_space(self.param_space),
            num_samples=tc.num_samples,
            seed=self.generator.seed,
            total_trials=self._total_trials(),
            metric=tc.metric,
            mode=tc.mode,
            tune_config=self._tune_config_record(),
            checkpoint_config=asdict(self.run_config.checkpoint_config),
            failure_config=asdict(self.run_config.failure_config),
            stop=_stop_description(self.run_config.stop),
        )

    def _resumed(self, store: ExperimentStore, mode: str) -> ExperimentDefinition | None:
        """The stored definition this run resumes, or None when it starts a new experiment (in
        place of the stored one, for ``mode="overwrite"``), as ``RunConfig(resume=mode)`` says.
        Only reads.

        Raises:
            ExperimentExistsError: one is stored and ``resume="never"``.
            ExperimentNotFoundError: none is stored and ``resume="required"`` (or a restore).
            ConfigError: the stored one has another definition.
        """
        exists = store.exists()
        if exists and mode == "overwrite":
            return None
        if exists and mode == "never":
            raise ExperimentExistsError(
                f"An experiment named {self.name!r} is already stored at {store.uri} and "
                "RunConfig(resume='never') asks for a new one. Choose another name, or "
                "resume='auto' to resume it, or resume='overwrite' to replace it."
            )
        if not exists:
            if mode == "required":
                raise ExperimentNotFoundError(
                    f"No experiment is stored at {store.uri} to resume "
                    "(RunConfig(resume='required'))."
                )
            return None
        stored = store.read_definition()
        if self._restoring:
            return stored
        fresh = self._definition()
        differences = [
            field
            for field in ("param_space", "num_samples", "metric", "mode")
            if getattr(stored, field) != getattr(fresh, field)
        ]
        if self.tune_config.seed is not None and stored.seed != self.tune_config.seed:
            differences.append("seed")
        if differences:
            raise ConfigError(
                f"An experiment named {self.name!r} is already stored at {store.uri} with a "
                f"different {', '.join(differences)}. Use another RunConfig(name=...) for a new "
                "experiment, RunConfig(resume='overwrite') to replace it, or the same "
                "definition to resume it."
            )
        return stored

    def _prepare(
        self, store: ExperimentStore, mode: str
    ) -> tuple[ExperimentDefinition, BasicVariantGenerator]:
        """Writes the definition of a new experiment (deleting the stored one it replaces), or
        checks a stored one matches, as ``RunConfig(resume=mode)`` says; only the driver
        holding the experiment's lease calls it. Returns the definition and the generator to
        run.

        Raises:
            ExperimentExistsError, ExperimentNotFoundError, ConfigError: as `_resumed`.
        """
        stored = self._resumed(store, mode)
        if stored is None:
            if mode == "overwrite":
                store.clear()
            fresh = self._definition()
            store.write_definition(fresh)
            return fresh, self.generator
        if not self._restoring:
            # Resuming: keep the stored seed so trial configs continue the same sequence.
            self.generator = BasicVariantGenerator(
                self.param_space, stored.num_samples, stored.seed
            )
            self._bind_search(stored.seed)
        return stored, self.generator

    # -- restoring -------------------------------------------------------------------------------

    @classmethod
    def can_restore(
        cls,
        path: str | os.PathLike[str],
        storage_options: dict[str, Any] | None = None,
        storage: TuneStorage | None = None,
    ) -> bool:
        """Whether an experiment is stored at ``path`` (a local path or URL of its directory).

        ``path``, ``storage_options`` and ``storage`` name the directory as in :meth:`restore`.

        Raises:
            ConfigError: both ``storage_options`` and ``storage`` were given.
            StorageError: the storage cannot be reached (bad credentials, missing driver...).
        """
        spec = resolve_spec(path, storage_options, storage)
        return ExperimentStore(spec.open()).exists()

    @classmethod
    def restore(
        cls,
        path: str | os.PathLike[str],
        trainable: Callable[[dict[str, Any]], Any],
        *,
        resume_unfinished: bool = True,
        resume_errored: bool = False,
        restart_errored: bool = False,
        param_space: dict[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        storage: TuneStorage | None = None,
        task_runner: TaskRunner[Any] | None = None,
        scheduler: Any = None,
        search_alg: Any = None,
        stop: Any = None,
    ) -> Tuner:
        """A Tuner that continues the experiment stored at ``path``, with Ray Tune's flags.

        Works on any machine that can reach the storage, and on an experiment directory that
        was moved or copied: everything is read from ``path``. Finished trials never run again.

        Args:
            path: The experiment's directory: a local/NFS path or a URL (``s3://b/exp``).
            trainable: The same trainable (functions are not stored).
            scheduler: The same ``TuneConfig.scheduler`` it ran with (schedulers are code,
                not stored; their decisions are, and are checked against it:
                ``DecisionStateMismatchError`` when it differs or is missing).
            search_alg: The same ``TuneConfig.search_alg`` it ran with, built with the same
                arguments (a fresh object: its stored state is loaded into it; refused with
                ``DecisionStateMismatchError`` when it differs or is missing).
            stop: The same ``RunConfig(stop=Stopper)`` it ran with, likewise.
            resume_unfinished: Run trials that were pending, running or paused.
            resume_errored: Resume errored trials from their latest checkpoint.
            restart_errored: Run errored trials again from scratch (wins over resume_errored).
            param_space: The original search space; needed only when it used ``sample_from``
                and trials remain to be created.
            storage_options: fsspec options for ``path`` (endpoint, credentials).
            storage: A TuneStorage block: a relative ``path`` (the experiment's name) is taken
                below its ``storage_path``, an absolute path or a URL is reached with its
                credentials (see :func:`~prefect_tune.storage.resolve_spec`).
            task_runner: Where trials run (default: a local Dask cluster).

        Raises:
            ConfigError: both ``storage_options`` and ``storage`` were given.
            ExperimentNotFoundError: nothing is stored at ``path``.
            SearchSpaceError: the stored space cannot be rebuilt and no param_space was given.

        Examples:
            >>> tuner = Tuner.restore("s3://bucket/tune/exp", train_fn, resume_errored=True)  # doctest: +SKIP
            >>> results = tuner.fit()  # doctest: +SKIP
        """
        spec = resolve_spec(path, storage_options, storage)
        store = ExperimentStore(spec.open())
        definition = store.read_definition()
        space = param_space if param_space is not None else _rebuild_space(definition, store)
        tc = definition.tune_config
        tune_config = TuneConfig(
            metric=definition.metric,
            mode=definition.mode,  # type: ignore[arg-type]
            num_samples=definition.num_samples,
            max_concurrent_trials=tc.get("max_concurrent_trials"),
            seed=definition.seed,
            time_budget_s=tc.get("time_budget_s"),
            scheduler=scheduler,
            search_alg=search_alg,
        )
        run_config = RunConfig(
            name=definition.name,
            checkpoint_config=CheckpointConfig(**definition.checkpoint_config),
            failure_config=FailureConfig(**definition.failure_config),
            stop=stop
            if stop is not None
            else (definition.stop if isinstance(definition.stop, dict) else None),
        )
        if stop is None and definition.stop is not None and not isinstance(definition.stop, dict):
            logger.warning(
                "The experiment stopped trials with %s, which cannot be stored; restored trials "
                "run without it.",
                definition.stop,
            )
        tuner = cls(
            trainable,
            param_space=space,
            tune_config=tune_config,
            run_config=run_config,
            task_runner=task_runner,
        )
        tuner.experiment = spec
        tuner._restoring = True
        tuner._policy = ResumePolicy(
            resume_unfinished=resume_unfinished,
            resume_errored=resume_errored,
            restart_errored=restart_errored,
        )
        return tuner

    # -- running ---------------------------------------------------------------------------------

    def _default_task_runner(self) -> TaskRunner[Any]:
        """A ``DaskTaskRunner`` on a new local cluster (its workers report to this process's
        Prefect API: see `prefect_tune.prefect`), with its dashboard on this machine only
        (`DEFAULT_DASHBOARD_ADDRESS`): Dask's own default listens on every interface."""
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(cluster_kwargs={"dashboard_address": DEFAULT_DASHBOARD_ADDRESS})

    def fit(self) -> ResultGrid:
        """Runs the experiment (or the part of it not yet finished) and returns its results.

        Trial errors do not raise here (see ``ResultGrid.errors``; the experiment's flow run is
        FAILED and a later run resumes them), unless ``FailureConfig(fail_fast="raise")``.

        Raises:
            StorageError: the storage path cannot be reached or written.
            ConfigError: a stored experiment of the same name has another definition.
            ExperimentLockedError: another live driver is running this experiment (nothing
                stored is deleted or written then, even with ``resume="overwrite"``).
            TrialError: a trial errored and ``fail_fast="raise"``.
            ResourcesUnavailableError: no Dask worker has the resources the trials ask for
                (``with_resources``); no trial ran.
        """
        store = ExperimentStore(self.experiment.open())
        # Refused here already when it would be, but decided (and written) only under the
        # lease: another driver may write or replace the definition until then.
        mode: str = self.run_config.resume if not self._restoring else "required"
        resumed = self._resumed(store, mode)
        if resumed is not None and not self._restoring:
            self._bind_search(resumed.seed)  # as the stored search was bound, before it is read
        definition = resumed or self._definition()

        def prepare() -> tuple[ExperimentDefinition, BasicVariantGenerator]:
            nonlocal definition, mode
            definition, generator = self._prepare(store, mode)
            mode = "required"  # a Prefect retry of the flow resumes what its first run began
            return definition, generator

        task_runner = (
            self.task_runner if self.task_runner is not None else self._default_task_runner()
        )
        rc = self.run_config

        def build(
            executor: Any,
            flow_run: FlowRunRecord,
            *,
            on_takeover: Callable[[Lease], None],
            on_acquired: Callable[[], None],
            observers: Sequence[ExperimentObserver] = (),
        ) -> TuneController:
            policy = self._policy
            if flow_run.run_count > 1:  # a Prefect retry of the failed experiment flow
                policy = dataclasses.replace(policy, resume_unfinished=True, resume_errored=True)
            return TuneController(
                store=store,
                definition=definition,
                generator=self.generator,
                trainable=self.trainable,
                executor=executor,
                checkpoint_config=rc.checkpoint_config,
                failure_config=rc.failure_config,
                stop=rc.stop,
                search_alg=self.search_alg,
                scheduler=self.tune_config.scheduler,
                max_concurrent_trials=self.tune_config.max_concurrent_trials,
                time_budget_s=self.tune_config.time_budget_s,
                policy=policy,
                flow_run=flow_run,
                trainable_name=_trainable_name(self.trainable),
                lease_ttl_s=rc.lease_ttl_s,
                on_takeover=on_takeover,
                on_acquired=on_acquired,
                prepare=prepare,
                # Replaced, not read: a damaged experiment can be overwritten.
                check_stored=mode != "overwrite",
                observers=[*console, *observers],  # the flow's own: the Prefect UI
            )

        from prefect_tune.prefect import run_experiment_flow

        interval = progress_interval_s(rc.verbose)
        console = [ConsoleProgress(interval)] if interval is not None else []
        try:
            with quiet_dask(rc.verbose):
                trials = run_experiment_flow(
                    build,
                    name=definition.name,
                    storage=store.storage,
                    lease_ttl_s=rc.lease_ttl_s,
                    task_runner=task_runner,
                    retries=rc.flow_retries,
                    retry_delay_seconds=rc.flow_retry_delay_s,
                    trial_tags=(definition.name,) if rc.trial_tags is None else rc.trial_tags,
                    trial_resources=trial_resources(self.trainable),
                    parameters=self._flow_parameters(definition, store),
                    artifacts=rc.artifacts,
                )
        except TrialsErroredError:
            if rc.failure_config.fail_fast == "raise":
                raise
            self._results = ResultGrid(store, definition=definition)
            return self._results
        self._results = ResultGrid(store, trials=trials, definition=definition)
        return self._results

    def _flow_parameters(self, definition: Any, store: ExperimentStore) -> dict[str, Any]:
        """What the experiment's flow run shows as its parameters: no credentials."""
        space = json.dumps(definition.param_space, default=str, sort_keys=True)
        if len(space) > 4000:
            space = space[:4000] + "..."
        return {
            "experiment": definition.name,
            "storage_path": public_url(store.storage.url),
            "trainable": _qualified_name(self.trainable),
            "metric": definition.metric,
            "mode": definition.mode,
            "num_samples": definition.num_samples,
            "search_space": space,
        }

    def get_results(self) -> ResultGrid:
        """The results of the stored experiment (read from storage if ``fit()`` ran elsewhere)."""
        if self._results is not None:
            return self._results
        return ResultGrid(ExperimentStore(self.experiment.open()))
