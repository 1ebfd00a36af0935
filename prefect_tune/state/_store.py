"""`ExperimentStore`: reading and writing one stored experiment, through :class:`Storage`.

Who writes what: the driver writes ``experiment.json`` and ``experiment_state.json``; a trial's
worker writes everything below that trial's directory. Each file is written whole and atomically,
so a crash at any instant leaves every file either as it was or as it was meant to be.

The snapshot ``experiment_state.json`` is one JSON object whose ``trials`` come last, one
`TrialSummary` a line::

    {"schema_version":2,"name":"exp",...,"trials":[
    {"trial_id":"abcde_00000","index":0,...},
    {"trial_id":"abcde_00001","index":1,...}
    ]}

so that a reader can take each trial's JSON as it is (a `PackedSummary`) without building every
trial's objects at once. Any other layout of the same JSON (a version 1 snapshot, a file
rewritten by hand) is read too, parsed whole.

Every state file is parsed by ``load_document_json`` (read through `read_document`; the
snapshot is split first, by `ExperimentStore._read_snapshot`), and a results segment by
`_parse_segment`: a file that is not what it must be (cut short, edited by hand) raises
:class:`~prefect_tune.exceptions.DamagedStateError` naming it and what is wrong, never a bare
JSON error.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect_tune.exceptions import (
    CheckpointError,
    DamagedStateError,
    ExperimentNotFoundError,
    StorageNotFoundError,
)
from prefect_tune.state._models import (
    CheckpointRecord,
    ExperimentDefinition,
    ExperimentState,
    PackedSummary,
    TrialState,
    _Model,
    load_document_json,
)
from prefect_tune.storage import Storage, layout

M = TypeVar("M", bound=_Model)


def read_document(storage: Storage, rel: str, model: type[M]) -> M | None:
    """Reads the state file ``rel`` as a ``model``; None when there is no such file.

    Raises:
        UnsupportedSchemaVersionError: the file is from a newer prefect-tune.
        DamagedStateError: the file is not JSON, or not a valid ``model``; the message names it.
        StorageError: the storage could not be read.
    """
    try:
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        return None
    return load_document_json(model, data, storage.uri(rel))


def _parse_segment(data: bytes, where: str) -> list[dict[str, Any]]:
    """The rows of a results segment (one JSON object a line).

    Raises:
        DamagedStateError: a line is not a JSON object with an integer ``training_iteration``.
    """
    rows: list[dict[str, Any]] = []
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError as exc:
        raise DamagedStateError(
            f"{where} is damaged: it is not UTF-8 text ({exc}).", where
        ) from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DamagedStateError(
                f"{where} is damaged: line {number} is not valid JSON ({exc}); the file was cut "
                "short or edited.",
                where,
            ) from exc
        iteration = row.get("training_iteration", 0) if isinstance(row, dict) else None
        if isinstance(iteration, bool) or not isinstance(iteration, int):
            raise DamagedStateError(
                f"{where} is damaged: line {number} is not a result (a JSON object with an "
                "integer training_iteration).",
                where,
            )
        rows.append(row)
    return rows


@dataclass(frozen=True)
class UploadedFiles:
    """The files of a checkpoint, uploaded and not yet committed."""

    dir_name: str  # the checkpoint's directory, below its trial's
    files: dict[str, int]  # relative path -> size in bytes

    @property
    def size_bytes(self) -> int:
        return sum(self.files.values())


def local_checkpoint_files(local_dir: str) -> dict[str, int]:
    """The files of a local checkpoint directory, as they are to be uploaded: relative path ->
    size in bytes.

    Every name must be one that a reader accepts (see
    :func:`~prefect_tune.storage.layout.path_problem`: no backslash or control character). A
    link to a file inside the directory counts as that file: its content is uploaded. Any
    other link (to a place outside the directory, dangling, or to a directory) and anything
    that is not a regular file (a FIFO, a socket) is refused: following it would upload what
    the trainable never put in its checkpoint (a link to ``/etc/passwd``), and skipping it
    would drop part of what it did.

    Raises:
        CheckpointError: ``local_dir`` is not a directory, holds no file (a checkpoint needs
            at least one), or holds a name, a link or a special file refused above.
    """
    if not os.path.isdir(local_dir):
        raise CheckpointError(
            f"Checkpoint {local_dir} does not exist or is not a directory: nothing to commit."
        )
    inside = os.path.realpath(local_dir).rstrip("/") + "/"

    def refuse(error: OSError) -> None:
        raise CheckpointError(f"Checkpoint {local_dir}: cannot read {error.filename}: {error}")

    files: dict[str, int] = {}
    for parent, directories, names in os.walk(local_dir, onerror=refuse):
        for name in directories:
            if os.path.islink(os.path.join(parent, name)):
                raise CheckpointError(
                    f"Checkpoint {local_dir}: {os.path.join(parent, name)} is a link to a "
                    "directory; a checkpoint holds files and directories, and links to files "
                    "inside it only: copy the directory in instead. Nothing was committed."
                )
        for name in names:
            full = os.path.join(parent, name)
            rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
            if rel == layout.MANIFEST_FILE:
                continue
            problem = layout.path_problem(rel)
            if problem is not None:  # it would make the trial's own state unreadable
                raise CheckpointError(
                    f"Checkpoint {local_dir}: the file name {rel!r} {problem} and cannot be "
                    "stored; rename it. Nothing was committed."
                )
            if os.path.islink(full):
                real = os.path.realpath(full)
                if not real.startswith(inside):
                    refused = f"a link to {real}, outside the checkpoint directory"
                elif not os.path.isfile(real):
                    refused = f"a link to {real}, which is missing or not a regular file"
                else:
                    refused = ""
                if refused:
                    raise CheckpointError(
                        f"Checkpoint {local_dir}: {full} is {refused}. A checkpoint may hold "
                        "links to its own files only: copy the file in instead. Nothing was "
                        "committed."
                    )
            elif not stat.S_ISREG(os.lstat(full).st_mode):
                raise CheckpointError(
                    f"Checkpoint {local_dir}: {full} is not a regular file; nothing was committed."
                )
            files[rel] = os.path.getsize(full)
    if not files:
        raise CheckpointError(
            f"Checkpoint {local_dir} holds no file: a checkpoint needs at least one; nothing "
            "was committed."
        )
    return files


# Reading trial files one after the other costs a round trip each on object stores; on a local
# disk, threads only contend for the GIL. Reads slower than this on average wait on a network.
_SLOW_READ_S = 0.002
_READ_THREADS = 16
_TRIALS_OPEN = b'"trials":['
_TRIALS_CLOSE = b"\n]}"


def _snapshot_chunks(header: bytes, rows: Iterable[bytes]) -> Iterator[bytes]:
    """The snapshot's bytes, a piece at a time: the header is a JSON object; the trials are its
    last member, one a line. The rows are the packed summaries' own bytes, never copied."""
    yield header[:-1]
    yield b"," + _TRIALS_OPEN + b"\n"
    first = True
    for row in rows:
        if not first:
            yield b",\n"
        first = False
        yield row
    yield _TRIALS_CLOSE if not first else _TRIALS_CLOSE[1:]


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
        """The experiment's definition.

        Raises:
            ExperimentNotFoundError: no experiment is stored here.
            UnsupportedSchemaVersionError: the definition is from a newer prefect-tune.
            DamagedStateError: ``experiment.json`` is damaged.
        """
        definition = read_document(self.storage, layout.EXPERIMENT_FILE, ExperimentDefinition)
        if definition is None:
            raise ExperimentNotFoundError(
                f"No experiment is stored at {self.uri} (no {layout.EXPERIMENT_FILE})."
            )
        return definition

    def write_definition(self, definition: ExperimentDefinition) -> None:
        self.storage.write_bytes(layout.EXPERIMENT_FILE, definition.model_dump_json().encode())

    def clear(self) -> None:
        """Deletes the stored experiment, all but the lease and the drivers' records: what the
        driver holding the lease does to overwrite the experiment.

        Each entry of the directory is deleted on its own (where directories are key prefixes,
        deleting the directory would delete the lease with it), the definition last: an
        overwrite cut short leaves an experiment that a later overwrite clears again, never
        trials without a definition.
        """
        kept = {layout.LEASE_FILE, layout.DRIVERS_DIR, layout.EXPERIMENT_FILE}
        for name in self.storage.list_dir(""):
            if name not in kept:
                self.storage.delete(name)
        self.storage.delete(layout.EXPERIMENT_FILE)

    def read_state(self) -> ExperimentState | None:
        """The driver's last snapshot, whole, or None before the first one.

        Raises:
            UnsupportedSchemaVersionError: the snapshot is from a newer prefect-tune.
            DamagedStateError: the snapshot is damaged.
        """
        return read_document(self.storage, layout.EXPERIMENT_STATE_FILE, ExperimentState)

    def write_state(
        self, state: ExperimentState, trials: Iterable[PackedSummary] | None = None
    ) -> None:
        """Writes the driver's snapshot (atomically), stamped with the time.

        Args:
            state: The snapshot.
            trials: The trials to record instead of ``state.trials`` (which must then be
                empty), already packed, in index order: the driver keeps its trials packed.
        """
        if trials is None:
            rows: Iterable[bytes] = [PackedSummary.of(t).data for t in state.trials]
        elif state.trials:
            raise ValueError("write_state: give the trials in state.trials or in trials, not both")
        else:
            rows = (t.data for t in trials)
        state.updated_at = time.time()
        header = state.model_dump_json(exclude={"trials"}).encode()
        self.storage.write_chunks(layout.EXPERIMENT_STATE_FILE, _snapshot_chunks(header, rows))

    @property
    def _state_uri(self) -> str:
        return self.storage.uri(layout.EXPERIMENT_STATE_FILE)

    def _read_snapshot(self) -> tuple[ExperimentState, list[tuple[str, PackedSummary]]] | None:
        """The snapshot with an empty ``trials``, and its trials as (directory name, packed)."""
        try:
            data = self.storage.read_bytes(layout.EXPERIMENT_STATE_FILE)
        except FileNotFoundError:
            return None
        where = self._state_uri
        first = data.find(b"\n")
        if first > 0 and data[:first].endswith(_TRIALS_OPEN) and data.endswith(_TRIALS_CLOSE):
            state = load_document_json(ExperimentState, data[:first] + b"]}", where)
            if len(data) == first + len(_TRIALS_CLOSE):
                return state, []
            # Split the file itself (the rows are its only copy) and trim the ends off.
            rows = data.split(b",\n")
            del data
            rows[0] = rows[0][first + 1 :]
            rows[-1] = rows[-1][: -len(_TRIALS_CLOSE)]
            pairs = []
            for row in rows:
                packed, dir_name = PackedSummary.from_json(row, where)
                pairs.append((dir_name, packed))
            return state, pairs
        state = load_document_json(ExperimentState, data, where)
        pairs = [(t.dir_name, PackedSummary.of(t)) for t in state.trials]
        state.trials = []
        return state, pairs

    def _load_rows(self) -> tuple[ExperimentState | None, dict[str, PackedSummary]]:
        snapshot = self._read_snapshot()
        state, pairs = snapshot if snapshot is not None else (None, [])
        rows = dict(pairs)
        del pairs
        unsure = [
            name
            for name in self.storage.list_dir(layout.TRIALS_DIR)
            if (known := rows.get(name)) is None or not known.status.is_finished()
        ]
        for name, stored in self.read_trials(unsure).items():
            if stored is not None:
                rows[name] = PackedSummary.of(stored)
        return state, dict(sorted(rows.items(), key=lambda item: item[1].index))

    def load_summaries(self) -> tuple[ExperimentState | None, list[PackedSummary]]:
        """Every trial of the experiment, packed, in index order, with the snapshot (whose
        ``trials`` is empty: they are in the list). This is what a restore and an analysis read.

        Reads the snapshot, then only the ``trial.json`` of trials the snapshot does not show as
        finished (and of trials it does not know), so that a mostly finished experiment costs
        one file and a listing of the trial directories.

        Raises:
            UnsupportedSchemaVersionError: a state file is from a newer prefect-tune.
            DamagedStateError: a state file is damaged.
        """
        state, rows = self._load_rows()
        return state, list(rows.values())

    def load_trials(self) -> tuple[ExperimentState | None, list[TrialState]]:
        """Every trial of the experiment, whole, in index order, with the snapshot (whose
        ``trials`` is empty).

        As the snapshot holds only summaries, this reads every trial's ``trial.json`` (several
        at once); `load_summaries` reads what a restore or an analysis needs, and less.

        Raises:
            UnsupportedSchemaVersionError: a state file is from a newer prefect-tune.
            DamagedStateError: a state file is damaged.
        """
        state, rows = self._load_rows()
        stored = self.read_trials(rows)
        trials = [row.whole(stored[name]) for name, row in rows.items()]
        return state, trials

    # -- trial level ---------------------------------------------------------------------------

    def read_trial(self, dir_name: str) -> TrialState | None:
        """A trial's own state, or None if it never started.

        Raises:
            UnsupportedSchemaVersionError: the file is from a newer prefect-tune.
            DamagedStateError: the file is damaged.
        """
        return read_document(self.storage, layout.trial_file(dir_name), TrialState)

    def read_trials(self, dir_names: Iterable[str]) -> dict[str, TrialState | None]:
        """`read_trial` of several trials; several at once when the storage is slow to answer.

        Raises:
            UnsupportedSchemaVersionError: a file is from a newer prefect-tune.
            DamagedStateError: a file is damaged.
        """
        names = list(dict.fromkeys(dir_names))
        out: dict[str, TrialState | None] = {}
        started = time.perf_counter()
        for name in names:
            out[name] = self.read_trial(name)
            if len(out) >= 4 and (time.perf_counter() - started) / len(out) > _SLOW_READ_S:
                break
        rest = names[len(out) :]
        if rest:
            with ThreadPoolExecutor(min(_READ_THREADS, len(rest))) as pool:
                out.update(zip(rest, pool.map(self.read_trial, rest), strict=True))
        return out

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
        have reported. Rows that ``trial`` carries (`CarriedResults`) count as the segment they
        are to be, unless that segment was written (it then holds them, and maybe more).

        Raises:
            DamagedStateError: a results segment is damaged.
        """
        written: dict[tuple[int, int], str] = {}
        for name in self.storage.list_dir(layout.results_dir(trial.dir_name)):
            parsed = layout.parse_result_segment(name)
            if parsed is not None:
                written[parsed] = name
        carried = {(c.attempt, c.segment): c.rows for c in trial.carried_results}
        start_of = {a.attempt: a.start_iteration for a in trial.attempts}
        rows: dict[int, dict[str, Any]] = {}
        current: int | None = None
        for attempt, seq in sorted(set(written) | set(carried)):
            if attempt != current:
                current = attempt
                start = start_of.get(attempt, 0)
                for it in [it for it in rows if it > start]:
                    del rows[it]
            file_name = written.get((attempt, seq))
            if file_name is None:
                segment = carried[(attempt, seq)]
            else:
                rel = f"{layout.results_dir(trial.dir_name)}/{file_name}"
                segment = _parse_segment(self.storage.read_bytes(rel), self.storage.uri(rel))
            for row in segment:
                rows[int(row.get("training_iteration", len(rows) + 1))] = row
        return [rows[it] for it in sorted(rows)]

    # -- checkpoints -----------------------------------------------------------------------------

    def upload_checkpoint(
        self, dir_name: str, index: int, local_dir: str, files: dict[str, int] | None = None
    ) -> UploadedFiles:
        """Uploads the files of a local checkpoint directory as the trial's checkpoint ``index``.

        The checkpoint is committed only when the trial's state lists it (`CheckpointRecord`
        with these ``files``): until then a reader ignores the directory, and the trial's next
        attempt deletes it.

        Args:
            dir_name: The trial's directory.
            index: The checkpoint's index.
            local_dir: The local checkpoint directory.
            files: Its `local_checkpoint_files`, if already listed.

        Raises:
            CheckpointError: the directory cannot be a checkpoint (see `local_checkpoint_files`);
                nothing is uploaded.
        """
        if files is None:
            files = local_checkpoint_files(local_dir)
        target = layout.checkpoint_dir(dir_name, index)
        # A partial directory of the same name (a crash mid-upload) was removed when this
        # attempt began; stray files would be ignored anyway, since readers go by the list.
        self.storage.put_files(
            (os.path.join(local_dir, *rel.split("/")), f"{target}/{rel}") for rel in files
        )
        return UploadedFiles(layout.checkpoint_name(index), files)

    def copy_checkpoint(
        self, source_dir_name: str, record: CheckpointRecord, dir_name: str, index: int
    ) -> UploadedFiles | None:
        """Copies another trial's committed checkpoint as this trial's checkpoint ``index``
        (population based training's exploit), file by file, and checks the copy.

        Like an upload, the copy is committed only when the trial's state lists it; a
        directory of the same name that an interrupted copy left is deleted first.

        Args:
            source_dir_name: The donor trial's directory.
            record: The donor's checkpoint, as its state lists it.
            dir_name: The receiving trial's directory.
            index: The checkpoint index the copy takes in the receiving trial.

        Returns:
            The copy's files, or None when a file of ``record`` is missing or of another size
            (the donor's retention deleted the checkpoint meanwhile): the caller reads the
            donor's state again.
        """
        if record.files is None:  # a version 1 checkpoint: its directory lists its files
            files = self.storage.walk_files(
                f"{layout.trial_dir(source_dir_name)}/{record.dir_name}"
            )
            files.pop(layout.MANIFEST_FILE, None)
        else:
            files = dict(record.files)
        target = layout.checkpoint_dir(dir_name, index)
        source = f"{layout.trial_dir(source_dir_name)}/{record.dir_name}"
        self.storage.delete(target)
        try:
            self.storage.copy_files((f"{source}/{rel}", f"{target}/{rel}") for rel in files)
        except StorageNotFoundError:
            return None
        copied = self.storage.walk_files(target)
        if any(copied.get(rel) != size for rel, size in files.items()):
            return None
        return UploadedFiles(layout.checkpoint_name(index), files)

    def delete_checkpoints(self, dir_name: str, records: Iterable[CheckpointRecord]) -> None:
        """Deletes checkpoints that the trial's state no longer lists.

        Where directories are key prefixes (S3, GCS), the files a record lists are deleted by
        name, in one request. Anywhere else, and for a version 1 checkpoint (its files are not
        listed), the directory is deleted whole.
        """
        listed: list[str] = []
        for record in records:
            directory = f"{layout.trial_dir(dir_name)}/{record.dir_name}"
            if record.files is None or not self.storage.directories_are_prefixes:
                self.storage.delete(directory)
            else:
                listed.extend(f"{directory}/{rel}" for rel in record.files)
        self.storage.delete_files(listed)

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
