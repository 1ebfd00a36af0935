"""`Checkpoint`: a directory of files that a trial can resume from, local or in storage."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from prefect_tune.exceptions import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointOutsideExperimentError,
    ExperimentNotFoundError,
    IncompleteCheckpointError,
)
from prefect_tune.state import ExperimentStore, TrialState, load_document_json
from prefect_tune.storage import (
    Storage,
    StorageSpec,
    TuneStorage,
    layout,
    normalize_url,
    resolve_spec,
)


def _split_checkpoint_url(url: str) -> tuple[str, str, str]:
    """``(experiment URL, trial dir, checkpoint dir)`` of a checkpoint's URL.

    Raises:
        CheckpointOutsideExperimentError: ``url`` does not end in
            ``trials/<trial dir>/checkpoint_<n>``.
    """
    head, _, name = url.rpartition("/")
    head, _, trial_dir = head.rpartition("/")
    experiment_url, _, trials = head.rpartition("/")
    if (
        layout.parse_checkpoint_name(name) is None
        or trials != layout.TRIALS_DIR
        or layout.path_problem(trial_dir, single=True) is not None
        or not experiment_url
    ):
        raise CheckpointOutsideExperimentError(
            f"{url} is not a checkpoint of an experiment: a checkpoint URI ends in "
            f"<experiment>/{layout.TRIALS_DIR}/<trial dir>/{layout.checkpoint_name(3)}."
        )
    return experiment_url, trial_dir, name


class Checkpoint:
    """A checkpoint: a directory on the local disk or in experiment storage.

    Create one from a local directory inside a trainable and pass it to :func:`report`; read one
    with :meth:`as_directory` (no copy when it is on the local disk or an NFS mount, a download to
    a temporary directory otherwise) or :meth:`to_directory`.

    Args:
        path: A local path or an fsspec URL of the checkpoint directory.
        storage_options: Options (endpoint, credentials) for the filesystem of ``path``.

    Examples:
        >>> import tempfile, pathlib
        >>> d = tempfile.mkdtemp()
        >>> _ = pathlib.Path(d, "model.txt").write_text("weights")
        >>> ckpt = Checkpoint.from_directory(d)
        >>> with ckpt.as_directory() as path:
        ...     print(pathlib.Path(path, "model.txt").read_text())
        weights
    """

    def __init__(self, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None):
        self._spec = StorageSpec(os.fspath(path), dict(storage_options or {}))
        self._storage: Storage | None = None
        self._committed = False
        self._listed: dict[str, int] | None = None  # a committed checkpoint's files, once known

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """A checkpoint of the files in a local directory.

        Raises:
            CheckpointError: ``path`` is not an existing directory.
        """
        if not os.path.isdir(path):
            raise CheckpointError(
                f"Checkpoint.from_directory: {os.fspath(path)!r} is not a directory."
            )
        return cls(os.path.abspath(path))

    @classmethod
    def from_committed(
        cls,
        path: str | os.PathLike[str],
        storage_options: dict[str, Any] | None = None,
        *,
        files: dict[str, int] | None = None,
    ) -> Checkpoint:
        """A checkpoint a trial committed to experiment storage
        (``<experiment>/trials/<trial dir>/checkpoint_000003``).

        Only the files its trial's state lists are read, each checked for its listed size; a
        directory its trial never committed (an upload a crash cut short) or has since dropped
        is refused when opened.

        Args:
            path: The checkpoint directory: a local path or an fsspec URL.
            storage_options: Options (endpoint, credentials) for the filesystem of ``path``.
            files: Its files and sizes, from its record; None to read them from its trial's
                state when the checkpoint is opened.

        Examples:
            >>> ckpt = Checkpoint.from_committed(  # doctest: +SKIP
            ...     "s3://bucket/tune/exp/trials/train_fn_a1b2c_00000/checkpoint_000003"
            ... )
            >>> ckpt.to_directory("/tmp/model")  # doctest: +SKIP
        """
        ckpt = cls(path, storage_options)
        ckpt._committed = True
        ckpt._listed = files
        return ckpt

    @classmethod
    def from_uri(
        cls,
        uri: str | os.PathLike[str],
        storage_options: dict[str, Any] | None = None,
        *,
        storage: TuneStorage | None = None,
    ) -> Checkpoint:
        """The committed checkpoint of a stored experiment at ``uri``, checked before use.

        ``uri`` is what ``Result.checkpoint.path`` and the ``checkpoint_uri`` of the
        ``prefect-tune.experiment.completed`` event hold:
        ``<storage_path>/<experiment>/trials/<trial dir>/checkpoint_000003``, on any storage.
        Everything it reads is untrusted: the path must have that form, an experiment must be
        stored above it, its trial's ``trial.json`` must list it, and every file listed must be
        stored with its listed size. Only small files and a listing are read, never the
        checkpoint's payload, and nothing is written.

        Args:
            uri: The checkpoint directory: a local or NFS path, or an fsspec URL. With
                ``storage``, a relative path is taken below the block's ``storage_path``.
            storage_options: fsspec options (endpoint, credentials) for ``uri``.
            storage: A :class:`~prefect_tune.TuneStorage` block whose credentials reach ``uri``.

        Raises:
            ConfigError: both ``storage_options`` and ``storage`` were given.
            CheckpointOutsideExperimentError: ``uri`` is not of the form above, or no
                experiment is stored above it.
            CheckpointNotFoundError: the trial or its checkpoint does not exist, or the trial
                does not keep it (never committed, or dropped by ``num_to_keep``).
            IncompleteCheckpointError: files the checkpoint's record lists are missing or of
                another size.
            UnsafePathError: a file name the record lists could lead outside the checkpoint.
            DamagedStateError: the experiment's definition or the trial's state is damaged.

        Examples:
            >>> ckpt = Checkpoint.from_uri(  # doctest: +SKIP
            ...     "s3://bucket/tune/exp/trials/train_fn_a1b2c_00000/checkpoint_000003",
            ...     storage=TuneStorage.load("tuning"),
            ... )
            >>> with ckpt.as_directory() as d:  # doctest: +SKIP
            ...     model = load_model(d)
        """
        spec = resolve_spec(uri, storage_options, storage)
        url = normalize_url(spec.url)
        experiment_url, trial_dir, name = _split_checkpoint_url(url)
        experiment = Storage.open(StorageSpec(experiment_url, spec.options))
        try:
            ExperimentStore(experiment).read_definition()
        except ExperimentNotFoundError as exc:
            raise CheckpointOutsideExperimentError(
                f"{url} is not a checkpoint of an experiment: no experiment is stored at "
                f"{experiment_url} (no {layout.EXPERIMENT_FILE})."
            ) from exc
        trial = ExperimentStore(experiment).read_trial(trial_dir)
        if trial is None:
            raise CheckpointNotFoundError(
                f"No checkpoint at {url}: the experiment {experiment_url} has no trial "
                f"{trial_dir!r}."
            )
        record = next((c for c in trial.checkpoints if c.dir_name == name), None)
        if record is None:
            kept = ", ".join(c.dir_name for c in trial.checkpoints) or "none"
            raise CheckpointNotFoundError(
                f"No checkpoint at {url}: trial {trial.trial_id} keeps no {name} (it was never "
                f"committed, or CheckpointConfig(num_to_keep=...) dropped it; kept: {kept})."
            )
        ckpt = cls.from_committed(url, spec.options, files=record.files)
        files = ckpt._files()  # a version 1 record: its manifest's list; paths checked
        for rel in files:
            layout.checked_path(rel, f"Checkpoint {url}")
        present = ckpt._storage_root().walk_files()
        if any(present.get(rel) != size for rel, size in files.items()):
            raise ckpt._lacking(files)
        return ckpt

    @property
    def path(self) -> str:
        """The checkpoint directory: a local path or a URL."""
        return self._storage_root().url

    @property
    def filesystem(self) -> Any:
        """The fsspec filesystem that holds the checkpoint."""
        return self._storage_root().fs

    def _storage_root(self) -> Storage:
        if self._storage is None:
            # A trainable makes a new local checkpoint per report: keep those out of the
            # process-wide cache, which would grow with every one of them.
            self._storage = Storage.open(self._spec) if self._committed else Storage(self._spec)
        return self._storage

    def _files(self) -> dict[str, int]:
        """Files of the checkpoint with their sizes: for a committed one, those its trial's
        state lists (or, committed by a version 1 trial state, its manifest)."""
        storage = self._storage_root()
        if self._committed:
            if self._listed is None:
                self._listed = self._committed_files(storage)
            if storage.local_files:  # no links elsewhere
                # From its trial's directory: a checkpoint directory replaced by a link to
                # somewhere else is refused, as a file replaced by one is.
                name = storage.url.rpartition("/")[2]
                self._trial_storage().check_inside(f"{name}/{rel}" for rel in self._listed)
            return self._listed
        files = storage.walk_files()
        files.pop(layout.MANIFEST_FILE, None)
        if not files and not storage.exists():
            raise CheckpointError(f"Checkpoint {self.path} does not exist.")
        return files

    def _trial_storage(self) -> Storage:
        """The directory of the trial that committed this checkpoint."""
        trial_dir = self._storage_root().url.rpartition("/")[0]
        return Storage.open(StorageSpec(trial_dir, self._spec.options))

    def _committed_files(self, storage: Storage) -> dict[str, int]:
        name = storage.url.rpartition("/")[2]
        trial_storage = self._trial_storage()
        try:
            data = trial_storage.read_bytes(layout.TRIAL_FILE)
        except FileNotFoundError as exc:
            raise IncompleteCheckpointError(
                f"Checkpoint {self.path} belongs to no trial: {trial_storage.uri()} has no "
                f"{layout.TRIAL_FILE}."
            ) from exc
        trial = load_document_json(TrialState, data, trial_storage.uri(layout.TRIAL_FILE))
        record = next((c for c in trial.checkpoints if c.dir_name == name), None)
        if record is None:
            raise IncompleteCheckpointError(
                f"Checkpoint {self.path} is not one its trial keeps: it was never committed, or "
                "CheckpointConfig(num_to_keep=...) dropped it since."
            )
        if record.files is not None:
            return record.files
        try:  # committed by a version 1 trial state: its manifest lists the files
            manifest = storage.read_json(layout.MANIFEST_FILE)
        except FileNotFoundError as exc:
            raise IncompleteCheckpointError(
                f"Checkpoint {self.path} has no manifest: it was never committed."
            ) from exc
        where = storage.uri(layout.MANIFEST_FILE)
        return {layout.checked_path(str(k), where): int(v) for k, v in manifest["files"].items()}

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        """Copies the checkpoint's files into a local directory and returns its path.

        Args:
            path: Target directory (created if needed); a new temporary directory when None.

        Raises:
            IncompleteCheckpointError: a committed checkpoint lacks files its trial's state (or
                manifest) lists: deleted, or never committed.
            UnsafePathError: a file the checkpoint lists would be written outside ``path``, or
                (on a local or NFS path) is a link to a file outside the experiment; nothing
                is written.
        """
        files = self._files()
        for rel in files:  # before anything is written: no listed name leaves the target
            layout.checked_path(rel, f"Checkpoint {self.path}")
        target = (
            os.path.abspath(path) if path is not None else tempfile.mkdtemp(prefix="checkpoint-")
        )
        os.makedirs(target, exist_ok=True)
        storage = self._storage_root()
        try:
            storage.get_files((rel, os.path.join(target, *rel.split("/"))) for rel in files)
        except FileNotFoundError as exc:
            raise self._lacking(files, exc) from exc
        for rel, size in files.items():
            local = os.path.join(target, *rel.split("/"))
            if not os.path.exists(local) or os.path.getsize(local) != size:
                raise IncompleteCheckpointError(
                    f"Checkpoint {self.path}: {rel} is missing or has the wrong size."
                )
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """Yields a local directory with the checkpoint's files; treat it as read-only.

        A checkpoint on the local disk is yielded in place; any other is downloaded to a
        temporary directory that is deleted on exit.

        Raises:
            IncompleteCheckpointError: a committed checkpoint lacks files its trial's state (or
                manifest) lists: deleted, or never committed.
        """
        storage = self._storage_root()
        if storage.atomic_rename:  # local disk or NFS: read in place
            files = self._files()
            if self._committed:  # what the trainable opens in place must all be there
                present = storage.walk_files()
                if any(present.get(rel) != size for rel, size in files.items()):
                    raise self._lacking(files)
            yield storage.root
            return
        with self._temporary_copy() as tmp:
            yield tmp

    def _lacking(
        self, files: dict[str, int], cause: BaseException | None = None
    ) -> IncompleteCheckpointError:
        """The error for a committed checkpoint whose stored files are not all those listed."""
        present = self._storage_root().walk_files()
        lacking = sorted(rel for rel, size in files.items() if present.get(rel) != size)
        more = f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
        what = ", ".join(lacking[:3]) + more if lacking else f"a file ({cause})"
        return IncompleteCheckpointError(
            f"Checkpoint {self.path}: {what} missing or not of the size its trial's state "
            "lists; the checkpoint was deleted or changed after it was committed."
        )

    @contextlib.contextmanager
    def as_source_directory(self) -> Iterator[str]:
        """Yields a local directory to copy the checkpoint's files from, which nothing else
        changes while the block runs.

        A directory the trainable made on this machine is yielded in place. A committed
        checkpoint (which its trial's retention may delete meanwhile) or one on remote storage
        is copied to a temporary directory first, deleted on exit.
        """
        storage = self._storage_root()
        if storage.atomic_rename and not self._committed:
            yield storage.root
            return
        with self._temporary_copy() as tmp:
            yield tmp

    @contextlib.contextmanager
    def _temporary_copy(self) -> Iterator[str]:
        tmp = self.to_directory()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self._spec, "committed": self._committed, "files": self._listed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._spec = state["spec"]
        self._committed = state["committed"]
        self._listed = state.get("files")
        self._storage = None
