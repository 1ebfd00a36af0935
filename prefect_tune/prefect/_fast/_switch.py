"""The one switch between the fast path and Prefect's plain path.

It imports nothing of Prefect's internals until the fast path is chosen: a Prefect release
without them is the plain path, not an ImportError of prefect-tune.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import prefect
from distributed import Client

from prefect_tune._settings import TuneSettings

if TYPE_CHECKING:
    from prefect_tune.prefect._fast._dispatch import FastDispatch

logger = logging.getLogger("prefect_tune")

#: The Prefect release the fast path's copy of Prefect code and its digest were checked against.
CHECKED_PREFECT_VERSION = "3.9.1"

_LOGGED: set[str] = set()  # why this process took the plain path, once each


def _log_once(level: int, message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.log(level, message)


def _unknown_prefect(why: str) -> None:
    _log_once(
        logging.WARNING,
        f"Prefect {prefect.__version__} is not the release prefect-tune's fast trial dispatch "
        f"was checked against (Prefect {CHECKED_PREFECT_VERSION}): {why}. Trials go through "
        "Prefect's task_runner.submit instead, which works the same with more overhead per "
        "trial (a few hundred ms).",
    )


def fast_dispatch(
    client: Client, settings: TuneSettings, experiment_name: str, tags: tuple[str, ...] = ()
) -> FastDispatch | None:
    """The fast path for the trials of an experiment on ``client``'s Dask cluster, or None
    where they take Prefect's plain path (``task_runner.submit``).

    The plain path is taken when ``settings.fast_trial_dispatch`` is false
    (``PREFECT_TUNE_FAST_TRIAL_DISPATCH=false``), or when the installed Prefect's code that the
    fast path copies or relies on differs from the code it was written against (another Prefect
    release); either reason is logged once per process. Decided on the driver, inside the
    running experiment flow: workers run what they are sent.
    """
    if not settings.fast_trial_dispatch:
        _log_once(
            logging.INFO,
            "PREFECT_TUNE_FAST_TRIAL_DISPATCH is false: trials go through Prefect's "
            "task_runner.submit.",
        )
        return None
    try:
        from prefect_tune.prefect._fast._dispatch import FastDispatch
        from prefect_tune.prefect._fast._engine import internals_are_known
    except ImportError as exc:  # a Prefect internal moved or is gone
        _unknown_prefect(f"{exc}")
        return None
    if not internals_are_known():
        _unknown_prefect("its task engine or run contexts differ")
        return None
    return FastDispatch(client, experiment_name, tags)


__all__ = ["CHECKED_PREFECT_VERSION", "fast_dispatch"]
