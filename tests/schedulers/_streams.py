"""Replaying recorded result streams through a decision core, as the driver would."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

from prefect_tune.engine import Decision

ASSETS = pathlib.Path(__file__).with_name("assets")

Row = tuple[str, dict[str, Any]]


def curves() -> tuple[dict[str, dict[str, Any]], list[Row]]:
    """The recorded stream: configs by trial id, and (trial id, result) rows in report order."""
    document = json.loads((ASSETS / "curves.json").read_text())
    return document["configs"], [(row["trial_id"], row["result"]) for row in document["rows"]]


def replay(
    scheduler: Any,
    rows: Iterable[Row],
    stopped: set[str] | None = None,
    last: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[str, int, Decision]]:
    """Feed ``rows`` to ``scheduler``, skipping the trials it stopped, as a driver would.

    Returns:
        (trial id, training_iteration, decision) for every row fed.
    """
    stopped = set() if stopped is None else stopped
    decisions = []
    for trial_id, result in rows:
        if trial_id in stopped:
            continue
        decision = scheduler.on_trial_result(trial_id, result)
        if last is not None:
            last[trial_id] = result
        decisions.append((trial_id, result["training_iteration"], decision))
        if decision is Decision.STOP:
            stopped.add(trial_id)
            scheduler.on_trial_remove(trial_id)
    return decisions


def add_all(scheduler: Any, configs: Mapping[str, Mapping[str, Any]]) -> None:
    for trial_id, config in configs.items():
        scheduler.on_trial_add(trial_id, config)


def round_trip(document: Any) -> Any:
    """``document`` as it reads back from storage."""
    return json.loads(json.dumps(document, allow_nan=True))
