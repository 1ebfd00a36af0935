"""Ray Tune's default searcher: every grid combination, ``num_samples`` times, random values fresh.

Trial ``i`` is a pure function of ``(seed, i)``: repetition ``i // n_grid`` of grid combination
``i % n_grid``, each random value drawn from a generator seeded by the seed, the trial index and
the value's path. A restored experiment thus regenerates the exact config of any trial, in any
order, in any process, even if the keys of ``param_space`` were reordered.

    >>> from prefect_tune import space
    >>> generator = BasicVariantGenerator(
    ...     {"lr": space.loguniform(1e-4, 1e-1), "opt": space.grid_search(["sgd", "adam"])},
    ...     num_samples=2,
    ...     seed=7,
    ... )
    >>> generator.total_trials, [generator.config_for(i)["opt"] for i in range(4)]
    (4, ['sgd', 'adam', 'sgd', 'adam'])
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import operator
import random
import reprlib
import secrets
from collections.abc import Mapping
from typing import Any

from prefect_tune.exceptions import ConfigError, ConfigNotSerializableError, SearchSpaceError
from prefect_tune.space import (
    Categorical,
    Domain,
    Function,
    UnresolvedDependency,
    json_or_repr,
    path_step,
)

__all__ = ["BasicVariantGenerator", "describe_param_space", "validate_param_space"]

Path = tuple[Any, ...]  # dict keys and list indices from the root of the space

_JSON_KEY_TYPES = (str, int, float, bool, type(None))


class BasicVariantGenerator:
    """Generates trial configs from a ``param_space`` by grid and random search, as Ray does.

    Grids combine into their product, enumerated with the first grid (by sorted path) varying
    fastest, as in Ray; each combination is repeated ``num_samples`` times with fresh random
    values. ``sample_from`` functions run after every other value is resolved, and may read one
    another's results as long as they do not form a cycle.

    Args:
        param_space: Parameter names to plain values, domains from ``prefect_tune.space``,
            ``grid_search`` dicts, or nested dicts and lists of these.
        num_samples: Repetitions of the grid; ``-1`` repeats without end.
        seed: Seed of every random draw; a random one is chosen (and exposed as ``seed``, to be
            persisted) when None.

    Raises:
        SearchSpaceError: The space is not valid; the message names the parameter's path.
        ConfigNotSerializableError: A plain value of the space cannot be stored as JSON.
        ConfigError: ``num_samples`` or ``seed`` is not allowed.
    """

    def __init__(
        self, param_space: Mapping[str, Any], num_samples: int = 1, seed: int | None = None
    ) -> None:
        validate_param_space(param_space)
        if (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, numbers.Integral)
            or (num_samples < 1 and num_samples != -1)
        ):
            raise ConfigError(
                f"num_samples must be an integer >= 1, or -1 to sample until the experiment is "
                f"stopped; got {num_samples!r}."
            )
        if seed is None:
            seed = secrets.randbits(32)
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ConfigError(f"seed must be an integer or None, got {seed!r}.")
        self._space: dict[Any, Any] = _copy_space(param_space)
        self._num_samples: int = int(num_samples)
        self._seed: int = int(seed)
        self._grids: list[tuple[Path, list[Any]]] = sorted(
            _grid_paths(self._space, ()), key=lambda item: _sort_key(item[0])
        )
        self._num_grid_variants: int = math.prod(len(values) for _, values in self._grids)

    @property
    def seed(self) -> int:
        """The seed of every random draw: persist it to regenerate the same configs later."""
        return self._seed

    @property
    def num_samples(self) -> int:
        """Repetitions of the grid, or -1 for no end."""
        return self._num_samples

    @property
    def num_grid_variants(self) -> int:
        """Number of grid combinations (1 without any ``grid_search``)."""
        return self._num_grid_variants

    @property
    def total_trials(self) -> int | None:
        """``num_samples`` times the number of grid combinations; None when ``num_samples=-1``."""
        if self._num_samples == -1:
            return None
        return self._num_samples * self._num_grid_variants

    def config_for(self, index: int) -> dict[str, Any]:
        """The config of trial ``index``: the same for a given seed, whatever was asked before.

        Args:
            index: Trial index from 0.

        Returns:
            A new dict, safe to mutate.

        Raises:
            IndexError: ``index`` is negative or not below ``total_trials``.
            SearchSpaceError: A ``sample_from`` function raised, or functions depend on each
                other in a cycle.
            ConfigNotSerializableError: The config holds a value that cannot be stored as JSON.
        """
        index = operator.index(index)
        total = self.total_trials
        if index < 0 or (total is not None and index >= total):
            raise IndexError(
                f"trial index {index} is out of range: this search has {total} trials, "
                f"indices 0 to {total - 1}."
                if total is not None
                else f"trial index {index} is out of range: indices start at 0."
            )
        remaining = index % self._num_grid_variants
        picks: dict[Path, int] = {}
        for path, values in self._grids:
            remaining, picks[path] = divmod(remaining, len(values))
        pending: list[tuple[Path, Function]] = []
        config = self._resolve(self._space, (), index, picks, pending)
        self._resolve_functions(config, index, pending)
        problem = _json_problem(config, "config")
        if problem is not None:
            raise ConfigNotSerializableError(f"Trial {index}: {problem}")
        return config

    def _rng(self, index: int, path: Path) -> random.Random:
        material = f"{self._seed}/{index}/{_format_path(path)}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))

    def _resolve(
        self,
        node: Any,
        path: Path,
        index: int,
        picks: dict[Path, int],
        pending: list[tuple[Path, Function]],
    ) -> Any:
        if path in picks and _is_grid(node):
            node = node["grid_search"][picks[path]]
        if isinstance(node, Function):
            pending.append((path, node))
            return node  # a placeholder, read as "not resolved yet" by other functions
        if isinstance(node, Domain):
            return node.sample(self._rng(index, path))
        if isinstance(node, Mapping):
            return {
                key: self._resolve(value, (*path, key), index, picks, pending)
                for key, value in node.items()
            }
        if isinstance(node, (list, tuple)):
            # Tuples become lists, as they would after the config is stored as JSON.
            return [
                self._resolve(value, (*path, i), index, picks, pending)
                for i, value in enumerate(node)
            ]
        return copy.deepcopy(node)

    def _resolve_functions(
        self, config: dict[str, Any], index: int, pending: list[tuple[Path, Function]]
    ) -> None:
        while pending:
            waiting: list[tuple[Path, Function]] = []
            reasons: list[str] = []
            for path, function in pending:
                try:
                    value = function.sample(self._rng(index, path), config)
                except UnresolvedDependency as exc:
                    waiting.append((path, function))
                    reasons.append(f"{_format_path(path)} reads {exc.path}")
                    continue
                except Exception as exc:
                    raise SearchSpaceError(
                        f"{_format_path(path)}: sample_from function {function.name} raised "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                _assign(config, path, value)
            if len(waiting) == len(pending):
                raise SearchSpaceError(
                    "sample_from functions depend on each other in a cycle, so none can run ("
                    + "; ".join(reasons)
                    + "). Make at least one of them depend only on values that are not sample_from."
                )
            pending = waiting


def validate_param_space(param_space: Any) -> None:
    """Check that a ``param_space`` can be sampled and its plain values stored as JSON.

    Args:
        param_space: The space to check.

    Raises:
        SearchSpaceError: It is not a dict, or holds a bad grid or a foreign domain; the message
            names the path, such as ``param_space["model"]["lr"]``.
        ConfigNotSerializableError: A plain value or ``choice`` category is not JSON-friendly.

    Examples:
        >>> validate_param_space({"x": {"grid_search": 3}})
        Traceback (most recent call last):
        ...
        prefect_tune.exceptions.SearchSpaceError: param_space["x"]: grid_search values must be a list, got int (3); write {"grid_search": [1, 2, 3]}.
    """
    if not isinstance(param_space, Mapping):
        raise SearchSpaceError(
            f"param_space must be a dict of parameter names to values or search-space domains, "
            f"got {type(param_space).__name__}."
        )
    _validate(param_space, (), in_grid=False)


def describe_param_space(param_space: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON description of a ``param_space``, to store and to compare two definitions.

    Domains are described by ``to_json()``; values that cannot be stored as JSON by their repr.
    The result equals its own JSON round trip (tuples are lists, keys are strings).

    Raises:
        SearchSpaceError: ``param_space`` is not a dict.

    Examples:
        >>> from prefect_tune import space
        >>> describe_param_space({"lr": space.uniform(0, 1), "n": space.grid_search([1, 2])})
        {'lr': {'type': 'uniform', 'lower': 0.0, 'upper': 1.0}, 'n': {'grid_search': [1, 2]}}
    """
    if not isinstance(param_space, Mapping):
        raise SearchSpaceError(f"param_space must be a dict, got {type(param_space).__name__}.")
    result: dict[str, Any] = json.loads(json.dumps(_describe(param_space), allow_nan=True))
    return result


def _is_grid(node: Any) -> bool:
    return isinstance(node, Mapping) and len(node) == 1 and "grid_search" in node


def _format_path(path: Path, root: str = "param_space") -> str:
    return root + "".join(path_step(key) for key in path)


def _sort_key(path: Path) -> tuple[tuple[str, Any], ...]:
    # Ray sorts grid paths; the type name keeps keys of different types comparable.
    return tuple(
        (type(key).__name__, key if isinstance(key, (str, int, float)) else repr(key))
        for key in path
    )


def _validate(node: Any, path: Path, in_grid: bool) -> None:
    where = _format_path(path)
    if _is_grid(node):
        if in_grid:
            raise SearchSpaceError(
                f"{where}: a grid_search value cannot hold another grid_search; give each grid "
                f"its own key and the grids combine."
            )
        values = node["grid_search"]
        if not isinstance(values, (list, tuple)):
            raise SearchSpaceError(
                f"{where}: grid_search values must be a list, got {type(values).__name__} "
                f'({reprlib.repr(values)}); write {{"grid_search": [1, 2, 3]}}.'
            )
        if not values:
            raise SearchSpaceError(
                f"{where}: grid_search needs at least one value; an empty grid runs no trial."
            )
        for i, value in enumerate(values):
            _validate(value, (*path, "grid_search", i), in_grid=True)
    elif isinstance(node, Categorical):
        for i, category in enumerate(node.categories):
            problem = _json_problem(category, f"{where}.categories", (i,))
            if problem is not None:
                raise ConfigNotSerializableError(problem)
    elif isinstance(node, Domain):
        return  # validated when built
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, _JSON_KEY_TYPES):
                raise ConfigNotSerializableError(_key_message(where, key))
            _validate(value, (*path, key), in_grid)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _validate(value, (*path, i), in_grid)
    elif type(node).__module__.startswith("ray."):
        raise SearchSpaceError(
            f"{where}: {type(node).__name__} comes from Ray Tune; build the space with "
            f"prefect_tune.space, which has the same helpers (uniform, choice, grid_search...)."
        )
    else:
        problem = _json_problem(node, "param_space", path)
        if problem is not None:
            raise ConfigNotSerializableError(problem)


def _grid_paths(node: Any, path: Path) -> list[tuple[Path, list[Any]]]:
    if _is_grid(node):
        return [(path, list(node["grid_search"]))]
    if isinstance(node, Mapping):
        return [found for key, value in node.items() for found in _grid_paths(value, (*path, key))]
    if isinstance(node, (list, tuple)):
        return [found for i, value in enumerate(node) for found in _grid_paths(value, (*path, i))]
    return []


def _copy_space(node: Any) -> Any:
    """A copy whose containers the caller can no longer change; domains are immutable."""
    if isinstance(node, Domain):
        return node
    if isinstance(node, Mapping):
        return {key: _copy_space(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_copy_space(value) for value in node]
    if isinstance(node, tuple):
        return tuple(_copy_space(value) for value in node)
    return copy.deepcopy(node)


def _describe(node: Any) -> Any:
    if isinstance(node, Domain):
        return node.to_json()
    if isinstance(node, Mapping):
        return {
            key if isinstance(key, _JSON_KEY_TYPES) else repr(key): _describe(value)
            for key, value in node.items()
        }
    if isinstance(node, (list, tuple)):
        return [_describe(value) for value in node]
    return json_or_repr(node)


def _assign(config: dict[str, Any], path: Path, value: Any) -> None:
    target: Any = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _json_problem(value: Any, root: str, path: Path = ()) -> str | None:
    """Why ``value`` cannot be stored as JSON, naming where; None when it can."""
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        found = _find_json_problem(value, root, path, frozenset())
        return found or f"{_format_path(path, root)} cannot be stored as JSON."
    return None


def _find_json_problem(value: Any, root: str, path: Path, parents: frozenset[int]) -> str | None:
    where = _format_path(path, root)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in parents:
            return f"{where} contains itself; a config must be a tree of JSON values."
        parents = parents | {id(value)}
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, _JSON_KEY_TYPES):
                    return _key_message(where, key)
                found = _find_json_problem(item, root, (*path, key), parents)
                if found:
                    return found
        else:
            for i, item in enumerate(value):
                found = _find_json_problem(item, root, (*path, i), parents)
                if found:
                    return found
        return None
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        kind = type(value).__qualname__
        if type(value).__module__ == "numpy":
            return (
                f"{where} is {reprlib.repr(value)} of type numpy.{kind}, which cannot be stored as "
                f"JSON; convert it to a Python value with .item(), or .tolist() for an array."
            )
        return (
            f"{where} is {reprlib.repr(value)} of type {kind}, which cannot be stored as JSON, "
            f"and trial configs are stored with the experiment. Pass a JSON-friendly value "
            f"(number, string, bool, None, list, dict), such as a name or settings, and build "
            f"the object inside the trainable."
        )
    return None


def _key_message(where: str, key: Any) -> str:
    return (
        f"{where} has a key of type {type(key).__name__} ({key!r}), which cannot be stored as "
        f"JSON; use string keys."
    )


def space_from_description(description: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuilds a ``param_space`` from :func:`describe_param_space` output.

    Used to restore an experiment without its original ``param_space``.

    Raises:
        SearchSpaceError: the description holds something that cannot be rebuilt exactly (a
            ``sample_from`` function, a value stored by its repr); pass ``param_space`` then.
    """

    def build(node: Any) -> Any:
        if Domain.describes(node):
            return Domain.from_json(node)
        if isinstance(node, Mapping):
            return {key: build(value) for key, value in node.items()}
        return node

    rebuilt = build(dict(description))
    if describe_param_space(rebuilt) != json.loads(json.dumps(dict(description), allow_nan=True)):
        raise SearchSpaceError(
            "The stored search space cannot be rebuilt exactly (it holds values stored by their "
            "repr): pass param_space= to Tuner.restore()."
        )
    return rebuilt
