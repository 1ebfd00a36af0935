"""Ray Tune's trainable wrappers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect_tune._resources import RESOURCES_ATTRIBUTE, dask_resources
from prefect_tune.exceptions import ConfigError


def with_parameters(
    trainable: Callable[..., Any], **kwargs: Any
) -> Callable[[dict[str, Any]], Any]:
    """Binds extra arguments (datasets, models) to a trainable, as Ray Tune's ``with_parameters``.

    The values travel to the Dask workers with the trial (pickled); large objects are better
    stored somewhere every worker can read and loaded inside the trainable. A resource request
    made with `with_resources` is kept, whichever of the two wraps the other.

    Examples:
        >>> def train_fn(config, data):
        ...     return {"n": len(data)}
        >>> wrapped = with_parameters(train_fn, data=[1, 2, 3])
        >>> wrapped({})
        {'n': 3}
    """
    if not callable(trainable):
        raise ConfigError(
            f"with_parameters: trainable must be callable, got {type(trainable).__name__}."
        )
    if isinstance(trainable, type):
        raise ConfigError("with_parameters: class trainables are not supported; pass a function.")

    @functools.wraps(trainable)
    def bound(config: dict[str, Any]) -> Any:
        return trainable(config, **kwargs)

    return bound


def with_resources(
    trainable: Callable[..., Any], resources: dict[str, float]
) -> Callable[..., Any]:
    """Asks for Dask worker resources for every trial of ``trainable``, as Ray Tune's
    ``tune.with_resources``.

    Ray's ``cpu``, ``gpu`` and ``memory`` become the Dask resources ``CPU``, ``GPU`` and
    ``MEMORY``; any other name is a custom resource, kept as it is. Dask resources are labels
    that workers are started with (``dask worker tcp://scheduler:8786 --resources "GPU=1"``):
    a trial then runs only on a worker that has them, and as many at once as the amounts
    allow. ``fit()`` raises ``ResourcesUnavailableError`` before any trial runs when no worker
    of the cluster has them. Dask does not see the hardware: a worker started with ``GPU=1``
    runs one such trial at a time, whether it has a GPU or not.

    Args:
        trainable: The trainable, possibly wrapped by `with_parameters`.
        resources: Resource name -> amount per trial, such as ``{"gpu": 1}``.

    Returns:
        The trainable, wrapped; the original is left untouched.

    Raises:
        ConfigError: ``trainable`` is not a function, or ``resources`` is not a dict of names
            to non-negative numbers.

    Examples:
        >>> def train_fn(config):
        ...     return None
        >>> wrapped = with_resources(train_fn, {"gpu": 1})
        >>> wrapped.__prefect_tune_resources__
        {'GPU': 1}
    """
    if not callable(trainable) or isinstance(trainable, type):
        raise ConfigError(
            "with_resources: trainable must be a function, got "
            f"{getattr(trainable, '__name__', type(trainable).__name__)}."
        )
    mapped = dask_resources(resources)

    @functools.wraps(trainable)
    def requesting(*args: Any, **kwargs: Any) -> Any:
        return trainable(*args, **kwargs)

    setattr(requesting, RESOURCES_ATTRIBUTE, mapped)
    return requesting
