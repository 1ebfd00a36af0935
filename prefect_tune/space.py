"""Search-space helpers with Ray Tune's names and meanings.

A Ray Tune ``param_space`` works unchanged once ``tune.uniform`` & co come from here::

    # before                                  # after
    from ray import tune                      from prefect_tune import space as tune

    param_space = {
        "lr": tune.loguniform(1e-4, 1e-1),
        "layers": tune.grid_search([2, 4]),
        "width": tune.sample_from(lambda spec: spec.config.layers * 32),
    }

Every domain is validated when it is built and samples only from the ``random.Random`` it is
given, so a seed reproduces the same values in any process.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import inspect
import json
import math
import numbers
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np

from prefect_tune.exceptions import SearchSpaceError

__all__ = [
    "Categorical",
    "Domain",
    "Float",
    "Function",
    "Integer",
    "choice",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "sample_from",
    "uniform",
]


_Config: TypeAlias = "Mapping[str, Any] | None"


class Domain(abc.ABC):
    """A parameter to sample: what every search-space helper except ``grid_search`` returns.

    Domains are validated when built and never change afterwards; ``sample`` draws only from
    the ``rng`` it is given.
    """

    @abc.abstractmethod
    def sample(self, rng: random.Random | None = None, config: _Config = None) -> Any:
        """Draw one value.

        Args:
            rng: Source of randomness; a fresh, unseeded one when None.
            config: The trial config resolved so far; only ``sample_from`` reads it.

        Returns:
            A JSON-friendly value (``sample_from`` returns whatever its function returns).
        """

    #: The ``type`` names of `to_json` descriptions this class rebuilds in `from_json`.
    kinds: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """Describe the domain as JSON, e.g. ``{"type": "uniform", "lower": 0.0, "upper": 1.0}``."""

    @classmethod
    def _from_json(cls, kind: str, data: Mapping[str, Any]) -> Domain:
        raise NotImplementedError

    @staticmethod
    def describes(node: Any) -> bool:
        """Whether ``node`` is a domain's `to_json` description (a dict of its ``type`` and
        fields), not a plain dict value."""
        return (
            isinstance(node, Mapping)
            and isinstance(node.get("type"), str)
            and len(node) > 1
            and any(node["type"] in cls.kinds for cls in _DOMAIN_CLASSES)
        )

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Domain:
        """Rebuilds a domain from its `to_json` description (read from storage: untrusted).

        Raises:
            SearchSpaceError: ``data`` describes no domain this release can rebuild: an unknown
                ``type``, a missing or bad field, or a ``sample_from`` function (functions are
                not stored).

        Examples:
            >>> Domain.from_json({"type": "loguniform", "lower": 0.001, "upper": 0.1, "base": 10})
            loguniform(lower=0.001, upper=0.1, base=10)
        """
        kind = data.get("type") if isinstance(data, Mapping) else None
        for cls in _DOMAIN_CLASSES:
            if kind in cls.kinds:
                try:
                    return cls._from_json(kind, data)
                except (KeyError, TypeError) as exc:
                    raise SearchSpaceError(
                        f"The stored search-space domain {data!r} lacks a field or has one of "
                        f"the wrong type ({type(exc).__name__}: {exc})."
                    ) from exc
        raise SearchSpaceError(f"The stored search-space domain {data!r} has an unknown type.")

    def __repr__(self) -> str:
        fields = self.to_json()
        kind = fields.pop("type")
        return f"{kind}({', '.join(f'{key}={value!r}' for key, value in fields.items())})"


class Float(Domain):
    """A float: uniform or log-uniform between bounds, or normal; optionally quantized.

    Prefer the helpers (``uniform``, ``quniform``, ``loguniform``, ``qloguniform``, ``randn``,
    ``qrandn``), which build this class.

    Args:
        lower: Lower bound (uniform and log-uniform only).
        upper: Upper bound (uniform and log-uniform only).
        distribution: ``"uniform"``, ``"loguniform"`` or ``"normal"``.
        q: Round samples to a multiple of ``q``; bounds must be multiples of ``q`` (as in Ray).
        base: Logarithm base of a log-uniform distribution.
        mean: Mean of a normal distribution.
        sd: Standard deviation of a normal distribution.

    Raises:
        SearchSpaceError: A bound, ``q``, ``base`` or ``sd`` is not allowed.
    """

    def __init__(
        self,
        lower: float | None = None,
        upper: float | None = None,
        *,
        distribution: Literal["uniform", "loguniform", "normal"] = "uniform",
        q: float | None = None,
        base: float = 10,
        mean: float = 0.0,
        sd: float = 1.0,
    ) -> None:
        names = {"uniform": "uniform", "loguniform": "loguniform", "normal": "randn"}
        if distribution not in names:
            raise SearchSpaceError(
                f"Float: distribution must be 'uniform', 'loguniform' or 'normal', "
                f"got {distribution!r}."
            )
        self.distribution = distribution
        self.kind = ("q" if q is not None else "") + names[distribution]
        where = self.kind
        self.lower: float | None = None
        self.upper: float | None = None
        self.mean = self.sd = 0.0
        self.base: float = 10
        if distribution == "normal":
            if lower is not None or upper is not None:
                raise SearchSpaceError(f"{where}: a normal distribution takes no bounds.")
            self.mean = _number(where, "mean", mean)
            self.sd = _number(where, "sd", sd)
            if self.sd <= 0:
                raise SearchSpaceError(f"{where}: sd must be greater than 0, got {sd!r}.")
        else:
            self.lower = _number(where, "lower", lower)
            self.upper = _number(where, "upper", upper)
            _check_order(where, self.lower, self.upper)
            if distribution == "loguniform":
                _check_log_bounds(where, self.lower)
                self.base = _check_base(where, base)
        self.q: float | None = None
        self._digits: int | None = None
        if q is not None:
            self.q = _number(where, "q", q)
            if self.q <= 0:
                raise SearchSpaceError(f"{where}: q must be greater than 0, got {q!r}.")
            for name, bound in (("lower", self.lower), ("upper", self.upper)):
                if bound is not None and not math.isclose(
                    bound / self.q, round(bound / self.q), rel_tol=1e-9, abs_tol=1e-9
                ):
                    raise SearchSpaceError(
                        f"{where}: {name} bound {bound!r} is not a multiple of q={q!r}; "
                        f"bounds of a quantized float must be multiples of q."
                    )
            exponent = Decimal(repr(self.q)).as_tuple().exponent
            self._digits = max(0, -exponent) if isinstance(exponent, int) else None

    def sample(self, rng: random.Random | None = None, config: _Config = None) -> float:
        rng = rng or random.Random()
        if self.lower is None or self.upper is None:
            value = rng.gauss(self.mean, self.sd)
        elif self.distribution == "loguniform":
            exponent = rng.uniform(math.log(self.lower, self.base), math.log(self.upper, self.base))
            value = min(max(self.base**exponent, self.lower), self.upper)
        else:
            value = rng.uniform(self.lower, self.upper)
        if self.q is None:
            return value
        steps = round(value / self.q)
        if self.lower is not None and self.upper is not None:
            steps = min(max(steps, round(self.lower / self.q)), round(self.upper / self.q))
        quantized = steps * self.q
        # Ray returns round(x / q) * q, whose binary noise (0.30000000000000004) ends up in
        # result tables and file names; rounding to q's own decimals removes only that noise.
        return round(quantized, self._digits) if self._digits is not None else quantized

    kinds = ("uniform", "quniform", "loguniform", "qloguniform", "randn", "qrandn")

    @classmethod
    def _from_json(cls, kind: str, data: Mapping[str, Any]) -> Float:
        q = data["q"] if kind.startswith("q") else None
        base_kind = kind[1:] if kind.startswith("q") else kind
        if base_kind == "randn":
            return cls(distribution="normal", mean=data["mean"], sd=data["sd"], q=q)
        if base_kind == "loguniform":
            return cls(
                data["lower"], data["upper"], distribution="loguniform", q=q, base=data["base"]
            )
        return cls(data["lower"], data["upper"], q=q)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.distribution == "normal":
            out.update(mean=self.mean, sd=self.sd)
        else:
            out.update(lower=self.lower, upper=self.upper)
        if self.q is not None:
            out["q"] = self.q
        if self.distribution == "loguniform":
            out["base"] = self.base
        return out


class Integer(Domain):
    """An integer, uniform or log-uniform between bounds, optionally a multiple of ``q``.

    As in Ray, ``upper`` is exclusive unless ``q`` is given, which makes it inclusive. Prefer
    the helpers (``randint``, ``qrandint``, ``lograndint``, ``qlograndint``).

    Args:
        lower: Smallest value (inclusive); at least 1 on a log scale.
        upper: Exclusive upper bound, or inclusive with ``q``.
        log: Sample log-uniformly.
        q: Return multiples of this positive integer.
        base: Logarithm base on a log scale.

    Raises:
        SearchSpaceError: A bound, ``q`` or ``base`` is not allowed.
    """

    def __init__(
        self, lower: int, upper: int, *, log: bool = False, q: int | None = None, base: float = 10
    ) -> None:
        self.kind = ("q" if q is not None else "") + ("lograndint" if log else "randint")
        where = self.kind
        self.lower = _integer(where, "lower", lower)
        self.upper = _integer(where, "upper", upper)
        _check_order(where, self.lower, self.upper)
        self.log = bool(log)
        self.base: float = _check_base(where, base) if log else 10
        if log and self.lower < 1:
            raise SearchSpaceError(
                f"{where}: lower must be at least 1 on a log scale, got {lower!r}."
            )
        self.q: int | None = None
        if q is not None:
            self.q = _integer(where, "q", q)
            if self.q < 1:
                raise SearchSpaceError(f"{where}: q must be a positive integer, got {q!r}.")
            if -(-self.lower // self.q) > self.upper // self.q:
                raise SearchSpaceError(
                    f"{where}: no multiple of q={self.q} lies between lower={self.lower} and "
                    f"upper={self.upper}; widen the bounds or use a smaller q."
                )

    def sample(self, rng: random.Random | None = None, config: _Config = None) -> int:
        rng = rng or random.Random()
        if self.q is None:
            if not self.log:
                return rng.randrange(self.lower, self.upper)
            exponent = rng.uniform(math.log(self.lower, self.base), math.log(self.upper, self.base))
            return min(max(math.floor(self.base**exponent), self.lower), self.upper - 1)
        first, last = -(-self.lower // self.q), self.upper // self.q
        if not self.log:
            return rng.randint(first, last) * self.q
        low, high = first * self.q, last * self.q
        value = self.base ** rng.uniform(math.log(low, self.base), math.log(high, self.base))
        return min(max(round(value / self.q), first), last) * self.q

    kinds = ("randint", "qrandint", "lograndint", "qlograndint")

    @classmethod
    def _from_json(cls, kind: str, data: Mapping[str, Any]) -> Integer:
        log = kind.endswith("lograndint")
        return cls(
            data["lower"],
            data["upper"],
            log=log,
            q=data["q"] if kind.startswith("q") else None,
            base=data["base"] if log else 10,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "lower": self.lower, "upper": self.upper}
        if self.q is not None:
            out["q"] = self.q
        if self.log:
            out["base"] = self.base
        return out


class Categorical(Domain):
    """One of a list of values, each equally likely. Prefer the ``choice`` helper.

    Args:
        categories: A non-empty list or tuple of JSON-friendly values.

    Raises:
        SearchSpaceError: ``categories`` is empty, not a list, or holds a domain.
    """

    def __init__(self, categories: Sequence[Any] | np.ndarray) -> None:
        if isinstance(categories, np.ndarray):
            categories = categories.tolist()
        if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
            raise SearchSpaceError(
                f"choice: categories must be a list of values, got {type(categories).__name__} "
                f"({categories!r}); write choice([...])."
            )
        if not categories:
            raise SearchSpaceError("choice: categories must hold at least one value, got none.")
        for i, category in enumerate(categories):
            if _holds_domain(category):
                raise SearchSpaceError(
                    f"choice: category {i} holds a search-space domain ({category!r}); "
                    f"categories must be plain values. For a value that depends on the choice, "
                    f"use sample_from(lambda spec: ...)."
                )
        self.categories = list(categories)

    def sample(self, rng: random.Random | None = None, config: _Config = None) -> Any:
        rng = rng or random.Random()
        # A copy, so trials never share (and mutate) one list or dict.
        return copy.deepcopy(self.categories[rng.randrange(len(self.categories))])

    kinds = ("choice",)

    @classmethod
    def _from_json(cls, kind: str, data: Mapping[str, Any]) -> Categorical:
        return cls(data["categories"])

    def to_json(self) -> dict[str, Any]:
        return {"type": "choice", "categories": [json_or_repr(c) for c in self.categories]}


class Function(Domain):
    """A value computed by a function, optionally from the rest of the config.

    Prefer the ``sample_from`` helper.

    Args:
        func: Called as ``func(spec)``, where ``spec.config`` is the trial config with every
            other value resolved (attribute or item access), or as ``func()`` if it takes no
            argument.

    Raises:
        SearchSpaceError: ``func`` is not callable with one argument or none.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        if not callable(func):
            raise SearchSpaceError(
                f"sample_from: expected a function such as lambda spec: spec.config.x * 2, "
                f"got {type(func).__name__} ({func!r})."
            )
        self.func = func
        self.name = f"{_attr(func, '__module__')}.{_attr(func, '__qualname__')}"
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):  # some builtins have no signature; assume Ray's form
            self._pass_spec = True
            return
        try:
            signature.bind(None)
            self._pass_spec = True
        except TypeError:
            try:
                signature.bind()
            except TypeError:
                raise SearchSpaceError(
                    f"sample_from: {self.name} must take one argument (the spec) or none, "
                    f"but its signature is {signature}."
                ) from None
            self._pass_spec = False

    def sample(self, rng: random.Random | None = None, config: _Config = None) -> Any:
        rng = rng or random.Random()
        with _seeded_global_random(rng.getrandbits(32)):
            return self.func(_Spec(config or {})) if self._pass_spec else self.func()

    kinds = ("sample_from",)

    @classmethod
    def _from_json(cls, kind: str, data: Mapping[str, Any]) -> Function:
        raise SearchSpaceError(
            f"The stored search space uses sample_from({data.get('function')}), which cannot be "
            "rebuilt from storage: pass param_space= to Tuner.restore()."
        )

    def to_json(self) -> dict[str, Any]:
        return {"type": "sample_from", "function": self.name}


_DOMAIN_CLASSES: tuple[type[Domain], ...] = (Float, Integer, Categorical, Function)


def uniform(lower: float, upper: float) -> Float:
    """Sample a float uniformly between ``lower`` and ``upper``.

    Examples:
        >>> uniform(0, 1)
        uniform(lower=0.0, upper=1.0)
    """
    return Float(lower, upper)


def quniform(lower: float, upper: float, q: float) -> Float:
    """Sample a float uniformly between ``lower`` and ``upper``, rounded to a multiple of ``q``.

    The bounds must be multiples of ``q``; rounding makes ``upper`` reachable.

    Examples:
        >>> quniform(0, 1, 0.25)
        quniform(lower=0.0, upper=1.0, q=0.25)
    """
    return Float(lower, upper, q=q)


def loguniform(lower: float, upper: float, base: float = 10) -> Float:
    """Sample a float between ``lower`` > 0 and ``upper``, uniformly on a log scale.

    Examples:
        >>> loguniform(1e-4, 1e-1)
        loguniform(lower=0.0001, upper=0.1, base=10)
    """
    return Float(lower, upper, distribution="loguniform", base=base)


def qloguniform(lower: float, upper: float, q: float, base: float = 10) -> Float:
    """Sample like ``loguniform``, rounded to a multiple of ``q`` (bounds must be multiples).

    Examples:
        >>> qloguniform(1e-4, 1e-1, 5e-5)
        qloguniform(lower=0.0001, upper=0.1, q=5e-05, base=10)
    """
    return Float(lower, upper, distribution="loguniform", q=q, base=base)


def randn(mean: float = 0.0, sd: float = 1.0) -> Float:
    """Sample a float from a normal distribution.

    Examples:
        >>> randn(0, 2)
        randn(mean=0.0, sd=2.0)
    """
    return Float(distribution="normal", mean=mean, sd=sd)


def qrandn(mean: float, sd: float, q: float) -> Float:
    """Sample a float from a normal distribution, rounded to a multiple of ``q``.

    Examples:
        >>> qrandn(0, 1, 0.5)
        qrandn(mean=0.0, sd=1.0, q=0.5)
    """
    return Float(distribution="normal", mean=mean, sd=sd, q=q)


def randint(lower: int, upper: int) -> Integer:
    """Sample an integer uniformly from ``lower`` (inclusive) to ``upper`` (exclusive).

    Examples:
        >>> randint(0, 10)
        randint(lower=0, upper=10)
    """
    return Integer(lower, upper)


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """Sample a multiple of ``q`` uniformly from ``lower`` to ``upper``, both inclusive.

    Examples:
        >>> qrandint(32, 256, 32)
        qrandint(lower=32, upper=256, q=32)
    """
    return Integer(lower, upper, q=q)


def lograndint(lower: int, upper: int, base: float = 10) -> Integer:
    """Sample an integer from ``lower`` >= 1 (inclusive) to ``upper`` (exclusive) on a log scale.

    Examples:
        >>> lograndint(1, 1000)
        lograndint(lower=1, upper=1000, base=10)
    """
    return Integer(lower, upper, log=True, base=base)


def qlograndint(lower: int, upper: int, q: int, base: float = 10) -> Integer:
    """Sample like ``lograndint``, rounded to a multiple of ``q``; ``upper`` is inclusive.

    Examples:
        >>> qlograndint(10, 1000, 10)
        qlograndint(lower=10, upper=1000, q=10, base=10)
    """
    return Integer(lower, upper, log=True, q=q, base=base)


def choice(categories: Sequence[Any] | np.ndarray) -> Categorical:
    """Sample one of ``categories``, each equally likely.

    Examples:
        >>> choice(["relu", "tanh"])
        choice(categories=['relu', 'tanh'])
    """
    return Categorical(categories)


def grid_search(values: Sequence[Any] | np.ndarray) -> dict[str, list[Any]]:
    """Try every one of ``values``; several grids combine into their product.

    Returns the plain dict ``{"grid_search": [...]}``, as Ray does, so spaces written as JSON
    work too. Each grid combination is run ``num_samples`` times.

    Raises:
        SearchSpaceError: ``values`` is not a list (or tuple, range) or is empty.

    Examples:
        >>> grid_search([0.1, 0.01])
        {'grid_search': [0.1, 0.01]}
    """
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple, range)):
        raise SearchSpaceError(
            f"grid_search: values must be a list, got {type(values).__name__} ({values!r}); "
            f"write grid_search([1, 2, 3])."
        )
    if len(values) == 0:
        raise SearchSpaceError("grid_search: values must hold at least one value, got none.")
    return {"grid_search": list(values)}


def sample_from(func: Callable[..., Any]) -> Function:
    """Compute a value with ``func``, which may read the rest of the trial config.

    ``func(spec)`` runs after every other value of the config is resolved and reads them as
    ``spec.config.name`` or ``spec.config["name"]``; a function taking no argument is called as
    ``func()``. Its use of ``random`` and ``numpy.random`` is seeded from the trial's seed.

    Examples:
        >>> space = {"layers": choice([2, 4]), "width": sample_from(lambda spec: spec.config.layers * 32)}
    """
    return Function(func)


class UnresolvedDependency(SearchSpaceError):
    """A ``sample_from`` function read a value another ``sample_from`` has not produced yet."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} was read before it was resolved: it is another sample_from.")
        self.path = path


class _ConfigView(Mapping[Any, Any]):
    """Read-only view of a partly resolved config, by item or attribute (``spec.config.lr``)."""

    def __init__(self, data: Mapping[Any, Any], path: str = "config") -> None:
        self._data = data
        self._path = path

    def __getitem__(self, key: Any) -> Any:
        return _view(self._data[key], f"{self._path}{path_step(key)}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{self._path} has no key {name!r}; its keys are {list(self._data)}."
            ) from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(dict(self._data))


class _Spec(Mapping[str, Any]):
    """What a ``sample_from`` function receives, like Ray's: ``spec.config`` or ``spec["config"]``."""

    def __init__(self, config: Mapping[Any, Any]) -> None:
        self.config = _ConfigView(config)

    def __getitem__(self, key: str) -> Any:
        if key != "config":
            raise KeyError(key)
        return self.config

    def __iter__(self) -> Iterator[str]:
        return iter(("config",))

    def __len__(self) -> int:
        return 1


def _view(value: Any, path: str) -> Any:
    if isinstance(value, Domain):
        raise UnresolvedDependency(path)
    if isinstance(value, Mapping):
        return _ConfigView(value, path)
    if isinstance(value, (list, tuple)):
        return [_view(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


@contextlib.contextmanager
def _seeded_global_random(seed: int) -> Iterator[None]:
    # Ray's examples draw from the global generators inside sample_from
    # (``lambda _: np.random.randint(10)``). Seeding them from the trial's seed lets a restored
    # experiment regenerate the same value; putting their state back hides this from the program.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def path_step(key: Any) -> str:
    """``["lr"]`` or ``[0]``: one step of a path such as ``param_space["model"]["lr"]``."""
    return f"[{json.dumps(key, ensure_ascii=False)}]" if isinstance(key, str) else f"[{key!r}]"


def json_or_repr(value: Any) -> Any:
    """``value`` itself when it can be stored as JSON, else its repr."""
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def _holds_domain(value: Any) -> bool:
    if isinstance(value, Domain):
        return True
    if isinstance(value, Mapping):
        return any(_holds_domain(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_domain(item) for item in value)
    return False


def _attr(func: Callable[..., Any], name: str) -> str:
    return str(getattr(func, name, None) or getattr(type(func), name))


def _number(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SearchSpaceError(
            f"{where}: {name} must be a number, got {type(value).__name__} ({value!r})."
        )
    result = float(value)
    if not math.isfinite(result):
        raise SearchSpaceError(f"{where}: {name} must be a finite number, got {value!r}.")
    return result


def _integer(where: str, name: str, value: Any) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    # 1e3 is a common way to write 1000.
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and float(value).is_integer()
    ):
        return int(float(value))
    raise SearchSpaceError(
        f"{where}: {name} must be an integer, got {type(value).__name__} ({value!r})."
    )


def _check_order(where: str, lower: float, upper: float) -> None:
    if lower >= upper:
        raise SearchSpaceError(
            f"{where}: lower must be less than upper, got lower={lower!r}, upper={upper!r}."
        )


def _check_log_bounds(where: str, lower: float) -> None:
    if lower <= 0:
        raise SearchSpaceError(
            f"{where}: bounds must be greater than 0 on a log scale, got lower={lower!r}. "
            f"If you passed a log-transformed bound, pass the plain value instead."
        )


def _check_base(where: str, base: Any) -> float:
    value = _number(where, "base", base)
    if value <= 0 or value == 1:
        raise SearchSpaceError(f"{where}: base must be greater than 0 and not 1, got {base!r}.")
    return int(value) if value.is_integer() else value
