"""What an experiment shows in Prefect: artifacts on its flow run and events.

Artifacts (keys made of the experiment's name, see :func:`artifact_slug`):

- ``tune-<slug>-progress``: finished trials over the total, updated in place;
- ``tune-<slug>-leaderboard``: a table of the best trials, a new version every ``interval_s``
  at most and at the end;
- ``tune-<slug>-summary``: markdown, the best trial, its config and metrics, its checkpoint and
  the trials' counts by status (at the end).

Events (``prefect.events.emit_event``), on the resource ``prefect-tune.experiment.<name>``
with the flow run related (role ``flow-run``): ``prefect-tune.experiment.started``,
``.best-updated`` (at most every ``interval_s``), ``.completed`` and ``.failed``.

Everything is published from one background thread of the driver (the trials never wait for
it); the latest snapshot wins. A failure to publish (the API down) is logged once, as a
warning, and never fails the experiment. No URL carries credentials (:func:`public_url`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prefect_tune.engine import Progress
from prefect_tune.state import PackedSummary, TrialStatus, TrialSummary
from prefect_tune.storage import Storage, layout, redact

logger = logging.getLogger("prefect_tune")

EVENT_PREFIX = "prefect-tune.experiment"
STARTED = f"{EVENT_PREFIX}.started"
COMPLETED = f"{EVENT_PREFIX}.completed"
FAILED = f"{EVENT_PREFIX}.failed"
BEST_UPDATED = f"{EVENT_PREFIX}.best-updated"

#: Rows of the leaderboard at most.
LEADERBOARD_ROWS = 100
#: Seconds the end of a run waits for the last artifacts to be published, at most.
FLUSH_TIMEOUT_S = 15.0

_NOT_KEY = re.compile(r"[^a-z0-9]+")


def artifact_slug(name: str) -> str:
    """``name`` as a part of a Prefect artifact key (lower-case letters, digits, dashes).

    A name that is not a slug already gets a short hash of itself appended, so that two names
    that map to the same letters (``"My_Exp"``, ``"my.exp"``) keep distinct keys.

    Examples:
        >>> artifact_slug("digits-2")
        'digits-2'
        >>> artifact_slug("My_Exp")
        'my-exp-a7c302'
    """
    slug = _NOT_KEY.sub("-", name.lower()).strip("-")[:60].strip("-") or "experiment"
    if slug == name:
        return slug
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def artifact_keys(name: str) -> dict[str, str]:
    """The keys of an experiment's artifacts: ``progress``, ``leaderboard``, ``summary``."""
    slug = artifact_slug(name)
    return {kind: f"tune-{slug}-{kind}" for kind in ("progress", "leaderboard", "summary")}


def public_url(url: str) -> str:
    """``url`` without what may be a credential: its user info and secret-looking query pairs.

    Examples:
        >>> public_url("s3://AKIA:secret@bucket/tune?token=abc")
        's3://bucket/tune?token=***'
        >>> public_url("/data/tune")
        '/data/tune'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.scheme and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        url = urlunsplit(parts)
    return redact(url)


def experiment_resource(name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{EVENT_PREFIX}.{name}", "prefect.resource.name": name}


def emit(
    event: str,
    name: str,
    flow_run_id: str | None,
    payload: Mapping[str, Any],
) -> None:
    """Emits ``event`` about experiment ``name``; never raises."""
    try:
        from prefect.events import emit_event

        related = (
            [
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                    "prefect.resource.role": "flow-run",
                }
            ]
            if flow_run_id
            else []
        )
        emit_event(
            event=event,
            resource=experiment_resource(name),
            related=related,
            payload=dict(payload),
        )
    except Exception as exc:
        logger.warning("Could not emit the event %s of experiment %r: %s", event, name, exc)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def checkpoint_uri(storage: Storage, trial: TrialSummary) -> str | None:
    if trial.checkpoint is None:
        return None
    return public_url(storage.uri(f"{layout.trial_dir(trial.dir_name)}/{trial.checkpoint}"))


class PrefectUIObserver:
    """Publishes an experiment's progress as artifacts and events of its flow run.

    Args:
        name: The experiment's name.
        storage: The experiment's storage (for checkpoint URIs; shown without credentials).
        flow_run_id: The experiment's flow run.
        artifacts: Whether to publish artifacts (``RunConfig(artifacts=...)``).
        interval_s: The least time between two leaderboards, or two best-updated events.
    """

    def __init__(
        self,
        name: str,
        storage: Storage,
        flow_run_id: str | None,
        *,
        artifacts: bool = True,
        interval_s: float = 10.0,
    ):
        self.name = name
        self.storage = storage
        self.flow_run_id = flow_run_id
        self.artifacts = artifacts
        self.interval_s = interval_s
        self.keys = artifact_keys(name)
        self._progress_id: uuid.UUID | None = None
        self._best: tuple[str | None, float | None] = (None, None)
        self._warned = False
        self._queue: queue.Queue[tuple[Progress, list[TrialSummary]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.last_progress: Progress | None = None
        self.last_trials: list[TrialSummary] = []

    # -- the driver's side: quick -------------------------------------------------------------

    def on_progress(
        self, progress: Progress, trials: Callable[[], Sequence[PackedSummary]]
    ) -> None:
        rows = [t.unpack() for t in trials()]
        self.last_progress, self.last_trials = progress, rows
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._publish_loop, name="prefect-tune-ui", daemon=True
            )
            self._thread.start()
        # Latest wins: drop what the thread has not taken yet.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put((progress, rows))
        if progress.done:
            self._queue.put(None)
            self._thread.join(FLUSH_TIMEOUT_S)

    # -- the background thread ----------------------------------------------------------------

    def _publish_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            progress, rows = item
            try:
                self._publish(progress, rows)
            except Exception as exc:
                self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "Could not publish the progress of experiment %r to Prefect (%s); the "
                "experiment goes on, and this is not logged again.",
                self.name,
                redact(f"{type(exc).__name__}: {exc}"),
            )

    def _publish(self, progress: Progress, rows: list[TrialSummary]) -> None:
        if (
            progress.best_trial_id is not None
            and (
                progress.best_trial_id,
                progress.best_value,
            )
            != self._best
        ):
            self._best = (progress.best_trial_id, progress.best_value)
            best = next((t for t in rows if t.trial_id == progress.best_trial_id), None)
            emit(
                BEST_UPDATED,
                self.name,
                self.flow_run_id,
                {
                    "metric": progress.metric,
                    "mode": progress.mode,
                    "best_trial_id": progress.best_trial_id,
                    "best_metric_value": progress.best_value,
                    "checkpoint_uri": checkpoint_uri(self.storage, best) if best else None,
                },
            )
        if not self.artifacts:
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

        flow_run = uuid.UUID(self.flow_run_id) if self.flow_run_id else None
        fraction = 100.0 * progress.finished / progress.total if progress.total else 0.0
        with get_client(sync_client=True) as client:
            if self._progress_id is None:
                self._progress_id = client.create_artifact(
                    ArtifactCreate(
                        key=self.keys["progress"],
                        type="progress",
                        data=fraction,
                        description=f"Trials of experiment {self.name!r} finished.",
                        flow_run_id=flow_run,
                    )
                ).id
            else:
                client.update_artifact(self._progress_id, ArtifactUpdate(data=fraction))
            client.create_artifact(
                ArtifactCreate(
                    key=self.keys["leaderboard"],
                    type="table",
                    data=json.dumps(self.leaderboard(progress, rows), default=str),
                    description=f"The best trials of experiment {self.name!r}.",
                    flow_run_id=flow_run,
                )
            )
            if progress.done:
                client.create_artifact(
                    ArtifactCreate(
                        key=self.keys["summary"],
                        type="markdown",
                        data=self.summary(progress, rows),
                        description=f"The outcome of experiment {self.name!r}.",
                        flow_run_id=flow_run,
                    )
                )

    # -- what is shown --------------------------------------------------------------------------

    def _ranked(self, progress: Progress, rows: list[TrialSummary]) -> list[TrialSummary]:
        metric, sign = progress.metric, (1.0 if progress.mode == "max" else -1.0)

        def key(trial: TrialSummary) -> tuple[int, float, int]:
            value = _number((trial.last_result or {}).get(metric)) if metric else None
            return (0 if value is not None else 1, -sign * (value or 0.0), trial.index)

        return sorted(rows, key=key)

    def leaderboard(self, progress: Progress, rows: list[TrialSummary]) -> list[dict[str, Any]]:
        """The best trials (at most `LEADERBOARD_ROWS`), best first, as table rows."""
        metric = progress.metric
        table = []
        for trial in self._ranked(progress, rows)[:LEADERBOARD_ROWS]:
            result = trial.last_result or {}
            table.append(
                {
                    "trial_id": trial.trial_id,
                    "status": trial.status.value,
                    "config": json.dumps(trial.config, default=str, sort_keys=True),
                    f"last {metric}" if metric else "last result": (
                        _number(result.get(metric)) if metric else None
                    ),
                    "iterations": result.get("training_iteration"),
                    "checkpoint_uri": checkpoint_uri(self.storage, trial),
                }
            )
        return table

    def summary(self, progress: Progress, rows: list[TrialSummary]) -> str:
        """The markdown summary of the run."""
        lines = [f"# Experiment `{self.name}`", ""]
        lines.append(f"Stored at `{public_url(self.storage.url)}`.")
        lines.append("")
        counts = ", ".join(
            f"{status.value}: {progress.counts.get(status, 0)}"
            for status in TrialStatus
            if progress.counts.get(status, 0)
        )
        lines += [
            f"**Trials** ({progress.finished}/{progress.total or '?'} finished): {counts}",
            "",
        ]
        best = next((t for t in rows if t.trial_id == progress.best_trial_id), None)
        if best is None:
            lines.append("No trial has finished with a value of the metric.")
            return "\n".join(lines)
        uri = checkpoint_uri(self.storage, best)
        lines += [
            f"## Best trial `{best.trial_id}` ({progress.metric}={progress.best_value:.6g}, "
            f"mode {progress.mode})",
            "",
            f"**Checkpoint**: `{uri}`" if uri else "**Checkpoint**: none",
            "",
            "| config | value |",
            "|---|---|",
            *(f"| {k} | `{v!r}` |" for k, v in sorted(best.config.items())),
            "",
            "| metric | last value |",
            "|---|---|",
            *(
                f"| {k} | {v!r} |"
                for k, v in sorted((best.last_result or {}).items())
                if isinstance(v, (int, float, str)) and len(str(v)) < 200
            ),
        ]
        return "\n".join(lines)

    def outcome(self) -> dict[str, Any]:
        """The payload of the completed event, from the last snapshot."""
        progress, rows = self.last_progress, self.last_trials
        best = None
        if progress is not None:
            best = next((t for t in rows if t.trial_id == progress.best_trial_id), None)
        return {
            "experiment_uri": public_url(self.storage.url),
            "metric": progress.metric if progress else None,
            "mode": progress.mode if progress else None,
            "best_trial_id": progress.best_trial_id if progress else None,
            "best_metric_value": progress.best_value if progress else None,
            "checkpoint_uri": checkpoint_uri(self.storage, best) if best else None,
            "num_trials": len(rows),
            "num_errored": sum(t.status is TrialStatus.ERROR for t in rows),
        }


__all__ = [
    "BEST_UPDATED",
    "COMPLETED",
    "FAILED",
    "STARTED",
    "PrefectUIObserver",
    "artifact_keys",
    "artifact_slug",
    "emit",
    "public_url",
]
