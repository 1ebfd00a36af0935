"""Ray Tune's configuration objects, with the same names and meanings, validated on construction.

Each class raises :class:`~prefect_tune.exceptions.ConfigError` naming the field and what it
accepts, so a mistake shows up where the config is written, not minutes into an experiment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from prefect_tune.exceptions import ConfigError
from prefect_tune.storage import layout, refuse_block_with_options

if TYPE_CHECKING:
    from prefect_tune.storage import TuneStorage

__all__ = ["CheckpointConfig", "FailureConfig", "RunConfig", "TuneConfig"]


def _fail(cls: str, name: str, message: str) -> ConfigError:
    return ConfigError(f"{cls}({name}=...): {message}")


def _check_int(cls: str, name: str, value: Any, minimum: int, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(cls, name, f"must be an integer >= {minimum}, got {value!r}.")


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool): NaN and infinity mean nothing as seconds or
    thresholds, and an infinite timeout overflows the waits it is given to."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_mode(cls: str, name: str, value: Any) -> None:
    if value not in (None, "min", "max"):
        raise _fail(cls, name, f"must be 'min' or 'max', got {value!r}.")


@dataclass(frozen=True)
class TuneConfig:
    """How to search: the metric to optimise and how many trials to run.

    Args:
        metric: The reported metric that ranks trials and defaults ``get_best_result``.
        mode: ``"min"`` or ``"max"``; required with ``metric``.
        num_samples: Samples of the search space (each grid combination this many times);
            ``-1`` samples until ``time_budget_s`` or a stop condition ends the experiment.
        max_concurrent_trials: Trials running at once. Default: as many as the Dask cluster
            has threads, plus as many again waiting in Dask's queue (a worker then starts its
            next trial without waiting for the driver).
        seed: Makes the sampled trial configs reproducible.
        time_budget_s: Wall-clock budget of the experiment; trials still running then stop at
            their next ``report()``.
        search_alg: A search algorithm from ``prefect_tune.search``: ``BasicVariantGenerator``
            (the default, grid and random search), ``ConcurrencyLimiter``,
            ``prefect_tune.search.optuna.OptunaSearch`` or a ``Searcher`` subclass. It
            suggests ``num_samples`` trials (fewer if it says FINISHED), each stored before
            its trial starts; its state is stored with the experiment.
        scheduler: A trial scheduler from ``prefect_tune.schedulers``: ``FIFOScheduler``
            (the default), ``ASHAScheduler``, ``MedianStoppingRule``,
            ``PopulationBasedTraining`` or a ``TrialScheduler`` subclass.
        reuse_actors: Accepted for Ray Tune's examples and ignored: there are no actors to
            reuse (each task run of a trial calls its trainable afresh, a PBT exploit too).

    Examples:
        >>> TuneConfig(metric="loss", mode="min", num_samples=8, max_concurrent_trials=2, seed=0)
        TuneConfig(metric='loss', mode='min', num_samples=8, max_concurrent_trials=2, seed=0, time_budget_s=None)
    """

    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    seed: int | None = None
    time_budget_s: float | None = None
    search_alg: Any = field(default=None, repr=False)
    scheduler: Any = field(default=None, repr=False)
    reuse_actors: bool | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_decision_cores(self.search_alg, self.scheduler)
        if self.metric is not None and (not isinstance(self.metric, str) or not self.metric):
            raise _fail(name, "metric", f"must be a non-empty string, got {self.metric!r}.")
        _check_mode(name, "mode", self.mode)
        if (self.metric is None) != (self.mode is None):
            raise ConfigError(
                "TuneConfig: metric and mode go together: give both (mode='min' or 'max') or "
                "neither."
            )
        if self.num_samples != -1:
            _check_int(name, "num_samples", self.num_samples, 1, allow_none=False)
        _check_int(name, "max_concurrent_trials", self.max_concurrent_trials, 1)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise _fail(name, "seed", f"must be an integer, got {self.seed!r}.")
        if self.time_budget_s is not None and (
            not _is_number(self.time_budget_s) or self.time_budget_s <= 0
        ):
            raise _fail(
                name,
                "time_budget_s",
                f"must be a positive, finite number of seconds, got {self.time_budget_s!r}.",
            )


@dataclass(frozen=True)
class CheckpointConfig:
    """Which checkpoints to keep.

    Args:
        num_to_keep: Keep at most this many committed checkpoints per trial (all when None).
            With ``checkpoint_score_attribute`` the best ones by score are kept; the latest
            checkpoint is always kept too, because a resume needs it.
        checkpoint_score_attribute: Reported metric that ranks checkpoints.
        checkpoint_score_order: ``"max"`` (default) or ``"min"``.
        checkpoint_frequency: Class trainables (:class:`~prefect_tune.Trainable`) only, as in
            Ray Tune: checkpoint after every this many iterations. Function trainables
            checkpoint by passing ``checkpoint=`` to ``report()``; with them it must stay 0.
        checkpoint_at_end: Class trainables only: checkpoint after the result with
            ``done=True``; with function trainables it must stay None or False.
    """

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: Literal["max", "min"] = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_int(name, "num_to_keep", self.num_to_keep, 1)
        if self.checkpoint_score_attribute is not None and (
            not isinstance(self.checkpoint_score_attribute, str)
            or not self.checkpoint_score_attribute
        ):
            raise _fail(name, "checkpoint_score_attribute", "must be a non-empty metric name.")
        if self.checkpoint_score_order not in ("max", "min"):
            raise _fail(
                name,
                "checkpoint_score_order",
                f"must be 'max' or 'min', got {self.checkpoint_score_order!r}.",
            )
        _check_int(name, "checkpoint_frequency", self.checkpoint_frequency, 0, allow_none=False)
        if self.checkpoint_at_end is not None and not isinstance(self.checkpoint_at_end, bool):
            raise _fail(name, "checkpoint_at_end", "must be True, False or None.")


@dataclass(frozen=True)
class FailureConfig:
    """What to do when a trial fails.

    Args:
        max_failures: Times a failed trial is run again from its latest checkpoint before it
            is ERROR; ``-1`` retries forever.
        fail_fast: Stop the experiment at the first errored trial (``"raise"``: and raise its
            error from ``fit()``).
    """

    max_failures: int = 0
    fail_fast: bool | Literal["raise"] = False

    def __post_init__(self) -> None:
        if self.max_failures != -1:
            _check_int("FailureConfig", "max_failures", self.max_failures, 0, allow_none=False)
        if self.fail_fast not in (True, False, "raise"):
            raise _fail(
                "FailureConfig",
                "fail_fast",
                f"must be True, False or 'raise', got {self.fail_fast!r}.",
            )


Stop = Mapping[str, float] | Callable[[str, dict[str, Any]], bool]


@dataclass(frozen=True)
class RunConfig:
    """Where and how the experiment runs.

    Args:
        name: The experiment's name, its directory under the storage path and its flow run's
            name. Generated when None.
        storage_path: A local or NFS path, or an fsspec URL (``s3://``, ``gs://``, ``memory://``).
            Default ``~/prefect_tune_results`` (``prefect_tune.storage.DEFAULT_STORAGE_PATH``).
        storage: A :class:`~prefect_tune.TuneStorage` block instead of ``storage_path``.
        storage_options: fsspec options for ``storage_path`` (endpoint, credentials).
        checkpoint_config: Which checkpoints to keep.
        failure_config: What to do when trials fail.
        stop: ``{"metric": threshold}`` (a trial stops once a reported value reaches its
            threshold) or a function ``(trial_id, result) -> bool``.
        resume: What ``fit()`` does when an experiment of this name is already stored:
            ``"auto"`` resumes it (its unfinished and errored trials run; finished ones never
            run again) and starts a new one otherwise; ``"required"`` resumes and fails when
            none is stored; ``"never"`` fails when one is stored; ``"overwrite"`` deletes the
            stored experiment and starts afresh.
        flow_retries: Prefect retries of the experiment flow run when it fails (trials ended
            in ERROR, storage outage); each retry resumes unfinished and errored trials.
        flow_retry_delay_s: Seconds between those retries.
        lease_ttl_s: Seconds after which a driver that stopped renewing its lease (killed,
            hung, cut off) may be taken over by another run of the experiment.
        trial_tags: Prefect tags of the trials' task runs; None (the default) tags them with
            the experiment's name, so that the UI filters them and a tag concurrency limit
            (``prefect gcl create tag:<name> --limit 2``) caps how many run at once. Prefect
            asks its API for a concurrency slot for every task run that has a tag; ``()``
            leaves the tags out and saves that call (a few ms per trial, and stalls while a
            SQLite-backed Prefect server is busy).
        verbose: What ``fit()`` shows on the console, as Ray Tune's levels: ``0`` (or
            ``False``) silent, ``1`` (or ``True``) a progress line every 30 s, ``2`` (default) every 5 s, ``3`` also Dask's
            INFO logs. Below 3 Dask logs at WARNING (ERROR at 0), unless
            ``DASK_LOGGING__DISTRIBUTED`` is set. Prefect's own lines follow its settings.
        artifacts: Whether the experiment's flow run gets its progress, leaderboard and summary
            artifacts (published from the driver, off the trials' path).

    Examples:
        >>> RunConfig(name="exp", storage_path="s3://bucket/tune", stop={"training_iteration": 10})
        ... # doctest: +ELLIPSIS
        RunConfig(name='exp', storage_path='s3://bucket/tune', ...)
    """

    name: str | None = None
    storage_path: str | os.PathLike[str] | None = None
    storage: TuneStorage | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    failure_config: FailureConfig = field(default_factory=FailureConfig)
    stop: Stop | None = None
    resume: Literal["auto", "required", "never", "overwrite"] = "auto"
    flow_retries: int = 0
    flow_retry_delay_s: float = 0.0
    lease_ttl_s: float = 60.0
    trial_tags: tuple[str, ...] | None = None
    verbose: int = 2
    artifacts: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.verbose, bool):  # Ray Tune's examples pass verbose=False
            object.__setattr__(self, "verbose", int(self.verbose))
        if type(self.verbose) is not int or self.verbose not in (0, 1, 2, 3):
            raise _fail("RunConfig", "verbose", f"must be 0, 1, 2 or 3, got {self.verbose!r}.")
        if self.trial_tags is not None:
            if isinstance(self.trial_tags, str) or not all(
                isinstance(tag, str) and tag for tag in self.trial_tags
            ):
                raise _fail(
                    "RunConfig",
                    "trial_tags",
                    f"must be a list of non-empty strings, got {self.trial_tags!r}.",
                )
            object.__setattr__(self, "trial_tags", tuple(self.trial_tags))
        if self.resume not in ("auto", "required", "never", "overwrite"):
            raise _fail(
                "RunConfig",
                "resume",
                f"must be 'auto', 'required', 'never' or 'overwrite', got {self.resume!r}.",
            )
        if not isinstance(self.artifacts, bool):
            raise _fail("RunConfig", "artifacts", f"must be True or False, got {self.artifacts!r}.")
        _check_int("RunConfig", "flow_retries", self.flow_retries, 0, allow_none=False)
        for name in ("flow_retry_delay_s", "lease_ttl_s"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise _fail(
                    "RunConfig", name, f"must be a finite number of seconds >= 0, got {value!r}."
                )
        if self.lease_ttl_s < 1:
            raise _fail(
                "RunConfig", "lease_ttl_s", f"must be at least 1 second, got {self.lease_ttl_s!r}."
            )
        if self.name is not None:
            if not isinstance(self.name, str) or not self.name.strip():
                raise _fail("RunConfig", "name", "must be a non-empty string.")
            if "/" in self.name or "\\" in self.name or self.name in (".", ".."):
                raise _fail(
                    "RunConfig",
                    "name",
                    f"is a directory name and cannot contain '/': {self.name!r}.",
                )
            # A name, never a pattern: fsspec reads these characters as a glob (an S3 delete of
            # "exp*" deletes "exp-important"), and a file system or a terminal the others.
            glob = "".join(sorted(set(self.name) & layout.GLOB_CHARACTERS))
            problem = f"holds {glob!r}" if glob else layout.path_problem(self.name, single=True)
            if problem is not None:
                raise _fail(
                    "RunConfig",
                    "name",
                    f"is a directory name, not a pattern or a path, and {problem}: {self.name!r}.",
                )
        if self.storage is not None and self.storage_path is not None:
            raise ConfigError(
                "RunConfig: give either storage (a TuneStorage block) or storage_path, not both: "
                "the block names the storage root."
            )
        refuse_block_with_options(self.storage, self.storage_options)
        if self.storage is not None and not hasattr(self.storage, "spec"):
            raise _fail(
                "RunConfig",
                "storage",
                f"must be a TuneStorage block, got {type(self.storage).__name__}.",
            )
        if self.storage_path is not None and not isinstance(self.storage_path, (str, os.PathLike)):
            raise _fail(
                "RunConfig",
                "storage_path",
                f"must be a path or URL string, got {type(self.storage_path).__name__}.",
            )
        if not isinstance(self.checkpoint_config, CheckpointConfig):
            raise _fail("RunConfig", "checkpoint_config", "must be a CheckpointConfig.")
        if not isinstance(self.failure_config, FailureConfig):
            raise _fail("RunConfig", "failure_config", "must be a FailureConfig.")
        from prefect_tune.stopper import Stopper  # the stoppers import the engine, and it us

        if isinstance(self.stop, Stopper):
            return  # judged by the driver's decision desk
        if self.stop is not None and not callable(self.stop) and not _is_stop_dict(self.stop):
            raise _fail(
                "RunConfig",
                "stop",
                "must be a dict of metric name -> finite number, or a function "
                f"(trial_id, result) -> bool; got {self.stop!r}.",
            )


def _check_decision_cores(search_alg: Any, scheduler: Any) -> None:
    # Imported here: the schedulers and searchers import the engine, which imports this module.
    from prefect_tune.schedulers import TrialScheduler
    from prefect_tune.search import Searcher

    if scheduler is not None and not isinstance(scheduler, TrialScheduler):
        raise _fail(
            "TuneConfig",
            "scheduler",
            f"must be a scheduler from prefect_tune.schedulers, got {type(scheduler).__name__}.",
        )
    if search_alg is not None and not isinstance(search_alg, Searcher):
        raise _fail(
            "TuneConfig",
            "search_alg",
            f"must be a search algorithm from prefect_tune.search (BasicVariantGenerator, "
            f"ConcurrencyLimiter, optuna.OptunaSearch or a Searcher subclass), got "
            f"{type(search_alg).__name__}.",
        )


def _is_stop_dict(stop: Any) -> bool:
    # A bool threshold stops at a reported True (Ray Tune's stop={"done": True}).
    return isinstance(stop, Mapping) and all(
        isinstance(k, str) and (_is_number(v) or isinstance(v, bool)) for k, v in stop.items()
    )
