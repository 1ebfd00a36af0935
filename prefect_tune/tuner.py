"""`Tuner`: Ray Tune's entry point, running the experiment as a Prefect flow on Dask."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from prefect.task_runners import TaskRunner

from prefect_tune.config import RunConfig, TuneConfig
from prefect_tune.engine import (
    BasicVariantGenerator,
    ResumePolicy,
    TuneController,
    describe_param_space,
)
from prefect_tune.exceptions import ConfigError
from prefect_tune.results import ResultGrid
from prefect_tune.state import ExperimentDefinition, ExperimentStore, FlowRunRecord
from prefect_tune.storage import StorageSpec

DEFAULT_STORAGE_PATH = "~/prefect_tune_results"

# Configs are validated up front (each is cheap to generate) up to this many trials.
_VALIDATE_UP_TO = 10_000


def _qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _trainable_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "trainable"


def _stop_description(stop: Any) -> Any:
    if stop is None or isinstance(stop, dict):
        return stop
    return f"<function {_qualified_name(stop)}>"


def storage_root(run_config: RunConfig) -> StorageSpec:
    """The storage root (above experiment directories) a RunConfig points at."""
    if run_config.storage is not None:
        return run_config.storage.spec()
    path = os.fspath(run_config.storage_path) if run_config.storage_path is not None else DEFAULT_STORAGE_PATH
    return StorageSpec(path, dict(run_config.storage_options or {}))


class Tuner:
    """Tunes a trainable's hyperparameters: Ray Tune's ``Tuner`` on Prefect and Dask.

    ``fit()`` runs the experiment as a Prefect flow run named after the experiment (a subflow
    when called inside a flow); each trial is a Prefect task run on a Dask cluster.

    Args:
        trainable: ``def train_fn(config: dict) -> None`` calling ``report()``; it must be
            importable on the Dask workers (defined in a module, not in ``__main__`` of a
            notebook that workers cannot import — cloudpickle ships it otherwise).
        param_space: The search space: a dict of constants, domains (``uniform``...) and
            ``grid_search`` lists, nested dicts allowed.
        tune_config: Metric, mode, samples, concurrency, seed.
        run_config: Name, storage, checkpoints, failures, stop conditions.
        task_runner: Where trials run: default ``DaskTaskRunner()`` (a local Dask cluster);
            ``DaskTaskRunner(address="tcp://...")`` for an existing cluster.

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
            raise ConfigError(f"Tuner: trainable must be a function taking a config dict, got {type(trainable).__name__}.")
        if isinstance(trainable, type):
            raise ConfigError(
                "Tuner: class trainables are not supported; pass a function "
                "`def train_fn(config): ... report(...)`."
            )
        tune_config = tune_config if tune_config is not None else TuneConfig()
        run_config = run_config if run_config is not None else RunConfig()
        if not isinstance(tune_config, TuneConfig):
            raise ConfigError("Tuner: tune_config must be a TuneConfig.")
        if not isinstance(run_config, RunConfig):
            raise ConfigError("Tuner: run_config must be a RunConfig.")
        if task_runner is not None and not isinstance(task_runner, TaskRunner):
            raise ConfigError("Tuner: task_runner must be a Prefect task runner such as DaskTaskRunner(...).")
        self.trainable = trainable
        self.param_space = dict(param_space or {})
        self.tune_config = tune_config
        self.run_config = run_config
        self.task_runner = task_runner
        self.name = run_config.name or f"{_trainable_name(trainable)}_{dt.datetime.now():%Y-%m-%d_%H-%M-%S}"
        self.generator = BasicVariantGenerator(self.param_space, tune_config.num_samples, tune_config.seed)
        total = self.generator.total_trials
        for index in range(min(total if total is not None else 1, _VALIDATE_UP_TO)):
            self.generator.config_for(index)
        self.experiment = storage_root(run_config).child(self.name)
        self._policy = ResumePolicy()
        self._results: ResultGrid | None = None

    # -- definition ------------------------------------------------------------------------------

    def _definition(self) -> ExperimentDefinition:
        tc = self.tune_config
        return ExperimentDefinition(
            name=self.name,
            experiment_id=secrets.token_hex(3)[:5],
            trainable=_qualified_name(self.trainable),
            param_space=describe_param_space(self.param_space),
            num_samples=tc.num_samples,
            seed=self.generator.seed,
            total_trials=self.generator.total_trials,
            metric=tc.metric,
            mode=tc.mode,
            tune_config=json.loads(json.dumps(asdict(tc), default=repr)),
            checkpoint_config=asdict(self.run_config.checkpoint_config),
            failure_config=asdict(self.run_config.failure_config),
            stop=_stop_description(self.run_config.stop),
        )

    def _prepare(self, store: ExperimentStore) -> ExperimentDefinition:
        """Writes the definition of a new experiment, or checks a stored one matches."""
        fresh = self._definition()
        if not store.exists():
            store.write_definition(fresh)
            return fresh
        stored = store.read_definition()
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
                "experiment, or the same definition to resume it."
            )
        # Resuming: keep the stored seed so trial configs continue the same sequence.
        self.generator = BasicVariantGenerator(self.param_space, stored.num_samples, stored.seed)
        return stored

    # -- running ---------------------------------------------------------------------------------

    def _default_task_runner(self) -> TaskRunner[Any]:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner()

    def fit(self) -> ResultGrid:
        """Runs the experiment (or the part of it not yet finished) and returns its results.

        Trial errors do not raise here (see ``ResultGrid.errors``), unless
        ``FailureConfig(fail_fast="raise")``.

        Raises:
            StorageError: the storage path cannot be reached or written.
            ConfigError: a stored experiment of the same name has another definition.
        """
        store = ExperimentStore(self.experiment.open())
        definition = self._prepare(store)
        task_runner = self.task_runner if self.task_runner is not None else self._default_task_runner()

        def build(executor: Any, flow_run: FlowRunRecord) -> TuneController:
            return TuneController(
                store=store,
                definition=definition,
                generator=self.generator,
                trainable=self.trainable,
                executor=executor,
                checkpoint_config=self.run_config.checkpoint_config,
                failure_config=self.run_config.failure_config,
                stop=self.run_config.stop,
                max_concurrent_trials=self.tune_config.max_concurrent_trials,
                time_budget_s=self.tune_config.time_budget_s,
                policy=self._policy,
                flow_run=flow_run,
                trainable_name=_trainable_name(self.trainable),
            )

        from prefect_tune.prefect import run_experiment_flow

        trials = run_experiment_flow(build, name=self.name, task_runner=task_runner)
        self._results = ResultGrid(store, trials=trials, definition=definition)
        return self._results

    def get_results(self) -> ResultGrid:
        """The results of the stored experiment (read from storage if ``fit()`` ran elsewhere)."""
        if self._results is not None:
            return self._results
        return ResultGrid(ExperimentStore(self.experiment.open()))
