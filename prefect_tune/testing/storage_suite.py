"""The storage contract as a test suite that any backend runs by subclassing it.

As with fsspec's ``fsspec/tests/abstract`` and Optuna's ``StorageTestCase``, the suite ships
with the library and each backend supplies only fixtures and capability flags::

    import uuid

    import pytest

    from prefect_tune.storage import StorageSpec
    from prefect_tune.testing.storage_suite import StorageBackend, StorageSuite


    class TestMyStorage(StorageSuite):
        backends = (StorageBackend("mine", shared=True),)

        @pytest.fixture
        def storage_spec(self, storage_backend):
            spec = StorageSpec(f"mine://bucket/{uuid.uuid4().hex}", {"token": "..."})
            yield spec
            spec.open().delete("")

Every test of :class:`StorageSuite` runs once for each of the class's ``backends`` that has
the capabilities it needs (test ids: the backends' names; a test none of them can run is
skipped, saying what it needs), with the fixtures:

- ``storage_backend``: that :class:`StorageBackend` (the suite parametrizes it);
- ``storage_spec``: a fresh, empty storage root on it (supplied by the subclass or a conftest);
- ``dask_cluster``: a ``distributed.LocalCluster`` of two worker processes, asked for only by the
  tests of shared backends (supplied likewise).

prefect-tune's own backends are :data:`BACKENDS`; ``tests/conftest.py`` makes their roots.
This module imports pytest, so :mod:`prefect_tune.testing` does not import it.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from prefect_tune.exceptions import StorageNotFoundError
from prefect_tune.storage import Storage, StorageSpec, normalize_url

__all__ = ["BACKENDS", "StorageBackend", "StorageSuite", "random_bytes"]


@dataclass(frozen=True)
class StorageBackend:
    """A kind of storage the suite runs against, and what it can do.

    Attributes:
        name: The test id, e.g. ``memory``, ``local``, ``shared``, ``s3`` or ``gcs``.
        shared: Several processes (Dask workers standing for other hosts) can write to the
            same root and see each other's files. Not true of ``memory`` (per process) nor of
            ``local`` (a disk other hosts cannot see).
    """

    name: str
    shared: bool


#: prefect-tune's own backends: in-memory, a local disk, a directory every process on the host
#: sees (the NFS stand-in), S3 (a moto server) and GCS (an emulator server).
BACKENDS: tuple[StorageBackend, ...] = (
    StorageBackend("memory", shared=False),
    StorageBackend("local", shared=False),
    StorageBackend("shared", shared=True),
    StorageBackend("s3", shared=True),
    StorageBackend("gcs", shared=True),
)

_Test = TypeVar("_Test", bound=Callable[..., Any])


def _requires(**capabilities: bool) -> Callable[[_Test], _Test]:
    """Runs the test only on the backends whose flags have these values."""

    def mark(test: _Test) -> _Test:
        test._storage_requires = capabilities  # type: ignore[attr-defined]
        return test

    return mark


def random_bytes(size: int) -> bytes:
    """Random bytes ending in a fixed byte.

    gcp-storage-emulator parses uploads with the email package and drops a trailing ``\\r``
    (real GCS does not), so no payload here may end with one.
    """
    return os.urandom(size - 1) + b"."


def _write_tree(storage: Storage) -> None:
    storage.write_bytes("a/b/c.txt", b"abc")
    storage.write_bytes("a/d.txt", b"")
    storage.write_bytes("e.bin", b"\x00" * 1000)


_PAYLOAD_SIZE = 256 * 1024


def _payload(generation: int) -> bytes:
    """A payload whose every byte depends on its generation, so a torn read cannot pass."""
    fill = bytes([generation % 256]) * (_PAYLOAD_SIZE - 5)
    return generation.to_bytes(4, "big") + fill + b"."  # see random_bytes for the last byte


def _local_tree(root: Path) -> dict[str, bytes]:
    files = {
        "model.bin": bytes(range(256)) * 40 + random_bytes(1000),
        "nested/deep/optimizer.pt": random_bytes(3000),
        "nested/empty.dat": b"",
        "with space.txt": "ünïcödé\n".encode(),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _write_from_worker(spec: StorageSpec, rel: str, data: bytes) -> int:
    """Runs in a Dask worker process: writes one file and says which process wrote it."""
    spec.open().write_bytes(rel, data)
    return os.getpid()


class StorageSuite:
    """The storage contract: every test takes ``storage_spec``, a fresh root on one backend.

    Attributes:
        backends: The backends to run on; a subclass sets them.
    """

    backends: ClassVar[Sequence[StorageBackend]] = ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Runs each test once per backend it can run on (pytest calls this at collection)."""
        if "storage_backend" not in metafunc.fixturenames:
            return
        if not self.backends:
            raise pytest.UsageError(f"{type(self).__name__} sets no backends to run on")
        wanted = getattr(metafunc.function, "_storage_requires", {})
        backends = [b for b in self.backends if all(getattr(b, k) == v for k, v in wanted.items())]
        if backends:
            metafunc.parametrize("storage_backend", backends, ids=[b.name for b in backends])
            return
        needs = ", ".join(f"{k}={v}" for k, v in wanted.items())
        names = ", ".join(b.name for b in self.backends)
        skip = pytest.mark.skip(reason=f"needs a backend with {needs}; none of {names} has it")
        metafunc.parametrize("storage_backend", [pytest.param(None, marks=skip, id="none")])

    # -- small files

    def test_bytes_round_trip_and_overwrite(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        every_byte = bytes(range(256)) * 4

        storage.write_bytes("blobs/all.bin", every_byte)
        storage.write_bytes("blobs/empty.bin", b"")
        assert storage.read_bytes("blobs/all.bin") == every_byte
        assert storage.read_bytes("blobs/empty.bin") == b""

        storage.write_bytes("blobs/all.bin", b"shorter")
        assert storage.read_bytes("blobs/all.bin") == b"shorter"

    def test_json_round_trip(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        document = {
            "schema_version": 1,
            "name": "exp-ü-名前",
            "config": {"lr": 1e-3, "layers": [64, 32], "dropout": None, "shuffle": True},
            "best": {"loss": float("inf")},
        }

        storage.write_json("experiment.json", document)
        assert storage.read_json("experiment.json") == document

        storage.write_json("nan.json", {"loss": float("nan")})
        assert math.isnan(storage.read_json("nan.json")["loss"])

    def test_reading_a_missing_file_raises_not_found(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        storage.write_bytes("present/file.txt", b"x")

        # A "401" inside a path is no credentials error.
        missing = ("missing.txt", "present/missing.txt", "trials/t/checkpoint_000401/model.bin")
        for rel in missing:
            with pytest.raises(StorageNotFoundError) as caught:
                storage.read_bytes(rel)
            assert isinstance(caught.value, FileNotFoundError)
            assert storage.uri(rel) in str(caught.value)
        with pytest.raises(FileNotFoundError):
            storage.read_json("missing.json")

    # -- directories

    def test_list_dir_of_nested_and_missing_dirs(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        assert storage.list_dir() == []
        _write_tree(storage)

        assert storage.list_dir() == ["a", "e.bin"]
        assert storage.list_dir("a") == ["b", "d.txt"]
        assert storage.list_dir("a/b") == ["c.txt"]
        assert storage.list_dir("a/b/") == ["c.txt"]
        assert storage.list_dir("missing") == []
        assert storage.list_dir("a/missing/deeper") == []

    def test_walk_files_reports_relative_paths_and_sizes(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        assert storage.walk_files() == {}
        _write_tree(storage)

        assert storage.walk_files() == {"a/b/c.txt": 3, "a/d.txt": 0, "e.bin": 1000}
        assert storage.walk_files("a") == {"b/c.txt": 3, "d.txt": 0}
        assert storage.walk_files("missing") == {}

    def test_exists(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        _write_tree(storage)

        assert storage.exists("a/b/c.txt")
        assert storage.exists("a/d.txt")
        assert storage.exists("a")
        assert storage.exists("a/b")
        assert not storage.exists("missing.txt")
        assert not storage.exists("a/missing")

    def test_delete_a_file_a_tree_and_nothing(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        _write_tree(storage)

        storage.delete("a/d.txt")
        assert not storage.exists("a/d.txt")
        assert storage.walk_files() == {"a/b/c.txt": 3, "e.bin": 1000}

        storage.delete("a")
        assert not storage.exists("a/b/c.txt")
        assert storage.list_dir() == ["e.bin"]
        assert storage.walk_files() == {"e.bin": 1000}

        storage.delete("a")  # already gone
        storage.delete("never/existed.txt")
        assert storage.read_bytes("e.bin") == b"\x00" * 1000

    def test_delete_files_deletes_what_it_names_and_only_that(
        self, storage_spec: StorageSpec
    ) -> None:
        storage = storage_spec.open()
        names = ["ckpt/model.bin", "ckpt/weights [1].pt", "ckpt/sub/opt*.pt", "ckpt/kept.txt"]
        for name in names:
            storage.write_bytes(name, name.encode())

        storage.delete_files(
            ["ckpt/model.bin", "ckpt/weights [1].pt", "ckpt/sub/opt*.pt", "ckpt/gone"]
        )

        assert storage.walk_files("ckpt") == {"kept.txt": len(b"ckpt/kept.txt")}
        storage.delete_files([])
        storage.delete_files(["ckpt/model.bin"])  # already gone

    # -- atomic overwrite

    def test_overwrites_are_atomic_for_a_concurrent_reader(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        storage.write_bytes("state/experiment_state.json", _payload(0))
        done = threading.Event()
        first_read = threading.Event()
        seen: list[int] = []
        failures: list[BaseException] = []

        def read_until_done() -> None:
            try:
                while not done.is_set():
                    data = storage.read_bytes("state/experiment_state.json")
                    generation = int.from_bytes(data[:4], "big")
                    assert data == _payload(generation), f"torn read: {len(data)} bytes"
                    seen.append(generation)
                    first_read.set()
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)
                first_read.set()

        reader = threading.Thread(target=read_until_done, daemon=True)
        reader.start()
        try:
            assert first_read.wait(timeout=60)
            generation = 0
            # Keep overwriting until the reader has raced a fair number of writes.
            while generation < 20 or (len(seen) < 10 and generation < 500):
                generation += 1
                storage.write_bytes("state/experiment_state.json", _payload(generation))
        finally:
            done.set()
            reader.join(timeout=60)

        assert not failures, failures[0]
        assert len(seen) >= 10
        assert set(seen) <= set(range(generation + 1))
        assert storage.read_bytes("state/experiment_state.json") == _payload(generation)
        # No temporary file is left where a listing (a restore) would see it.
        assert storage.list_dir("state") == ["experiment_state.json"]
        assert storage.walk_files() == {"state/experiment_state.json": _PAYLOAD_SIZE}

    # -- bulk transfer

    def test_put_files_and_get_files_round_trip(
        self, storage_spec: StorageSpec, tmp_path: Path
    ) -> None:
        storage = storage_spec.open()
        files = _local_tree(tmp_path / "src")

        storage.put_files((str(tmp_path / "src" / rel), f"ckpt/{rel}") for rel in files)
        assert storage.walk_files("ckpt") == {rel: len(data) for rel, data in files.items()}

        storage.get_files((f"ckpt/{rel}", str(tmp_path / "dst" / rel)) for rel in files)
        for rel, data in files.items():
            assert (tmp_path / "dst" / rel).read_bytes() == data, rel

        storage.put_files([])
        storage.get_files([])

    def test_copy_files_copies_within_the_root_and_a_missing_source_raises_not_found(
        self, storage_spec: StorageSpec, tmp_path: Path
    ) -> None:
        storage = storage_spec.open()
        files = _local_tree(tmp_path / "src")
        storage.put_files((str(tmp_path / "src" / rel), f"a/ckpt/{rel}") for rel in files)

        storage.copy_files((f"a/ckpt/{rel}", f"b/copy/{rel}") for rel in files)
        assert storage.walk_files("b/copy") == {rel: len(data) for rel, data in files.items()}
        for rel, data in files.items():
            assert storage.read_bytes(f"b/copy/{rel}") == data, rel
        assert storage.walk_files("a/ckpt") == storage.walk_files("b/copy")  # a copy, not a move

        with pytest.raises(StorageNotFoundError):
            storage.copy_files([("a/ckpt/no-such-file", "b/copy/no-such-file")])
        storage.copy_files([])

    def test_a_5_mib_file_round_trip(self, storage_spec: StorageSpec, tmp_path: Path) -> None:
        storage = storage_spec.open()
        big = random_bytes(5 * 2**20 + 7)

        storage.write_bytes("big/written.bin", big)
        assert storage.read_bytes("big/written.bin") == big

        (tmp_path / "big.bin").write_bytes(big)
        storage.put_files([(str(tmp_path / "big.bin"), "big/put.bin")])
        storage.get_files([("big/put.bin", str(tmp_path / "back.bin"))])
        assert (tmp_path / "back.bin").read_bytes() == big
        assert storage.walk_files("big") == {"written.bin": len(big), "put.bin": len(big)}

    # -- opening and naming

    def test_open_returns_the_cached_instance(self, storage_spec: StorageSpec) -> None:
        storage = Storage.open(storage_spec)

        assert Storage.open(storage_spec) is storage
        assert storage_spec.open() is storage
        same_place = StorageSpec(storage_spec.url + "/", dict(storage_spec.options))
        assert Storage.open(same_place) is storage
        if not storage_spec.options:
            assert Storage.open(storage_spec.url) is storage

    def test_uri_names_what_a_user_can_open_again(self, storage_spec: StorageSpec) -> None:
        storage = storage_spec.open()
        root = normalize_url(storage_spec.url)
        storage.write_bytes("trials/t1/trial.json", b"{}")

        assert storage.uri() == storage.url == root
        assert storage.uri("trials/t1/trial.json") == f"{root}/trials/t1/trial.json"
        assert storage.uri("/trials/t1/") == f"{root}/trials/t1"
        if "://" not in storage_spec.url:  # a local path stays a plain path
            assert storage.uri("trials").startswith("/")
        # The URI, a sub-storage and a child spec all reach the same file.
        reopened = Storage.open(StorageSpec(storage.uri("trials/t1"), storage_spec.options))
        assert reopened.read_bytes("trial.json") == b"{}"
        assert storage.sub("trials").read_bytes("t1/trial.json") == b"{}"
        assert storage_spec.child("trials", "t1").open().read_bytes("trial.json") == b"{}"

    # -- several processes

    @_requires(shared=True)  # memory and local disks are not shared by definition
    def test_worker_processes_write_and_the_driver_reads_everything(
        self,
        storage_spec: StorageSpec,
        storage_backend: StorageBackend,
        request: pytest.FixtureRequest,
    ) -> None:
        from distributed import Client

        dask_cluster = request.getfixturevalue("dask_cluster")  # only once a test needs it

        expected: dict[str, bytes] = {}
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            workers = sorted(client.scheduler_info()["workers"])
            futures = []
            for index, address in enumerate(workers):
                for part in range(3):
                    rel = f"trials/worker{index}/part-{part}.bin"
                    expected[rel] = f"{index}:{part}:".encode() + random_bytes(2000)
                    futures.append(
                        client.submit(
                            _write_from_worker,
                            storage_spec,
                            rel,
                            expected[rel],
                            workers=[address],
                            allow_other_workers=False,
                            pure=False,
                        )
                    )
            writer_pids = set(client.gather(futures))

        assert len(writer_pids) == len(workers) == 2
        assert os.getpid() not in writer_pids
        storage = storage_spec.open()
        assert storage.list_dir("trials") == ["worker0", "worker1"]
        assert storage.walk_files("trials") == {
            rel.removeprefix("trials/"): len(data) for rel, data in expected.items()
        }
        for rel, data in expected.items():
            assert storage.read_bytes(rel) == data
