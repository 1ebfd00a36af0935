"""Optuna's samplers (TPE by default) as a prefect-tune search algorithm.

Install with ``pip install prefect-tune[optuna]``. The port from Ray Tune is the import::

    from prefect_tune.search.optuna import OptunaSearch  # was: from ray.tune.search.optuna ...

    search = OptunaSearch(metric="loss", mode="min", seed=0)
    TuneConfig(search_alg=search, num_samples=64)  # the space is the Tuner's param_space

Exact resume: the study lives in memory, and its stored form is the list of trials asked
(params, in order) and told (value or failure). A restore replays them into a new study: told
trials are added as finished, trials still running are asked again with the same params, and
points not yet evaluated are queued again. With the default sampler every suggestion is drawn
by a TPE sampler seeded by ``(seed, trial number)``, so a restored search suggests exactly what
the uninterrupted one would have; with a ``sampler=`` of your own the replayed trials are the
same, and the next suggestions as deterministic as that sampler is.
"""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prefect_tune.engine._checks import fail
from prefect_tune.engine._decision_state import derived_rng, json_copy, result_number
from prefect_tune.exceptions import MissingExtraError, SearchSpaceError
from prefect_tune.search._searcher import Searcher, Suggestion
from prefect_tune.space import Categorical, Domain, Float, Function, Integer, path_step

if TYPE_CHECKING:
    import optuna as ot

__all__ = ["OptunaSearch", "to_optuna_distributions"]

_SEP = "/"  # Ray Tune's separator of nested keys in Optuna's parameter names


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise MissingExtraError(
            "OptunaSearch needs Optuna: pip install 'prefect-tune[optuna]'."
        ) from exc
    return optuna


class OptunaSearch(Searcher):
    """Suggests configs with an Optuna sampler, TPE unless ``sampler`` is given.

    Args:
        space: A ``param_space`` of ``prefect_tune.space`` domains, or a dict of Optuna
            distributions; None to take the Tuner's ``param_space``.
        metric: The result to optimise; TuneConfig's when None.
        mode: ``"min"`` or ``"max"``; TuneConfig's when None.
        points_to_evaluate: Configs (whole or partial) to evaluate first.
        sampler: An Optuna sampler; its own randomness then decides what a restore suggests.
        seed: Seed of the default TPE sampler; chosen at random (and stored) when None.

    Raises:
        ConfigError: ``sampler`` and ``seed`` are both given, or an argument is malformed.
        SearchSpaceError: The space holds what Optuna cannot sample (a ``grid_search``,
            ``sample_from``, ``randn``, a quantized log scale, a list or dict category).
        MissingExtraError: Optuna is not installed.

    Examples:
        >>> from prefect_tune import space
        >>> search = OptunaSearch({"x": space.uniform(-1, 1)}, metric="y", mode="min", seed=0)
        >>> config = search.suggest("t1")
        >>> -1 <= config["x"] <= 1
        True
        >>> search.on_trial_complete("t1", {"y": config["x"] ** 2})
    """

    def __init__(
        self,
        space: Mapping[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        sampler: Any = None,
        seed: int | None = None,
    ) -> None:
        cls = type(self).__name__
        if isinstance(metric, (list, tuple)):
            raise fail(cls, "metric", "must be one result name; multi-objective is not supported.")
        super().__init__(metric, mode)
        optuna = _optuna()
        if sampler is not None and seed is not None:
            raise fail(
                cls,
                "seed",
                "seeds the default TPE sampler; with sampler= given, seed that sampler instead.",
            )
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            raise fail(cls, "sampler", f"must be an Optuna sampler, got {sampler!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise fail(cls, "seed", f"must be an integer or None, got {seed!r}.")
        points = [] if points_to_evaluate is None else points_to_evaluate
        if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
            raise fail(cls, "points_to_evaluate", f"must be a list of dicts, got {points!r}.")
        for i, point in enumerate(points):
            if not isinstance(point, Mapping):
                raise fail(cls, "points_to_evaluate", f"item {i} must be a dict, got {point!r}.")
        self._points = [_flatten(dict(p)) for p in points]
        self._sampler = sampler
        self._seed = int(seed) if seed is not None else secrets.randbits(32)
        self._seed_given = seed is not None
        self._space: Mapping[str, Any] | None = space
        self._own_space = space is not None
        self._distributions: dict[str, Any] = {}
        self._constants: dict[str, Any] = {}
        self._study: ot.Study | None = None
        self._live: dict[str, ot.trial.Trial] = {}
        self._asked: dict[str, dict[str, Any]] = {}  # trial id -> {"number", "params"}
        self._told: dict[str, dict[str, Any]] = {}  # trial id -> {"value", "state"}
        self._reported: dict[str, set[int]] = {}
        if space is not None:
            self._distributions, self._constants = to_optuna_distributions(space)

    @property
    def seed(self) -> int:
        """The default sampler's seed, stored with the search's state."""
        return self._seed

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: Mapping[str, Any], **spec: Any
    ) -> bool:
        if self._own_space and config:
            return False  # a space of its own and a param_space too: the tuner refuses both
        super().set_search_properties(metric, mode, config)
        if not self._own_space:
            # Bound again when a run resumes: the same param_space gives the same distributions.
            self._space = config
            self._distributions, self._constants = to_optuna_distributions(config)
        return True

    def _ensure_study(self) -> ot.Study:
        if self._study is not None:
            return self._study
        if not self._distributions and not self._constants:
            raise fail(
                type(self).__name__,
                "space",
                "is not set: pass space= or let the Tuner pass its param_space.",
            )
        if not self._metric or not self._mode:
            raise fail(
                type(self).__name__,
                "metric",
                "needs a metric and a mode: pass them to OptunaSearch or to TuneConfig.",
            )
        optuna = _optuna()
        direction = "minimize" if self._mode == "min" else "maximize"
        self._study = optuna.create_study(direction=direction, sampler=self._sampler_for(0))
        for point in self._points:
            self._study.enqueue_trial(point)
        return self._study

    def _sampler_for(self, number: int) -> Any:
        if self._sampler is not None:
            return self._sampler
        seed = derived_rng(self._seed, "optuna", number).getrandbits(32)
        return _optuna().samplers.TPESampler(seed=seed)

    def suggest(self, trial_id: str) -> Suggestion:
        study = self._ensure_study()
        if trial_id in self._asked:
            return self._config(self._asked[trial_id]["params"])
        study.sampler = self._sampler_for(len(self._asked))
        trial = study.ask(self._distributions)
        params = json_copy(trial.params)
        self._live[trial_id] = trial
        self._asked[trial_id] = {"number": trial.number, "params": params}
        return self._config(params)

    def _config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for key, value in {**self._constants, **params}.items():
            target = config
            *parents, leaf = key.split(_SEP)
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
        return config

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        trial = self._live.get(trial_id)
        value = result_number(result, self._metric or "")
        step = result_number(result, "training_iteration")
        if trial is None or value is None or step is None:
            return
        # Intermediate values serve Optuna's pruners only; a replayed step is not reported twice.
        reported = self._reported.setdefault(trial_id, set())
        if int(step) not in reported:
            reported.add(int(step))
            trial.report(value, int(step))

    def on_trial_complete(
        self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False
    ) -> None:
        trial = self._live.pop(trial_id, None)
        self._reported.pop(trial_id, None)
        if trial is None:
            return  # not suggested by this search, or told already
        optuna = _optuna()
        value = None if result is None else result_number(result, self._metric or "")
        study = self._ensure_study()
        if error or value is None or math.isnan(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self._told[trial_id] = {"value": None, "state": "FAIL"}
        else:
            study.tell(trial, value)
            self._told[trial_id] = {"value": value, "state": "COMPLETE"}

    @property
    def study(self) -> ot.Study:
        """The Optuna study behind the search (in memory; rebuilt on restore)."""
        return self._ensure_study()

    def settings(self) -> dict[str, Any]:
        optuna = _optuna()
        return {
            **super().settings(),
            "space": {
                key: optuna.distributions.distribution_to_json(d)
                for key, d in sorted(self._distributions.items())
            },
            "constants": json_copy(self._constants),
            "points_to_evaluate": json_copy(self._points),
            "sampler": None if self._sampler is None else type(self._sampler).__name__,
            "seed": self._seed,
        }

    def from_state(self, document: Mapping[str, Any]) -> None:
        # A seed chosen at random (none given) is the stored one's: a restore with
        # OptunaSearch() built again as it was continues the same search.
        stored = document.get("settings") if isinstance(document, Mapping) else None
        if not self._seed_given and self._sampler is None and isinstance(stored, Mapping):
            seed = stored.get("seed")
            if isinstance(seed, int) and not isinstance(seed, bool):
                self._seed = seed
        super().from_state(document)

    def state(self) -> dict[str, Any]:
        asked = sorted(self._asked.items(), key=lambda item: item[1]["number"])
        return {
            "trials": [
                {"trial_id": trial_id, **entry, **self._told.get(trial_id, {"state": "RUNNING"})}
                for trial_id, entry in asked
            ]
        }

    def load(self, data: Mapping[str, Any]) -> None:
        optuna = _optuna()
        self._study, self._live, self._asked, self._told = None, {}, {}, {}
        points, self._points = self._points, []
        study = self._ensure_study()
        for row in data["trials"]:
            trial_id, params = str(row["trial_id"]), dict(row["params"])
            distributions = {k: self._distributions[k] for k in params}
            if row["state"] == "RUNNING":
                study.enqueue_trial(params)
                study.sampler = self._sampler_for(len(self._asked))
                self._live[trial_id] = study.ask(self._distributions)
            else:
                state = optuna.trial.TrialState[row["state"]]
                study.add_trial(
                    optuna.trial.create_trial(
                        state=state,
                        value=row.get("value"),
                        params=params,
                        distributions=distributions,
                    )
                )
                self._told[trial_id] = {"value": row.get("value"), "state": row["state"]}
            self._asked[trial_id] = {"number": int(row["number"]), "params": params}
        self._points = points
        for point in points[len(self._asked) :]:
            study.enqueue_trial(point)


def to_optuna_distributions(
    space: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna distributions for the domains of ``space``, and its constant values.

    Nested dicts become parameter names joined with ``/``, as in Ray Tune.

    Raises:
        SearchSpaceError: A value Optuna cannot sample; the message names its path.
    """
    optuna = _optuna()
    distributions: dict[str, Any] = {}
    constants: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, key)
            where = "param_space" + "".join(path_step(k) for k in path)
            if not isinstance(key, str) or _SEP in key:
                raise SearchSpaceError(
                    f"{where}: OptunaSearch needs string keys without '{_SEP}', got {key!r}."
                )
            name = _SEP.join(path)
            if isinstance(value, optuna.distributions.BaseDistribution):
                distributions[name] = value
            elif isinstance(value, Domain):
                distributions[name] = _distribution(optuna, value, where)
            elif isinstance(value, Mapping) and set(value) == {"grid_search"}:
                raise SearchSpaceError(
                    f"{where}: OptunaSearch cannot run a grid_search; use choice([...]) or "
                    f"the default search."
                )
            elif isinstance(value, Mapping):
                walk(value, path)
            elif _holds_domain(value):
                raise SearchSpaceError(
                    f"{where}: OptunaSearch samples domains in dicts, not in lists."
                )
            else:
                constants[name] = json_copy(value)

    walk(space, ())
    return distributions, constants


def _distribution(optuna: Any, domain: Domain, where: str) -> Any:
    dist = optuna.distributions
    if isinstance(domain, Float):
        if domain.lower is None or domain.upper is None:
            raise SearchSpaceError(f"{where}: Optuna has no normal distribution (randn).")
        log = domain.distribution == "loguniform"
        if log and domain.q is not None:
            raise SearchSpaceError(
                f"{where}: Optuna cannot quantize a log scale (qloguniform); use loguniform."
            )
        return dist.FloatDistribution(domain.lower, domain.upper, log=log, step=domain.q)
    if isinstance(domain, Integer):
        if domain.q is None:
            # Ray's upper bound is exclusive, Optuna's inclusive.
            return dist.IntDistribution(domain.lower, domain.upper - 1, log=domain.log)
        if domain.log:
            raise SearchSpaceError(
                f"{where}: Optuna cannot take steps on a log scale (qlograndint); use lograndint."
            )
        first, last = -(-domain.lower // domain.q), domain.upper // domain.q
        return dist.IntDistribution(first * domain.q, last * domain.q, step=domain.q)
    if isinstance(domain, Categorical):
        for category in domain.categories:
            if not isinstance(category, (type(None), bool, int, float, str)):
                raise SearchSpaceError(
                    f"{where}: Optuna's choices must be None, bools, numbers or strings, got "
                    f"{category!r}; choose a name and build the value in the trainable."
                )
        return dist.CategoricalDistribution(domain.categories)
    if isinstance(domain, Function):
        raise SearchSpaceError(f"{where}: OptunaSearch cannot run sample_from functions.")
    raise SearchSpaceError(f"{where}: OptunaSearch cannot sample {domain!r}.")


def _holds_domain(value: Any) -> bool:
    if isinstance(value, Domain):
        return True
    if isinstance(value, Mapping):
        return any(_holds_domain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_domain(v) for v in value)
    return False


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + _SEP))
        else:
            flat[name] = value
    return flat
