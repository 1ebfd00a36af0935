"""Ray Tune's trainable wrappers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect_tune.exceptions import ConfigError


def with_parameters(
    trainable: Callable[..., Any], **kwargs: Any
) -> Callable[[dict[str, Any]], Any]:
    """Binds extra arguments (datasets, models) to a trainable, as Ray Tune's ``with_parameters``.

    The values travel to the Dask workers with the trial (pickled); large objects are better
    stored somewhere every worker can read and loaded inside the trainable.

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
