"""`ExperimentStore`: reading and writing one stored experiment, through :class:`Storage`.

Who writes what: the driver writes ``experiment.json`` and ``experiment_state.json``; a trial's
worker writes everything below that trial's directory. Each file is written whole and atomically,
so a crash at any instant leaves every file either as it was or as it was meant to be.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from prefect_tune.exceptions import ExperimentNotFoundError, IncompleteCheckpointError, StateError
from prefect_tune.state._models import (
    CheckpointRecord,
    ExperimentDefinition,
    ExperimentState,
    TrialState,
    load_document,
)
from prefect_tune.storage import Storage, layout


class ExperimentStore:
    """One experiment's stored files. Safe to use from several threads.

    Args:
        storage: A Storage rooted at the experiment's directory (``<storage_path>/<name>``).
    """

    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def uri(self) -> str:
        return self.storage.url

    # -- experiment level ------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether an experiment definition is stored here."""
        return self.storage.exists(layout.EXPERIMENT_FILE)

    def read_definition(self) -> ExperimentDefinition:
        """Raises ExperimentNotFoundError when no experiment is stored here."""
        try:
            raw = self.storage.read_json(layout.EXPERIMENT_FILE)
        except FileNotFoundError as exc:
            raise ExperimentNotFoundError(
                f"No experiment is stored at {self.uri} (no {layout.EXPERIMENT_FILE})."
            ) from exc
        return load_document(ExperimentDefinition, raw, self.storage.uri(layout.EXPERIMENT_FILE))

    def write_definition(self, definition: ExperimentDefinition) -> None:
        self.storage.write_bytes(layout.EXPERIMENT_FILE, definition.model_dump_json().encode())

    def read_state(self) -> ExperimentState | None:
        """The driver's last snapshot, or None before the first one."""
        try:
            raw = self.storage.read_bytes(layout.EXPERIMENT_STATE_FILE)
        except FileNotFoundError:
            return None
        return load_document(
            ExperimentState, json.loads(raw), self.storage.uri(layout.EXPERIMENT_STATE_FILE)
        )

    def write_state(self, state: ExperimentState) -> None:
        state.updated_at = time.time()
        self.storage.write_bytes(layout.EXPERIMENT_STATE_FILE, state.model_dump_json().encode())

    def load_trials(self) -> tuple[ExperimentState | None, list[TrialState]]:
        """Every trial of the experiment, newest knowledge first.

        Reads the snapshot, then only the ``trial.json`` of trials the snapshot does not show as
        finished (and of trials it does not know), so restoring a mostly finished experiment
        reads a handful of small files.
        """
        state = self.read_state()
        known: dict[str, TrialState] = {t.dir_name: t for t in (state.trials if state else [])}
        for dir_name in self.storage.list_dir(layout.TRIALS_DIR):
            snapshot = known.get(dir_name)
            if snapshot is not None and snapshot.status.is_finished():
                continue
            stored = self.read_trial(dir_name)
            if stored is not None:
                known[dir_name] = stored
        trials = sorted(known.values(), key=lambda t: t.index)
        return state, trials

    # -- trial level ---------------------------------------------------------------------------

    def read_trial(self, dir_name: str) -> TrialState | None:
        """A trial's own state, or None if it never started."""
        rel = layout.trial_file(dir_name)
        try:
            raw = self.storage.read_json(rel)
        except FileNotFoundError:
            return None
        return load_document(TrialState, raw, self.storage.uri(rel))

    def write_trial(self, trial: TrialState) -> None:
        trial.updated_at = time.time()
        self.storage.write_bytes(
            layout.trial_file(trial.dir_name), trial.model_dump_json().encode()
        )

    def write_trial_text(self, dir_name: str, name: str, text: str) -> None:
        """A small text file beside the trial's state (``error.txt``)."""
        self.storage.write_bytes(f"{layout.trial_dir(dir_name)}/{name}", text.encode())

    def read_trial_text(self, dir_name: str, name: str) -> str | None:
        try:
            return self.storage.read_bytes(f"{layout.trial_dir(dir_name)}/{name}").decode()
        except FileNotFoundError:
            return None

    def delete_trial_outputs(self, dir_name: str) -> None:
        """Deletes a trial's results and checkpoints, for a restart from scratch."""
        for name in self.storage.list_dir(layout.trial_dir(dir_name)):
            if name != layout.TRIAL_FILE:
                self.storage.delete(f"{layout.trial_dir(dir_name)}/{name}")

    # -- results ---------------------------------------------------------------------------------

    def write_results(
        self, dir_name: str, attempt: int, seq: int, rows: list[dict[str, Any]]
    ) -> None:
        """Writes one segment of reported results (one JSON object a line)."""
        body = "".join(
            json.dumps(row, allow_nan=True, separators=(",", ":")) + "\n" for row in rows
        )
        self.storage.write_bytes(layout.result_segment(dir_name, attempt, seq), body.encode())

    def read_history(self, trial: TrialState) -> list[dict[str, Any]]:
        """The trial's reported results, each ``training_iteration`` once, in order.

        An attempt that resumed from a checkpoint at iteration ``k`` supersedes every row an
        earlier attempt reported after ``k``: the history is what one uninterrupted run would
        have reported.
        """
        segments: dict[int, list[tuple[int, str]]] = {}
        for name in self.storage.list_dir(layout.results_dir(trial.dir_name)):
            parsed = layout.parse_result_segment(name)
            if parsed is not None:
                segments.setdefault(parsed[0], []).append((parsed[1], name))
        start_of = {a.attempt: a.start_iteration for a in trial.attempts}
        rows: dict[int, dict[str, Any]] = {}
        for attempt in sorted(segments):
            start = start_of.get(attempt, 0)
            for it in [it for it in rows if it > start]:
                del rows[it]
            for _, name in sorted(segments[attempt]):
                data = self.storage.read_bytes(f"{layout.results_dir(trial.dir_name)}/{name}")
                for line in data.decode().splitlines():
                    if line.strip():
                        row = json.loads(line)
                        rows[int(row.get("training_iteration", len(rows) + 1))] = row
        return [rows[it] for it in sorted(rows)]

    # -- checkpoints -----------------------------------------------------------------------------

    def upload_checkpoint(self, dir_name: str, index: int, local_dir: str) -> tuple[str, int]:
        """Uploads a local checkpoint directory and commits it by writing its manifest last.

        Returns:
            The checkpoint's directory name and its size in bytes.
        """
        files: dict[str, int] = {}
        for parent, _, names in os.walk(local_dir):
            for name in names:
                full = os.path.join(parent, name)
                rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
                if rel == layout.MANIFEST_FILE:
                    continue
                files[rel] = os.path.getsize(full)
        target = layout.checkpoint_dir(dir_name, index)
        # A partial directory of the same name (a crash mid-upload) was removed when this
        # attempt began; stray files would be ignored anyway, since readers go by the manifest.
        self.storage.put_files(
            (os.path.join(local_dir, *rel.split("/")), f"{target}/{rel}") for rel in files
        )
        manifest = {"schema_version": 1, "files": files, "committed_at": time.time()}
        self.storage.write_json(layout.manifest_file(target), manifest)
        return layout.checkpoint_name(index), sum(files.values())

    def read_manifest(self, checkpoint_rel: str) -> dict[str, int]:
        """The files of a committed checkpoint; IncompleteCheckpointError if it never committed."""
        try:
            manifest = self.storage.read_json(layout.manifest_file(checkpoint_rel))
        except FileNotFoundError as exc:
            raise IncompleteCheckpointError(
                f"{self.storage.uri(checkpoint_rel)} has no manifest: it was never committed."
            ) from exc
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise StateError(f"The manifest of {self.storage.uri(checkpoint_rel)} is damaged.")
        return {str(k): int(v) for k, v in files.items()}

    def delete_checkpoints(self, dir_name: str, records: Iterable[CheckpointRecord]) -> None:
        for record in records:
            self.storage.delete(f"{layout.trial_dir(dir_name)}/{record.dir_name}")

    def remove_uncommitted_checkpoints(self, trial: TrialState) -> list[str]:
        """Deletes checkpoint directories of ``trial`` that its state does not list as committed.

        Returns:
            The names of the directories deleted.
        """
        kept = {c.dir_name for c in trial.checkpoints}
        removed = []
        for name in self.storage.list_dir(layout.trial_dir(trial.dir_name)):
            if layout.parse_checkpoint_name(name) is not None and name not in kept:
                self.storage.delete(f"{layout.trial_dir(trial.dir_name)}/{name}")
                removed.append(name)
        return removed
