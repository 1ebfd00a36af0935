"""Crash recovery for deployed experiments: bounded automatic re-runs after a CRASHED run.

A deployment trigger (``deployments/prefect.yaml``) runs the tuning deployment again with the same
parameters when one of its runs enters CRASHED; that run resumes the experiment from storage. The
flow calls :func:`refuse_crash_loop` first, so after ``max_crashes`` crashed runs in a row of the
same experiment the next run fails with :class:`~prefect_tune.exceptions.CrashLoopError` (FAILED,
not CRASHED, so the trigger does not fire again) and says why.
"""

from __future__ import annotations

import datetime as dt
import uuid

from prefect_tune.exceptions import ConfigError, CrashLoopError

__all__ = ["consecutive_crashes", "refuse_crash_loop", "resolve_name"]


def resolve_name(name: str, when: dt.datetime | None) -> str:
    """The experiment name with ``{date}`` replaced by the UTC date of ``when`` (``YYYY-MM-DD``).

    A nightly deployment with ``name: digits-{date}`` makes a new experiment every night instead of
    returning the finished one; a re-run the same day (after a crash) resumes that day's.

    Raises:
        ConfigError: The name has other ``{...}`` fields, or nothing is left of it.
    """
    when = when or dt.datetime.now(dt.timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    try:
        resolved = name.format(date=when.strftime("%Y-%m-%d"))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"Experiment name {name!r}: the only template field is {{date}} ({exc!r})."
        ) from None
    if not resolved.strip():
        raise ConfigError(f"Experiment name {name!r} is empty.")
    return resolved


def consecutive_crashes(flow_run_name: str, deployment_id: str, exclude_id: str) -> int:
    """How many of the latest runs named ``flow_run_name`` of the deployment crashed in a row.

    Counts from the newest run backwards (``exclude_id``, the current run, left out) and stops at
    the first run that completed or failed, so such a run (a refusal included) resets the count.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name])),
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)])
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
        )
    crashed = 0
    for run in runs:
        if str(run.id) == str(exclude_id) or run.state is None:
            continue
        if not run.state.is_final() or run.state.is_cancelled():
            # Not finished yet (a queued re-run), or cancelled before it ran (the deployment's
            # CANCEL_NEW collision strategy): neither says anything about crashes.
            continue
        if not run.state.is_crashed():
            break
        crashed += 1
    return crashed


def refuse_crash_loop(experiment: str, max_crashes: int) -> int:
    """Raises :class:`CrashLoopError` when this deployed run follows ``max_crashes`` crashes.

    Outside a deployment (a script, a test harness) there is nothing to count: returns 0.

    Returns:
        The number of crashed runs in a row before this one.
    """
    from prefect.runtime import deployment, flow_run

    deployment_id = deployment.id
    if not deployment_id or max_crashes <= 0:
        return 0
    crashed = consecutive_crashes(flow_run.name, str(deployment_id), str(flow_run.id))
    if crashed >= max_crashes:
        raise CrashLoopError(
            f"Experiment {experiment!r}: the last {crashed} runs named {flow_run.name!r} of this "
            f"deployment crashed in a row (limit max_crash_resumes={max_crashes}); not resuming "
            "it again automatically. Look at their logs, then run the deployment by hand "
            "(it resumes from storage) or raise max_crash_resumes."
        )
    return crashed
