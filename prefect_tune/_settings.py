"""prefect-tune's own settings, read from ``PREFECT_TUNE_*`` environment variables.

Every setting is read here and only here, by `get_settings`, in the driver's process; what a
Dask worker needs of them travels with the trials the driver sends it.

Examples:
    Trials through Prefect's plain ``task_runner.submit``, for one run::

        PREFECT_TUNE_FAST_TRIAL_DISPATCH=false python my_tuning_flow.py
"""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefect_tune.exceptions import ConfigError

ENV_PREFIX = "PREFECT_TUNE_"


class TuneSettings(BaseSettings):
    """prefect-tune's settings; each field ``name`` is read from ``PREFECT_TUNE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    fast_trial_dispatch: bool = Field(
        default=True,
        description=(
            "Trials on a DaskTaskRunner go straight to the Dask cluster and reuse Prefect's run "
            "context per worker process (tens of milliseconds of overhead per trial instead of "
            "hundreds). This relies on Prefect internals, used only with a Prefect release whose "
            "internals prefect-tune knows; false sends every trial through Prefect's own "
            "task_runner.submit."
        ),
    )


def get_settings() -> TuneSettings:
    """The settings as the environment gives them now.

    Raises:
        ConfigError: a ``PREFECT_TUNE_*`` variable holds a value its setting does not accept
            (the message names the variable).
    """
    try:
        return TuneSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'_'.join(map(str, error['loc'])).upper()}={error['input']!r}: "
            f"{error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"Invalid prefect-tune setting: {problems}.") from exc


__all__ = ["TuneSettings", "get_settings"]
