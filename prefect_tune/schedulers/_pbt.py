"""Population based training, asynchronous, as Ray Tune's ``PopulationBasedTraining`` runs it.

Every ``perturbation_interval`` units of ``time_attr``, a trial is ranked among the trials that
have a score. In the top ``quantile_fraction`` its latest checkpoint is marked as one others
may clone; in the bottom one it *exploits*: it is paused, and resumes from the checkpoint of a
top trial (drawn at random) with that trial's config *explored*: each mutated hyperparameter is
resampled with ``resample_probability``, otherwise a number is multiplied by one of
``perturbation_factors`` and a list value moves to a neighbour.

An exploit is a record (:class:`Exploit`) kept in the scheduler's state until the driver has
committed it to the trial's stored state (:meth:`PopulationBasedTraining.exploit_committed`):
after a crash, committed exploits are not redone and uncommitted ones are redone once, the
same, because every random draw is seeded by the seed, the trial and the time alone.
"""

from __future__ import annotations

import copy
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prefect_tune.engine._checks import fail, fraction, name, number, positive_number
from prefect_tune.engine._control import Decision, DecisionPoints
from prefect_tune.engine._decision_state import derived_rng, json_copy, result_number
from prefect_tune.schedulers._base import TrialScheduler
from prefect_tune.space import Domain

__all__ = ["Exploit", "PopulationBasedTraining", "explore"]

Mutations = Mapping[str, Any]


@dataclass(frozen=True)
class Exploit:
    """A trial's move onto another trial's checkpoint with a new config.

    Attributes:
        trial_id: The trial that exploits (a bottom one).
        source_trial_id: The trial whose checkpoint it resumes from (a top one).
        source_time: ``time_attr`` of the source's result whose checkpoint is cloned.
        time: ``time_attr`` of the exploiting trial's result that triggered it.
        config: The explored config the trial resumes with.
        operations: What exploring did to each mutated key (``"* 1.2"``, ``"resample"``...).
    """

    trial_id: str
    source_trial_id: str
    source_time: float
    time: float
    config: dict[str, Any]
    operations: dict[str, Any]


class PopulationBasedTraining(TrialScheduler):
    """Replaces the worst trials by explored copies of the best, checkpoint and all.

    Args:
        time_attr: The result that measures progress; must grow with each report.
        metric: The result to optimise; TuneConfig's when None.
        mode: ``"min"`` or ``"max"``; TuneConfig's when None.
        perturbation_interval: A trial is ranked once per this many units of ``time_attr``.
        burn_in_period: No trial is ranked before this many units.
        hyperparam_mutations: Key -> a list of values, a ``prefect_tune.space`` domain, a
            function of no argument, or a nested dict of these.
        quantile_fraction: Share of the ranked trials in the top and in the bottom; at most 0.5.
        resample_probability: Chance that a mutated value is drawn afresh rather than perturbed.
        perturbation_factors: Factors a number is multiplied by, one drawn per perturbation.
        custom_explore_fn: Called with the explored config; returns the config to use.
        synch: Ray Tune's synchronous variant; only ``False`` (asynchronous) is supported.
        seed: Seed of every random draw; chosen at random (and stored) when None.

    Raises:
        ConfigError: An argument is out of range; the message names it.

    Examples:
        >>> pbt = PopulationBasedTraining(metric="acc", mode="max", time_attr="training_iteration",
        ...     perturbation_interval=2, hyperparam_mutations={"lr": [0.001, 0.01, 0.1]}, seed=0)
        >>> pbt.on_trial_add("a", {"lr": 0.01}); pbt.on_trial_add("b", {"lr": 0.01})
        >>> for trial, t, acc in [("a", 2, 0.9), ("b", 2, 0.1), ("a", 4, 0.9), ("b", 4, 0.2)]:
        ...     decision = pbt.on_trial_result(trial, {"training_iteration": t, "acc": acc})
        >>> decision, pbt.pending_exploit("b").source_trial_id
        (<Decision.PAUSE: 'PAUSE'>, 'a')
    """

    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        burn_in_period: float = 0.0,
        hyperparam_mutations: Mutations | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: Sequence[float] = (1.2, 0.8),
        custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        synch: bool = False,
        seed: int | None = None,
    ) -> None:
        cls = type(self).__name__
        super().__init__(metric, mode)
        self._time_attr = name(cls, "time_attr", time_attr, allow_none=False) or ""
        self._interval = positive_number(cls, "perturbation_interval", perturbation_interval)
        self._burn_in = number(cls, "burn_in_period", burn_in_period, 0)
        mutations = dict(hyperparam_mutations or {})
        if not mutations and custom_explore_fn is None:
            raise fail(
                cls,
                "hyperparam_mutations",
                "give hyperparam_mutations or custom_explore_fn: without either, exploring "
                "would not change any config.",
            )
        _check_mutations(cls, mutations, "hyperparam_mutations")
        self._mutations = mutations
        self._quantile = fraction(cls, "quantile_fraction", quantile_fraction, 0.5)
        self._resample = fraction(cls, "resample_probability", resample_probability)
        if (
            isinstance(perturbation_factors, (str, bytes))
            or not isinstance(perturbation_factors, Sequence)
            or not perturbation_factors
        ):
            raise fail(
                cls,
                "perturbation_factors",
                f"must be a non-empty list of numbers, got {perturbation_factors!r}.",
            )
        self._factors = tuple(
            positive_number(cls, "perturbation_factors", f) for f in perturbation_factors
        )
        if custom_explore_fn is not None and not callable(custom_explore_fn):
            raise fail(cls, "custom_explore_fn", f"must be a function, got {custom_explore_fn!r}.")
        self._explore_fn = custom_explore_fn
        if synch is not False:
            raise fail(
                cls,
                "synch",
                "only synch=False (asynchronous PBT) is supported; synchronous rounds are not.",
            )
        if seed is None:
            seed = secrets.randbits(32)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise fail(cls, "seed", f"must be an integer or None, got {seed!r}.")
        self._seed = int(seed)
        # trial id -> {"config", "score", "time", "last_perturbation", "checkpoint_time", "done"}
        self._trials: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, Exploit] = {}
        self._lineage: dict[str, list[dict[str, Any]]] = {}

    #: The driver tells it of trials that ended: they leave the population.
    hears_trial_ends = True

    @property
    def seed(self) -> int:
        """The seed of every random draw, stored with the scheduler's state."""
        return self._seed

    @property
    def time_attr(self) -> str:
        """The result that measures progress."""
        return self._time_attr

    @property
    def hyperparam_mutations(self) -> dict[str, Any]:
        """The mutations as given (key -> values, domain, function or nested dict)."""
        return dict(self._mutations)

    def check_param_space(self, param_space: Mapping[str, Any]) -> None:
        """Refuses mutations of keys the trials' configs do not have.

        Raises:
            ConfigError: A key of ``hyperparam_mutations`` (or of a nested dict of it) is not
                in ``param_space``; the message names it.
        """
        _check_in_space(type(self).__name__, self._mutations, param_space, "")

    def decision_points(self, trial_id: str) -> DecisionPoints:
        """Every result from the first that can be ranked on (``perturbation_interval`` and
        ``burn_in_period`` in): a ranking changes the population, and the trial must not run
        past an exploit a crash could lose."""
        return DecisionPoints(self._time_attr, every_from=max(self._burn_in, self._interval))

    def on_trial_add(self, trial_id: str, config: Mapping[str, Any]) -> None:
        self._require_metric()
        self._trials.setdefault(
            trial_id,
            {
                "config": json_copy(dict(config)),
                "score": None,
                "time": None,
                "last_perturbation": 0.0,
                "checkpoint_time": None,
                "done": False,
            },
        )

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> Decision:
        metric, sign = self._require_metric()
        if trial_id in self._pending:
            return Decision.PAUSE  # its exploit is not committed yet: ask again, same answer
        time, value = result_number(result, self._time_attr), result_number(result, metric)
        if trial_id not in self._trials or time is None or value is None:
            return Decision.CONTINUE
        state = self._trials[trial_id]
        if time < self._burn_in or time - state["last_perturbation"] < self._interval:
            return Decision.CONTINUE
        state["score"], state["time"] = sign * value, time
        state["last_perturbation"] = time
        lower, upper = self._quantiles()
        if trial_id in upper:
            state["checkpoint_time"] = time  # its checkpoint at this result may be cloned
        elif trial_id in lower:
            sources = [t for t in upper if self._trials[t]["checkpoint_time"] is not None]
            if sources:
                rng = derived_rng(self._seed, "exploit", trial_id, time)
                source = sources[rng.randrange(len(sources))]
                config, operations = explore(
                    self._trials[source]["config"],
                    self._mutations,
                    self._resample,
                    self._factors,
                    self._explore_fn,
                    rng,
                )
                self._pending[trial_id] = Exploit(
                    trial_id=trial_id,
                    source_trial_id=source,
                    source_time=float(self._trials[source]["checkpoint_time"]),
                    time=time,
                    config=json_copy(config),
                    operations=json_copy(operations),
                )
                return Decision.PAUSE
        return Decision.PAUSE if self.waiting_trials > 0 else Decision.CONTINUE

    def pending_exploit(self, trial_id: str) -> Exploit | None:
        """The exploit decided for ``trial_id`` and not yet committed, if any."""
        return self._pending.get(trial_id)

    def exploit_committed(self, trial_id: str) -> Exploit:
        """The driver stored the trial's exploit: the trial now has the source's state.

        Raises:
            KeyError: No exploit is pending for ``trial_id``.
        """
        exploit = self._pending.pop(trial_id)
        state, source = self._trials[trial_id], self._trials[exploit.source_trial_id]
        state["config"] = copy.deepcopy(exploit.config)
        state["score"] = source["score"]
        # As Ray Tune: the clone also takes the source's clock, so it is not ranked at once.
        state["last_perturbation"] = source["last_perturbation"]
        state["checkpoint_time"] = None
        self._lineage.setdefault(trial_id, []).append(asdict(exploit))
        return exploit

    def exploit_skipped(self, trial_id: str) -> Exploit | None:
        """The driver could not make the trial's exploit (its donor has no checkpoint left, or
        the trial ended first): the trial keeps its own state and config. Returns the exploit
        dropped, if one was pending."""
        return self._pending.pop(trial_id, None)

    def lineage(self, trial_id: str) -> list[dict[str, Any]]:
        """The committed exploits of ``trial_id``, oldest first."""
        return copy.deepcopy(self._lineage.get(trial_id, []))

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None) -> None:
        if trial_id in self._trials:
            self._trials[trial_id]["done"] = True
        self._pending.pop(trial_id, None)  # an ended trial resumes no more: nothing to exploit

    on_trial_remove = on_trial_error = on_trial_complete

    def _quantiles(self) -> tuple[list[str], list[str]]:
        ranked = sorted(
            (t for t, s in self._trials.items() if not s["done"] and s["score"] is not None),
            key=lambda t: (self._trials[t]["score"], t),
        )
        if len(ranked) <= 1:
            return [], []
        size = int(math.ceil(len(ranked) * self._quantile))
        size = min(size, len(ranked) // 2)
        return ranked[:size], ranked[len(ranked) - size :]

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "time_attr": self._time_attr,
            "perturbation_interval": self._interval,
            "burn_in_period": self._burn_in,
            "hyperparam_mutations": _describe_mutations(self._mutations),
            "quantile_fraction": self._quantile,
            "resample_probability": self._resample,
            "perturbation_factors": list(self._factors),
            "custom_explore_fn": _function_name(self._explore_fn),
            "seed": self._seed,
        }

    def state(self) -> dict[str, Any]:
        return {
            "trials": dict(sorted(self._trials.items())),
            "pending": {k: asdict(v) for k, v in sorted(self._pending.items())},
            "lineage": dict(sorted(self._lineage.items())),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._trials = {str(k): dict(v) for k, v in data["trials"].items()}
        self._pending = {str(k): Exploit(**v) for k, v in data["pending"].items()}
        self._lineage = {str(k): list(v) for k, v in data["lineage"].items()}


def explore(
    config: Mapping[str, Any],
    mutations: Mutations,
    resample_probability: float,
    perturbation_factors: Sequence[float],
    custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None,
    rng: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new config explored from ``config``, and what was done to each mutated key.

    Args:
        config: The config to start from (a top trial's).
        mutations: As ``PopulationBasedTraining(hyperparam_mutations=...)``.
        resample_probability: Chance that a value is drawn afresh.
        perturbation_factors: Factors a number is multiplied by.
        custom_explore_fn: Applied last to the whole config.
        rng: A ``random.Random``; every draw comes from it.

    Raises:
        ConfigError: ``custom_explore_fn`` returned something other than a dict.
    """
    new_config = copy.deepcopy(dict(config))
    operations: dict[str, Any] = {}
    for key, mutation in mutations.items():
        current = config.get(key)
        if isinstance(mutation, Mapping):
            new_config[key], operations[key] = explore(
                current if isinstance(current, Mapping) else {},
                mutation,
                resample_probability,
                perturbation_factors,
                None,
                rng,
            )
        elif isinstance(mutation, (list, tuple)):
            values = list(mutation)
            if rng.random() < resample_probability or current not in values:
                new_config[key] = copy.deepcopy(values[rng.randrange(len(values))])
                operations[key] = "resample"
            else:
                shift = rng.choice((-1, 1))
                old = values.index(current)
                new = min(max(old + shift, 0), len(values) - 1)
                new_config[key] = copy.deepcopy(values[new])
                side = "left" if shift == -1 else "right"
                operations[key] = f"shift {side}" + (" (noop)" if new == old else "")
        else:
            if rng.random() < resample_probability or result_number(config, key) is None:
                new_config[key] = (
                    mutation.sample(rng) if isinstance(mutation, Domain) else mutation()
                )
                operations[key] = "resample"
            else:
                factor = perturbation_factors[rng.randrange(len(perturbation_factors))]
                new_config[key] = current * factor
                operations[key] = f"* {factor}"
            if isinstance(current, int) and not isinstance(current, bool):
                new_config[key] = int(new_config[key])  # an integer stays one (batch sizes)
    if custom_explore_fn is not None:
        explored = custom_explore_fn(new_config)
        if not isinstance(explored, dict):
            raise fail(
                "PopulationBasedTraining",
                "custom_explore_fn",
                f"must return the new config as a dict, returned {type(explored).__name__}.",
            )
        new_config = explored
    return new_config, operations


def _check_in_space(
    cls: str, mutations: Mapping[str, Any], space: Mapping[str, Any], prefix: str
) -> None:
    for key, mutation in mutations.items():
        path = f"{prefix}{key}"
        if key not in space:
            raise fail(
                cls,
                "hyperparam_mutations",
                f"mutates {path!r}, which the Tuner's param_space does not have (its keys: "
                f"{sorted(map(str, space))}). PBT explores the configs the trials run with: add "
                f"{key!r} to param_space, or remove it from hyperparam_mutations.",
            )
        inner = space[key]
        if (
            isinstance(mutation, Mapping)
            and isinstance(inner, Mapping)
            and "grid_search" not in inner
        ):
            _check_in_space(cls, mutation, inner, f"{path}.")


def _check_mutations(cls: str, mutations: Mapping[str, Any], where: str) -> None:
    for key, mutation in mutations.items():
        path = f"{where}[{key!r}]"
        if isinstance(mutation, Mapping):
            _check_mutations(cls, mutation, path)
        elif isinstance(mutation, (list, tuple)):
            if not mutation:
                raise fail(cls, "hyperparam_mutations", f"{path} is an empty list of values.")
        elif not isinstance(mutation, Domain) and not callable(mutation):
            raise fail(
                cls,
                "hyperparam_mutations",
                f"{path} must be a list of values, a prefect_tune.space domain, a function or "
                f"a dict of these, got {type(mutation).__name__} ({mutation!r}).",
            )


def _describe_mutations(mutations: Mapping[str, Any]) -> dict[str, Any]:
    described: dict[str, Any] = {}
    for key, mutation in mutations.items():
        if isinstance(mutation, Mapping):
            described[key] = _describe_mutations(mutation)
        elif isinstance(mutation, Domain):
            described[key] = mutation.to_json()
        elif isinstance(mutation, (list, tuple)):
            described[key] = json_copy([_value_or_repr(v) for v in mutation])
        else:
            described[key] = {"function": _function_name(mutation)}
    return described


def _value_or_repr(value: Any) -> Any:
    try:
        return json_copy(value)
    except (TypeError, ValueError):
        return repr(value)


def _function_name(function: Any) -> str | None:
    if function is None:
        return None
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"
