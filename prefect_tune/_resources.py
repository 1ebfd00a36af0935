"""What a trial asks of the worker that runs it: Ray Tune's resource requests as Dask resources.

Dask worker resources are labels: a worker is started with them (``dask worker ... --resources
"GPU=1"``) and a task that asks for them (``client.submit(..., resources={"GPU": 1})``) runs only
on a worker that has them, and only as many at once as its amounts allow. A task whose request
no worker has waits forever, so the driver checks the cluster before any trial runs
(`check_workers`).

The request lives on the trainable (an attribute `with_resources` sets, which
``functools.wraps`` copies to a wrapper such as `with_parameters`'), and travels to the executor
with each trial's request, which holds the trainable.

Examples:
    >>> dask_resources({"cpu": 2, "gpu": 1, "accelerator_type:A100": 1})
    {'CPU': 2, 'GPU': 1, 'accelerator_type:A100': 1}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any

from prefect_tune.exceptions import ConfigError, ResourcesUnavailableError

__all__ = [
    "RESOURCES_ATTRIBUTE",
    "check_workers",
    "dask_resources",
    "describe",
    "slots",
    "trial_resources",
]

#: The trainable's attribute holding its Dask resource request (a dict, name -> amount).
RESOURCES_ATTRIBUTE = "__prefect_tune_resources__"

# Ray's names for its built-in resources, and the Dask resource each one becomes. Dask has no
# built-in resources: a worker has a CPU, GPU or MEMORY amount only when it is started with one.
_RAY_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "MEMORY"}


def dask_resources(resources: Mapping[str, Any]) -> dict[str, float]:
    """The Dask worker resources a Ray Tune resource request stands for.

    ``cpu``, ``gpu`` and ``memory`` (any case) become ``CPU``, ``GPU`` and ``MEMORY``; Ray's
    ``custom_resources`` dict is flattened into the rest; any other name is a custom resource,
    kept as it is. Amounts of 0 are dropped (Ray's ``{"gpu": 0}`` asks for no GPU).

    Raises:
        ConfigError: ``resources`` is not a dict of names to non-negative numbers.
    """
    if not isinstance(resources, Mapping):
        raise ConfigError(
            "with_resources: resources must be a dict such as {'gpu': 1}, got "
            f"{type(resources).__name__} (placement groups and functions of the config are "
            "not supported)."
        )
    flat: dict[str, Any] = {}
    for name, amount in resources.items():
        if name == "custom_resources" and isinstance(amount, Mapping):
            flat.update(amount)
        else:
            flat[name] = amount
    mapped: dict[str, float] = {}
    for name, amount in flat.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"with_resources: resource names must be strings, got {name!r}.")
        value: float = -1.0
        if isinstance(amount, Real) and not isinstance(amount, bool):
            value = int(amount) if isinstance(amount, Integral) else float(amount)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"with_resources: the amount of {name!r} must be a number >= 0, got {amount!r}."
            )
        dask_name = _RAY_NAMES.get(name.lower(), name)
        if dask_name in mapped:
            raise ConfigError(f"with_resources: {name!r} is given twice (as {dask_name}).")
        if value > 0:
            mapped[dask_name] = value
    return mapped


def trial_resources(trainable: Callable[..., Any]) -> dict[str, float]:
    """The Dask resources each trial of ``trainable`` asks for (empty: none)."""
    return dict(getattr(trainable, RESOURCES_ATTRIBUTE, None) or {})


def describe(resources: Mapping[str, float]) -> str:
    """``GPU=1, MEMORY=1e9``, as ``dask worker --resources`` spells them (without spaces)."""
    return ",".join(f"{name}={_number(amount)}" for name, amount in resources.items())


def _number(amount: float) -> str:
    return str(int(amount)) if float(amount).is_integer() else repr(amount)


def _fits(have: Mapping[str, float], need: Mapping[str, float]) -> int:
    """How many tasks asking for ``need`` a worker with ``have`` runs at once."""
    return min((int(have.get(name, 0) // amount) for name, amount in need.items()), default=1 << 30)


def slots(workers: Mapping[str, Mapping[str, Any]], need: Mapping[str, float]) -> int:
    """How many trials asking for ``need`` the cluster runs at once: per worker, the fewer of
    its threads and of what its resources allow.

    Args:
        workers: ``client.scheduler_info(n_workers=-1)["workers"]``: address -> info with
            ``nthreads`` and ``resources``.
        need: The trial's resources.
    """
    return sum(
        min(int(info.get("nthreads", 1)), _fits(info.get("resources") or {}, need))
        for info in workers.values()
    )


def check_workers(
    workers: Mapping[str, Mapping[str, Any]], need: Mapping[str, float], scheduler: str
) -> None:
    """Raises unless some worker has every resource of ``need``, in the amounts asked.

    Args:
        workers: As for `slots`. No worker at all passes (an adaptive cluster starts them as
            trials wait).
        need: The trial's resources.
        scheduler: The scheduler's address, for the message.

    Raises:
        ResourcesUnavailableError: naming what the trials ask, what each worker has, and how
            to start a worker with it.
    """
    if not need or not workers or slots(workers, need) > 0:
        return
    shown = sorted(workers.items())[:8]
    have = "; ".join(
        f"{address} has {describe(info.get('resources') or {}) or 'no resources'}"
        for address, info in shown
    )
    if len(workers) > len(shown):
        have += f"; and {len(workers) - len(shown)} more"
    asked = describe(need)
    as_dict = ", ".join(f"{name!r}: {_number(amount)}" for name, amount in need.items())
    raise ResourcesUnavailableError(
        f"Trials ask for {asked} (with_resources), but none of the {len(workers)} workers of "
        f"the Dask cluster at {scheduler} has that ({have}); Dask would keep every trial "
        f'waiting. Start workers with the resources: `dask worker {scheduler} --resources "'
        f'{asked}"`, or for a cluster that DaskTaskRunner starts, '
        f"cluster_kwargs={{'resources': {{{as_dict}}}}} (LocalCluster) or the cluster's own "
        "option for worker resources (dask-jobqueue: worker_extra_args=['--resources', "
        f"'{asked}'])."
    )
