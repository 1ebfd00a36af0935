"""What an experiment shows in Prefect: artifacts on its flow run and events.

Artifacts (keys made of the experiment's name, see :func:`artifact_slug`):

- ``tune-<slug>-progress``: finished trials over the total, updated in place;
- ``tune-<slug>-leaderboard``: a table of the best trials (last and best value of the metric,
  the best kept by the worker in ``TrialState.best_metric``), a new version every
  ``interval_s`` at most and at the end;
- ``tune-<slug>-summary``: markdown, the best trial, its config and metrics, its checkpoint and
  the trials' counts by status (at the end).

All of them, and the completed and failed events (:func:`outcome`), describe every trial of the
experiment, those finished by earlier runs too: a restored experiment shows its whole outcome.

Events (``prefect.events.emit_event``), on the resource ``prefect-tune.experiment.<name>``
with the flow run related (role ``flow-run``): ``prefect-tune.experiment.started``,
``.best-updated`` (at most every ``interval_s``), ``.completed`` and ``.failed``.

Artifacts and best-updated events are published from one background thread of the driver (the
trials never wait for it); the latest snapshot wins, and the end of the run waits for the last
one at most `FLUSH_TIMEOUT_S`, not at all once publishing failed. A failure to publish (the API
down) is logged once, as a warning, and never fails the experiment. No URL carries credentials
(:func:`~prefect_tune.storage.public_url`).
"""

from __future__ import annotations

import contextvars
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

from prefect_tune.engine import Progress
from prefect_tune.state import PackedSummary, TrialStatus, TrialSummary
from prefect_tune.storage import Storage, layout, public_url, redact

logger = logging.getLogger("prefect_tune")

EVENT_PREFIX = "prefect-tune.experiment"
STARTED = f"{EVENT_PREFIX}.started"
COMPLETED = f"{EVENT_PREFIX}.completed"
FAILED = f"{EVENT_PREFIX}.failed"
BEST_UPDATED = f"{EVENT_PREFIX}.best-updated"

#: Rows of the leaderboard at most.
LEADERBOARD_ROWS = 100
#: Seconds the end of a run waits for the last artifacts to be published, at most.
FLUSH_TIMEOUT_S = 10.0

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
    """``value`` as a finite float, else None (bools, strings, NaN and infinities are none)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def checkpoint_uri(storage: Storage, trial: TrialSummary) -> str | None:
    """The URI of ``trial``'s latest committed checkpoint, without credentials."""
    if trial.checkpoint is None:
        return None
    return public_url(storage.uri(f"{layout.trial_dir(trial.dir_name)}/{trial.checkpoint}"))


def best_trial(
    rows: Sequence[TrialSummary], metric: str | None, mode: str | None
) -> TrialSummary | None:
    """The finished trial with the best finite last value of ``metric``, as
    ``ResultGrid.get_best_result()`` picks it; None without a metric or such a trial."""
    if metric is None or mode not in ("min", "max"):
        return None
    best: tuple[float, TrialSummary] | None = None
    for trial in rows:
        if not trial.status.is_finished():
            continue
        value = _number((trial.last_result or {}).get(metric))
        if value is None:
            continue
        if best is None or (value > best[0] if mode == "max" else value < best[0]):
            best = (value, trial)
    return best[1] if best else None


def outcome(
    storage: Storage, rows: Sequence[TrialSummary], metric: str | None, mode: str | None
) -> dict[str, Any]:
    """The payload of the completed (and failed) event: the whole experiment's outcome, every
    trial it has, those of earlier runs too."""
    best = best_trial(rows, metric, mode)
    return {
        "experiment_uri": public_url(storage.url),
        "metric": metric,
        "mode": mode,
        "best_trial_id": best.trial_id if best else None,
        "best_metric_value": _number((best.last_result or {}).get(metric or "")) if best else None,
        "checkpoint_uri": checkpoint_uri(storage, best) if best else None,
        "num_trials": len(rows),
        "num_terminated": sum(t.status is TrialStatus.TERMINATED for t in rows),
        "num_errored": sum(t.status is TrialStatus.ERROR for t in rows),
    }


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def _md(text: Any) -> str:
    """``text`` shown as itself in markdown (a table cell too): no markup, links or HTML."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))[:500]


class PrefectUIObserver:
    """Publishes an experiment's progress as artifacts and events of its flow run.

    The controller calls :meth:`on_progress` in its loop; that call only hands the snapshot to
    a background thread (started in a copy of the driver's context, so it reaches the same
    Prefect API), which publishes it. At the end of the run the driver waits for the last
    publication at most `FLUSH_TIMEOUT_S`, and not at all once publishing has failed.

    Args:
        name: The experiment's name.
        storage: The experiment's storage (for checkpoint URIs; shown without credentials).
        flow_run_id: The experiment's flow run.
        artifacts: Whether to publish artifacts (``RunConfig(artifacts=...)``); best-updated
            events are emitted either way.
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
        self._best: tuple[str, float | None] | None = None
        self._failed = threading.Event()
        self._queue: queue.Queue[tuple[Progress, list[PackedSummary]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"PrefectUIObserver({self.name!r}, artifacts={self.artifacts})"

    # -- the driver's side: quick -------------------------------------------------------------

    def on_progress(
        self, progress: Progress, trials: Callable[[], Sequence[PackedSummary]]
    ) -> None:
        rows = list(trials())  # packed: unpacked on the publishing thread
        if self._thread is None:
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run,
                args=(self._publish_loop,),
                name="prefect-tune-ui",
                daemon=True,
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
            if not self._failed.is_set():
                self._thread.join(FLUSH_TIMEOUT_S)

    # -- the background thread ----------------------------------------------------------------

    def _publish_loop(self) -> None:
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        # One retry: a server that keeps failing must not hold the last publication for
        # minutes of backoff while the driver waits for it.
        with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 1}):
            while True:
                item = self._queue.get()
                if item is None:
                    return
                progress, packed = item
                try:
                    self._publish(progress, [row.unpack() for row in packed])
                except Exception as exc:
                    self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if not self._failed.is_set():
            self._failed.set()
            logger.warning(
                "Could not publish the progress of experiment %r to Prefect (%s); the "
                "experiment goes on, and this is not logged again.",
                self.name,
                redact(f"{type(exc).__name__}: {exc}")[:500],
            )

    def _publish(self, progress: Progress, rows: list[TrialSummary]) -> None:
        best = best_trial(rows, progress.metric, progress.mode)
        if best is not None:
            value = _number((best.last_result or {}).get(progress.metric or ""))
            if self._best != (best.trial_id, value):
                self._best = (best.trial_id, value)
                emit(
                    BEST_UPDATED,
                    self.name,
                    self.flow_run_id,
                    {
                        "experiment_uri": public_url(self.storage.url),
                        "metric": progress.metric,
                        "mode": progress.mode,
                        "best_trial_id": best.trial_id,
                        "best_metric_value": value,
                        "best_config": _jsonable(best.config),
                        "checkpoint_uri": checkpoint_uri(self.storage, best),
                    },
                )
        if not self.artifacts:
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

        flow_run = uuid.UUID(self.flow_run_id) if self.flow_run_id else None
        fraction = 100.0 * progress.finished / progress.total if progress.total else 0.0
        if progress.done and progress.total is None:
            fraction = 100.0
        with get_client(sync_client=True) as client:
            if self._progress_id is None:
                self._progress_id = client.create_artifact(
                    ArtifactCreate(
                        key=self.keys["progress"],
                        type="progress",
                        data=fraction,
                        description=_md(f"Trials of experiment {self.name} finished (%)."),
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
                    description=_md(
                        f"The best trials of experiment {self.name} by their last "
                        f"{progress.metric or 'result'} ({progress.mode or 'no mode'}), "
                        f"at most {LEADERBOARD_ROWS}."
                    ),
                    flow_run_id=flow_run,
                )
            )
            if progress.done:
                client.create_artifact(
                    ArtifactCreate(
                        key=self.keys["summary"],
                        type="markdown",
                        data=self.summary(progress, rows),
                        description=_md(f"The outcome of experiment {self.name}."),
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
        """The best trials (at most `LEADERBOARD_ROWS`) by their last value of the metric,
        best first, as table rows: ``trial_id``, ``status``, ``config``, ``last_<metric>``,
        ``best_<metric>``, ``iterations``, ``checkpoint_uri``."""
        metric = progress.metric or "metric"
        table = []
        for trial in self._ranked(progress, rows)[:LEADERBOARD_ROWS]:
            result = trial.last_result or {}
            iterations = result.get("training_iteration")
            table.append(
                {  # the long columns last: the UI's table scrolls sideways
                    "trial_id": trial.trial_id,
                    "status": trial.status.value,
                    f"last_{metric}": _number(result.get(metric)),
                    # Read from storage: a NaN there would make the table invalid JSON.
                    f"best_{metric}": _number(trial.best_metric),
                    "iterations": iterations if isinstance(iterations, int) else None,
                    "config": json.dumps(_jsonable(trial.config), sort_keys=True)[:1000],
                    "checkpoint_uri": checkpoint_uri(self.storage, trial),
                }
            )
        return table

    def summary(self, progress: Progress, rows: list[TrialSummary]) -> str:
        """The markdown summary of the experiment, every trial of it (earlier runs' too)."""
        lines = [f"# Experiment {_md(self.name)}", ""]
        lines += [f"Stored at `{_code(public_url(self.storage.url))}`.", ""]
        counts = {status: sum(t.status is status for t in rows) for status in TrialStatus}
        lines += [
            f"**Trials**: {len(rows)}"
            + (f" of {progress.total}" if progress.total is not None else ""),
            "",
            "| status | trials |",
            "|---|---|",
            *(f"| {status.value} | {n} |" for status, n in counts.items() if n),
            "",
        ]
        best = best_trial(rows, progress.metric, progress.mode)
        if best is None:
            lines.append("No finished trial has a value of the metric.")
            return "\n".join(lines)
        uri = checkpoint_uri(self.storage, best)
        value = _number((best.last_result or {}).get(progress.metric or ""))
        lines += [
            f"## Best trial {_md(best.trial_id)}",
            "",
            f"{_md(progress.metric)} = **{value:.6g}** (mode {_md(progress.mode)}, its last "
            f"result; best {_md(progress.metric)} in its history "
            f"{'unknown' if (top := _number(best.best_metric)) is None else format(top, '.6g')})",
            "",
            # A code span as the label: the UI shows a link's label without its escapes.
            f"**Checkpoint**: [`{_code(uri)}`]({_link(uri)})" if uri else "**Checkpoint**: none",
            "",
            "| config | value |",
            "|---|---|",
            *(
                f"| {_md(k)} | {_md(json.dumps(_jsonable(v)))} |"
                for k, v in sorted(best.config.items())
            ),
            "",
            "| metric | last value |",
            "|---|---|",
            *(
                f"| {_md(k)} | {_md(v)} |"
                for k, v in sorted((best.last_result or {}).items())
                if isinstance(v, (int, float, str)) and len(str(v)) < 200
            ),
        ]
        return "\n".join(lines)


def _code(text: str) -> str:
    return text.replace("`", "'")


def _link(uri: str) -> str:
    """``uri`` as a markdown link target (no spaces or parentheses to end it early)."""
    return uri.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would carry it (unknown objects by their ``str``)."""
    return json.loads(json.dumps(value, default=str))


__all__ = [
    "BEST_UPDATED",
    "best_trial",
    "outcome",
    "COMPLETED",
    "FAILED",
    "STARTED",
    "PrefectUIObserver",
    "artifact_keys",
    "artifact_slug",
    "emit",
    "public_url",
]
