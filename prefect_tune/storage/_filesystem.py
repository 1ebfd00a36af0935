"""`Storage`: every byte prefect-tune reads or writes under a ``storage_path`` goes through here.

One code path serves the local disk, an NFS mount, S3, GCS and any other fsspec filesystem. The
differences between them are capability flags (``atomic_rename``, ``local_files``,
``directories_are_prefixes``), never branches on the scheme.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import inspect
import json
import os
import posixpath
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from prefect_tune.exceptions import UnsafePathError
from prefect_tune.storage import _layout as layout
from prefect_tune.storage._errors import driver_missing, redact, translated, unknown_scheme


@dataclass(frozen=True)
class StorageSpec:
    """Where an experiment lives and how to reach it: what a Dask worker needs to open storage.

    ``options`` may hold credentials: the spec is shipped to workers inside a task's arguments,
    never logged, and its ``repr`` hides the options' values.
    """

    url: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.options))
        return f"StorageSpec(url={self.url!r}, options=<{keys or 'none'}>)"

    def child(self, *parts: str) -> StorageSpec:
        """The spec of a sub-path, with the same options."""
        return StorageSpec(join_url(self.url, *parts), self.options)

    def open(self) -> Storage:
        """Returns a (per-process cached) :class:`Storage` for this spec."""
        return Storage.open(self)


def join_url(base: str, *parts: str) -> str:
    """Joins path parts onto a local path or URL with ``/``."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def normalize_url(url: str | os.PathLike[str]) -> str:
    """Expands ``~`` and makes a local path absolute; leaves URLs with a protocol as they are."""
    text = os.fspath(url)
    protocol, _ = fsspec.core.split_protocol(text)
    if protocol in (None, "file", "local"):
        local = text.split("://", 1)[1] if protocol else text
        return str(Path(local).expanduser().absolute()).rstrip("/") or "/"
    return text.rstrip("/")


class Storage:
    """A directory on some filesystem, with the few operations prefect-tune needs.

    All paths given to methods are relative to the storage root and use ``/``. Every method raises
    a :class:`~prefect_tune.exceptions.StorageError` subclass on failure (never a raw driver
    error), or :class:`~prefect_tune.exceptions.UnsafePathError` for a path that could lead
    outside the root, and is safe to call from several threads.

    Examples:
        >>> storage = Storage.open(StorageSpec("memory://doc-example"))
        >>> storage.write_json("a/state.json", {"x": 1})
        >>> storage.read_json("a/state.json")
        {'x': 1}
    """

    _cache: dict[tuple[str, str], Storage] = {}
    _cache_lock = threading.Lock()

    def __init__(self, spec: StorageSpec):
        self.spec = spec
        self.url = normalize_url(spec.url)
        protocol, _ = fsspec.core.split_protocol(self.url)
        protocol = protocol or "file"
        self.protocol = protocol
        try:
            fs_class = fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            raise driver_missing(protocol, exc) from exc
        except ValueError as exc:
            raise unknown_scheme(protocol) from exc
        with translated(self.url):
            if fs_class is LocalFileSystem or issubclass(fs_class, LocalFileSystem):
                self.fs: fsspec.AbstractFileSystem = LocalFileSystem(auto_mkdir=True)
                self.root = self.url
            else:
                self.fs, self.root = fsspec.core.url_to_fs(self.url, **spec.options)
        self.root = self.root.rstrip("/")
        #: Whether a rename within the root is atomic (POSIX). Object stores get atomicity from
        #: single-object PUTs instead.
        self.atomic_rename = isinstance(self.fs, LocalFileSystem)
        #: Whether a file is visible to readers while it is being written.
        self.writes_visible_early = isinstance(self.fs, LocalFileSystem)
        #: Whether paths are files of this machine (local disk, NFS): copied by `copy_file`.
        self.local_files = isinstance(self.fs, LocalFileSystem)
        #: Whether a directory is only the common prefix of its files' keys (S3, GCS, Azure):
        #: it vanishes with its last file, and deleting its files by name deletes it.
        self.directories_are_prefixes = type(self.fs).__module__.split(".")[0] in PREFIX_STORES
        #: s3fs asks for an object's size (a HEAD) before each whole-object read, to split big
        #: ones into ranges read at once; the files read whole here are small, so one GET.
        self._read_kwargs = _single_request_read(self.fs)
        self._real_root: str | None = None  # the root with its links resolved, once needed

    @classmethod
    def open(cls, spec: StorageSpec | str) -> Storage:
        """Returns a Storage for ``spec``, reusing one made earlier in this process."""
        if isinstance(spec, str):
            spec = StorageSpec(spec)
        key = (normalize_url(spec.url), json.dumps(spec.options, sort_keys=True, default=repr))
        with cls._cache_lock:
            found = cls._cache.get(key)
        if found is not None:
            return found
        made = cls(spec)
        with cls._cache_lock:
            return cls._cache.setdefault(key, made)

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # -- paths ---------------------------------------------------------------------------------

    def full_path(self, rel: str = "") -> str:
        """The filesystem path (no protocol) of ``rel``; ``""`` is the root itself.

        Every read, write and delete passes here: a ``rel`` that could lead outside the root
        (see :func:`~prefect_tune.storage.layout.path_problem`) is refused on every backend.

        Raises:
            UnsafePathError: ``rel`` could lead outside the root.
        """
        rel = rel.rstrip("/")
        if not rel:
            return self.root
        return f"{self.root}/{layout.checked_path(rel, f'Below {self.url}')}"

    def uri(self, rel: str = "") -> str:
        """The URL of ``rel``, as a user would pass it back (a plain path for local storage)."""
        return join_url(self.url, rel)

    def sub(self, rel: str) -> Storage:
        """A Storage rooted at ``rel`` below this one."""
        return Storage.open(StorageSpec(self.uri(rel), self.spec.options))

    # -- small files ---------------------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes:
        """Reads a whole file.

        Raises:
            StorageNotFoundError: ``rel`` does not exist.
            StorageError: any other failure.
        """
        with translated(self.uri(rel)):
            return bytes(self.fs.cat_file(self.full_path(rel), **self._read_kwargs))

    def read_json(self, rel: str) -> Any:
        """Reads and parses a JSON file (see :meth:`read_bytes` for errors)."""
        return json.loads(self.read_bytes(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Writes a whole file atomically: a reader sees the old content or the new, never a mix.

        On a local or NFS path the data goes to a temporary sibling that is renamed over the
        target; on an object store it is one PUT.
        """
        self.write_chunks(rel, (data,))

    def write_chunks(self, rel: str, chunks: Iterable[bytes]) -> None:
        """`write_bytes` of the concatenation of ``chunks``, atomically as well.

        On a local or NFS path the chunks are written one after the other, never joined in
        memory (the driver's snapshot is the largest file it writes); an object store gets
        them joined, in one PUT.
        """
        path = self.full_path(rel)
        with translated(self.uri(rel)):
            if self.atomic_rename:
                parent = posixpath.dirname(path)
                os.makedirs(parent, exist_ok=True)
                tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}"
                try:
                    with open(tmp, "wb") as handle:
                        handle.writelines(chunks)
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            else:
                self.fs.pipe_file(path, b"".join(chunks))

    def write_json(self, rel: str, obj: Any) -> None:
        """Serialises ``obj`` to JSON and writes it atomically."""
        self.write_bytes(rel, json.dumps(obj, separators=(",", ":"), allow_nan=True).encode())

    # -- directories -----------------------------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        """Whether ``rel`` exists (a file, or a directory with something in it on object stores)."""
        with translated(self.uri(rel)):
            self.fs.invalidate_cache(self.full_path(rel))
            return bool(self.fs.exists(self.full_path(rel)))

    def list_dir(self, rel: str = "") -> list[str]:
        """Names of the direct children of ``rel``, sorted; ``[]`` when it does not exist."""
        path = self.full_path(rel)
        with translated(self.uri(rel)):
            self.fs.invalidate_cache(path)
            try:
                entries = self.fs.ls(path, detail=False)
            except FileNotFoundError:
                return []
        names = {posixpath.basename(str(entry).rstrip("/")) for entry in entries}
        names.discard("")
        return sorted(names)

    def walk_files(self, rel: str = "") -> dict[str, int]:
        """Every file below ``rel`` as ``{relative path: size in bytes}``."""
        path = self.full_path(rel)
        with translated(self.uri(rel)):
            self.fs.invalidate_cache(path)
            try:
                found = self.fs.find(path, detail=True)
            except FileNotFoundError:
                return {}
        out: dict[str, int] = {}
        prefix = path.rstrip("/") + "/"
        for name, info in found.items():
            if info.get("type") == "directory":
                continue
            name = str(name)
            out[name[len(prefix) :] if name.startswith(prefix) else posixpath.basename(name)] = int(
                info.get("size") or 0
            )
        return out

    def delete(self, rel: str) -> None:
        """Deletes a file or a whole directory tree; a missing ``rel`` is not an error.

        ``rel`` is a name, never a pattern: fsspec reads ``*?[`` in a path as a glob (an ``rm``
        of ``exp*`` on S3 deletes ``exp-important`` too), so a path holding one is deleted by
        the exact names of the files below it.
        """
        path = self.full_path(rel)
        with translated(self.uri(rel)):
            self.fs.invalidate_cache(path)
            if _GLOB_CHARACTERS.search(path):
                self._delete_exactly(path)
                return
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path, recursive=True)

    def _delete_exactly(self, path: str) -> None:
        """`delete` of ``path`` with no fsspec call that expands patterns."""
        if self.local_files:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return
        try:
            found = self.fs.find(path, withdirs=True, detail=True)
        except FileNotFoundError:
            return
        directories = []
        for name, info in found.items():
            if info.get("type") == "directory":
                directories.append(str(name))
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(name)
        if not self.directories_are_prefixes:  # directories of their own (memory://): deepest first
            directories.append(path)
            for name in sorted(set(directories), key=len, reverse=True):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rmdir(name)
        self.fs.invalidate_cache(path)

    def delete_files(self, rels: Iterable[str]) -> None:
        """Deletes the files named; a missing one is not an error. Nothing is listed: on S3 or GCS
        this is one batch request (per 1 000 files on S3), where `delete` of their directory
        lists it first."""
        rels = list(rels)
        if not rels:
            return
        paths = [self.full_path(rel) for rel in rels]
        with translated(self.uri(rels[0])):
            if self.local_files or any(_GLOB_CHARACTERS.search(p) for p in paths):
                # fsspec would read a name with glob characters as a pattern: one at a time
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(paths)
            for path in paths:
                self.fs.invalidate_cache(path)

    # -- bulk transfer ---------------------------------------------------------------------------

    def put_files(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Uploads local files: each pair is ``(local path, relative destination)``."""
        pairs = list(pairs)
        if not pairs:
            return
        sources = [local for local, _ in pairs]
        targets = [self.full_path(rel) for _, rel in pairs]
        with translated(self.uri(pairs[0][1])):
            if not self.local_files:
                self.fs.put(sources, targets)
                return
            for parent in {posixpath.dirname(t) for t in targets}:
                os.makedirs(parent, exist_ok=True)
            for source, target in zip(sources, targets, strict=True):
                copy_file(source, target)

    def get_files(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Downloads files: each pair is ``(relative source, local destination)``."""
        pairs = list(pairs)
        if not pairs:
            return
        for _, local in pairs:
            os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        with translated(self.uri(pairs[0][0])):
            if not self.local_files:
                self.fs.get(
                    [self.full_path(rel) for rel, _ in pairs], [local for _, local in pairs]
                )
                return
            self.check_inside(rel for rel, _ in pairs)
            for rel, local in pairs:
                copy_file(self.full_path(rel), local)

    def copy_files(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Copies files within the root: each pair is ``(relative source, relative target)``.

        One copy per file, never a move (object stores have no atomic move of a directory):
        the caller commits the copies afterwards by a write of its own. On object stores the
        copy is the store's own (server side); locally it is `copy_file`.

        Raises:
            StorageNotFoundError: a source does not exist (the targets copied before it stay).
            UnsafePathError: a path could lead outside the root.
        """
        pairs = list(pairs)
        if not pairs:
            return
        self.check_inside(source for source, _ in pairs)
        with translated(self.uri(pairs[0][0])):
            for source, target in pairs:
                src, dst = self.full_path(source), self.full_path(target)
                if self.local_files:
                    os.makedirs(posixpath.dirname(dst), exist_ok=True)
                    copy_file(src, dst)
                else:
                    self.fs.cp_file(src, dst)
                    self.fs.invalidate_cache(dst)

    def check_inside(self, rels: Iterable[str]) -> None:
        """Refuses files that a symbolic link leads outside the root, on a local or NFS path
        (elsewhere there are no links: this does nothing).

        A file of a shared experiment replaced by a link to someone's private file must never
        be read for them and copied out (to a checkpoint's download, or back into storage).

        Raises:
            UnsafePathError: a file of ``rels`` is a link, or is below one, to a place outside
                the root.
        """
        if not self.local_files:
            return
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        inside = self._real_root.rstrip("/") + "/"
        for rel in rels:
            real = os.path.realpath(self.full_path(rel))
            if real != self._real_root and not real.startswith(inside):
                raise UnsafePathError(
                    f"{self.uri(rel)} is a symbolic link (or is below one) to {real}, outside "
                    f"{self.url}; it is refused (nothing was read from it)."
                )


#: The fsspec drivers whose directories are key prefixes (see `Storage.directories_are_prefixes`).
PREFIX_STORES = frozenset({"s3fs", "gcsfs", "adlfs"})

_GLOB_CHARACTERS = re.compile(r"[*?\[]")

#: Files at least this big get their space reserved before they are copied.
PREALLOCATE_MIN_BYTES = 1 << 20


def _find_fallocate() -> Any:
    """Linux's ``fallocate(2)`` (not glibc's ``posix_fallocate``, which emulates it by writing
    zeros where the filesystem cannot reserve space), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _find_fallocate()


def copy_file(source: str, target: str) -> None:
    """Copies a local file as ``shutil.copyfile`` does, reserving the target's space first.

    On Linux a file of `PREALLOCATE_MIN_BYTES` or more gets its whole size reserved with
    ``fallocate(2)`` and is copied by the kernel (``sendfile``). On ext4 this makes a 16 MiB copy
    ~20 % faster than writing into a file that grows with each write. Where the filesystem
    cannot reserve space the copy goes on without; elsewhere than Linux it is
    ``shutil.copyfile``.
    """
    if _fallocate is None:
        shutil.copyfile(source, target)
        return
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        reserved = size >= PREALLOCATE_MIN_BYTES and _fallocate(dst.fileno(), 0, 0, size) == 0
        copied = 0
        try:
            while True:
                sent = os.sendfile(dst.fileno(), src.fileno(), copied, max(size - copied, 1 << 20))
                if sent == 0:
                    break
                copied += sent
        except OSError as exc:
            if copied or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            src.seek(0)
            shutil.copyfileobj(src, dst, 1 << 20)
            copied = dst.tell()
        if reserved and copied < size:  # the source shrank: no reserved zeros at the end
            dst.truncate(copied)


def _single_request_read(fs: fsspec.AbstractFileSystem) -> dict[str, Any]:
    cat_file = getattr(fs, "_cat_file", None)
    try:
        parameters = inspect.signature(cat_file).parameters if cat_file is not None else {}
    except (TypeError, ValueError):
        return {}
    return {"max_concurrency": 1} if "max_concurrency" in parameters else {}


__all__ = ["Storage", "StorageSpec", "join_url", "normalize_url", "redact"]
