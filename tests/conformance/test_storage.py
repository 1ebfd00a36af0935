"""The storage contract, checked on every backend: memory, local, shared dir, S3 (moto), GCS.

Each test taking ``storage_spec`` runs once per backend (see ``tests/conftest.py``); a new
backend gets the whole suite by being added there. The error cases at the end are not
parametrized: each needs one particular backend or failure.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import threading
import traceback
import uuid
from functools import partial
from pathlib import Path

import fsspec
import pytest

from prefect_tune.exceptions import (
    StorageCredentialsError,
    StorageDriverMissingError,
    StorageError,
    StorageNotFoundError,
    UnknownStorageSchemeError,
)
from prefect_tune.storage import Storage, StorageSpec, normalize_url, redact
from prefect_tune.storage._filesystem import PREALLOCATE_MIN_BYTES, copy_file
from tests._s3auth import create_access_key, moto_checks_credentials
from tests.conftest import BACKENDS

# The module: the package attribute `fsspec.registry` is the read-only mapping of loaded drivers.
_fsspec_registry = importlib.import_module("fsspec.registry")


def _random_bytes(size: int) -> bytes:
    """Random bytes ending in a fixed byte.

    gcp-storage-emulator parses uploads with the email package and drops a trailing ``\\r``
    (real GCS does not), so no payload here may end with one.
    """
    return os.urandom(size - 1) + b"."


# -- small files --------------------------------------------------------------------------------


def test_bytes_round_trip_and_overwrite(storage_spec: StorageSpec) -> None:
    storage = storage_spec.open()
    every_byte = bytes(range(256)) * 4

    storage.write_bytes("blobs/all.bin", every_byte)
    storage.write_bytes("blobs/empty.bin", b"")
    assert storage.read_bytes("blobs/all.bin") == every_byte
    assert storage.read_bytes("blobs/empty.bin") == b""

    storage.write_bytes("blobs/all.bin", b"shorter")
    assert storage.read_bytes("blobs/all.bin") == b"shorter"


def test_json_round_trip(storage_spec: StorageSpec) -> None:
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


def test_reading_a_missing_file_raises_not_found(storage_spec: StorageSpec) -> None:
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


# -- directories --------------------------------------------------------------------------------


def _write_tree(storage: Storage) -> None:
    storage.write_bytes("a/b/c.txt", b"abc")
    storage.write_bytes("a/d.txt", b"")
    storage.write_bytes("e.bin", b"\x00" * 1000)


def test_list_dir_of_nested_and_missing_dirs(storage_spec: StorageSpec) -> None:
    storage = storage_spec.open()
    assert storage.list_dir() == []
    _write_tree(storage)

    assert storage.list_dir() == ["a", "e.bin"]
    assert storage.list_dir("a") == ["b", "d.txt"]
    assert storage.list_dir("a/b") == ["c.txt"]
    assert storage.list_dir("a/b/") == ["c.txt"]
    assert storage.list_dir("missing") == []
    assert storage.list_dir("a/missing/deeper") == []


def test_walk_files_reports_relative_paths_and_sizes(storage_spec: StorageSpec) -> None:
    storage = storage_spec.open()
    assert storage.walk_files() == {}
    _write_tree(storage)

    assert storage.walk_files() == {"a/b/c.txt": 3, "a/d.txt": 0, "e.bin": 1000}
    assert storage.walk_files("a") == {"b/c.txt": 3, "d.txt": 0}
    assert storage.walk_files("missing") == {}


def test_exists(storage_spec: StorageSpec) -> None:
    storage = storage_spec.open()
    _write_tree(storage)

    assert storage.exists("a/b/c.txt")
    assert storage.exists("a/d.txt")
    assert storage.exists("a")
    assert storage.exists("a/b")
    assert not storage.exists("missing.txt")
    assert not storage.exists("a/missing")


def test_delete_a_file_a_tree_and_nothing(storage_spec: StorageSpec) -> None:
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


def test_delete_files_deletes_what_it_names_and_only_that(storage_spec: StorageSpec) -> None:
    storage = storage_spec.open()
    names = ["ckpt/model.bin", "ckpt/weights [1].pt", "ckpt/sub/opt*.pt", "ckpt/kept.txt"]
    for name in names:
        storage.write_bytes(name, name.encode())

    storage.delete_files(["ckpt/model.bin", "ckpt/weights [1].pt", "ckpt/sub/opt*.pt", "ckpt/gone"])

    assert storage.walk_files("ckpt") == {"kept.txt": len(b"ckpt/kept.txt")}
    storage.delete_files([])
    storage.delete_files(["ckpt/model.bin"])  # already gone


# -- atomic overwrite ---------------------------------------------------------------------------


_PAYLOAD_SIZE = 256 * 1024


def _payload(generation: int) -> bytes:
    """A payload whose every byte depends on its generation, so a torn read cannot pass."""
    fill = bytes([generation % 256]) * (_PAYLOAD_SIZE - 5)
    return generation.to_bytes(4, "big") + fill + b"."  # see _random_bytes for the last byte


def test_overwrites_are_atomic_for_a_concurrent_reader(storage_spec: StorageSpec) -> None:
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


# -- bulk transfer ------------------------------------------------------------------------------


def _local_tree(root: Path) -> dict[str, bytes]:
    files = {
        "model.bin": bytes(range(256)) * 40 + _random_bytes(1000),
        "nested/deep/optimizer.pt": _random_bytes(3000),
        "nested/empty.dat": b"",
        "with space.txt": "ünïcödé\n".encode(),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_put_files_and_get_files_round_trip(storage_spec: StorageSpec, tmp_path: Path) -> None:
    storage = storage_spec.open()
    files = _local_tree(tmp_path / "src")

    storage.put_files((str(tmp_path / "src" / rel), f"ckpt/{rel}") for rel in files)
    assert storage.walk_files("ckpt") == {rel: len(data) for rel, data in files.items()}

    storage.get_files((f"ckpt/{rel}", str(tmp_path / "dst" / rel)) for rel in files)
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data, rel

    storage.put_files([])
    storage.get_files([])


def test_a_5_mib_file_round_trip(storage_spec: StorageSpec, tmp_path: Path) -> None:
    storage = storage_spec.open()
    big = _random_bytes(5 * 2**20 + 7)

    storage.write_bytes("big/written.bin", big)
    assert storage.read_bytes("big/written.bin") == big

    (tmp_path / "big.bin").write_bytes(big)
    storage.put_files([(str(tmp_path / "big.bin"), "big/put.bin")])
    storage.get_files([("big/put.bin", str(tmp_path / "back.bin"))])
    assert (tmp_path / "back.bin").read_bytes() == big
    assert storage.walk_files("big") == {"written.bin": len(big), "put.bin": len(big)}


@pytest.mark.parametrize(
    "size", [0, 1, PREALLOCATE_MIN_BYTES - 1, PREALLOCATE_MIN_BYTES, 5 * 2**20 + 7]
)
def test_a_local_copy_is_exact_whatever_the_target_held_before(tmp_path: Path, size: int) -> None:
    # Files of PREALLOCATE_MIN_BYTES or more have their space reserved before the copy: the
    # copy must still end exactly where the source does, also over a bigger file.
    source = tmp_path / "source.bin"
    data = _random_bytes(size) if size else b""
    source.write_bytes(data)
    target = tmp_path / "target.bin"
    target.write_bytes(_random_bytes(6 * 2**20))

    copy_file(str(source), str(target))

    assert target.read_bytes() == data


# -- opening and naming -------------------------------------------------------------------------


def test_open_returns_the_cached_instance(storage_spec: StorageSpec) -> None:
    storage = Storage.open(storage_spec)

    assert Storage.open(storage_spec) is storage
    assert storage_spec.open() is storage
    same_place = StorageSpec(storage_spec.url + "/", dict(storage_spec.options))
    assert Storage.open(same_place) is storage
    if not storage_spec.options:
        assert Storage.open(storage_spec.url) is storage


def test_uri_names_what_a_user_can_open_again(storage_spec: StorageSpec) -> None:
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


# -- several processes --------------------------------------------------------------------------


def _write_from_worker(spec: StorageSpec, rel: str, data: bytes) -> int:
    """Runs in a Dask worker process: writes one file and says which process wrote it."""
    spec.open().write_bytes(rel, data)
    return os.getpid()


@pytest.mark.parametrize(
    "storage_backend",
    [b for b in BACKENDS if b.shared],  # memory and local disks are not shared by definition
    ids=[b.name for b in BACKENDS if b.shared],
    indirect=True,
)
def test_worker_processes_write_and_the_driver_reads_everything(
    storage_spec: StorageSpec, storage_backend, request: pytest.FixtureRequest
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
                expected[rel] = f"{index}:{part}:".encode() + _random_bytes(2000)
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


# -- error cases (one backend or failure each) ---------------------------------------------------


def test_unknown_scheme_names_the_scheme() -> None:
    with pytest.raises(UnknownStorageSchemeError, match="nosuchscheme") as caught:
        Storage.open(StorageSpec("nosuchscheme://bucket/experiments"))
    assert isinstance(caught.value, ValueError)


def test_a_missing_driver_package_is_named() -> None:
    protocol = f"tunetest{uuid.uuid4().hex[:8]}"
    hint = f"Install nonexistent-tune-driver to use {protocol}:// paths"
    fsspec.register_implementation(protocol, "nonexistent_tune_driver.FileSystem", errtxt=hint)
    try:
        with pytest.raises(StorageDriverMissingError, match="nonexistent-tune-driver") as caught:
            Storage.open(f"{protocol}://bucket/experiments")
    finally:
        _fsspec_registry.known_implementations.pop(protocol, None)
    assert isinstance(caught.value, ImportError)


def test_a_missing_s3fs_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if s3fs were not installed: its import fails and fsspec has not loaded it yet.
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(_fsspec_registry._registry, "s3", raising=False)

    with pytest.raises(StorageDriverMissingError) as caught:
        Storage.open(f"s3://no-driver-{uuid.uuid4().hex[:8]}/experiments")
    assert "pip install 'prefect-tune[s3]'" in str(caught.value)


@pytest.mark.parametrize("server_fixture, scheme", [("s3_server", "s3"), ("gcs_server", "gs")])
def test_a_missing_bucket_is_not_found(
    server_fixture: str, scheme: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(server_fixture)
    url = f"{scheme}://tune-missing-{uuid.uuid4().hex[:12]}/root"
    storage = Storage.open(StorageSpec(url, server.options))

    with pytest.raises(StorageNotFoundError, match=url):
        storage.read_bytes("experiment.json")
    with pytest.raises(StorageNotFoundError, match=url):
        storage.write_bytes("experiment.json", b"{}")
    assert storage.list_dir() == []
    assert not storage.exists("experiment.json")


def test_wrong_s3_credentials_are_named_and_the_secret_never_shown(s3_server) -> None:
    bucket = s3_server.new_bucket()
    key = create_access_key(s3_server.endpoint_url)
    wrong_secret = f"wrong-{uuid.uuid4().hex}"

    def spec(key_id: str, secret: str) -> StorageSpec:
        return StorageSpec(
            f"s3://{bucket}/root", {**s3_server.options, "key": key_id, "secret": secret}
        )

    right = spec(key["AccessKeyId"], key["SecretAccessKey"])
    bad_secret = spec(key["AccessKeyId"], wrong_secret)
    unknown_key = spec("AKIAUNKNOWNTUNETEST0", wrong_secret)

    with moto_checks_credentials(s3_server.endpoint_url):
        # The server does check: the right key works...
        right.open().write_bytes("ok.txt", b"ok")
        assert right.open().list_dir() == ["ok.txt"]
        # ...and a wrong secret or an unknown key is refused, with a named error.
        for bad in (bad_secret, unknown_key):
            storage = bad.open()
            for attempt in (
                partial(storage.write_bytes, "x.txt", b"x"),
                storage.list_dir,
                storage.walk_files,
            ):
                with pytest.raises(StorageCredentialsError) as caught:
                    attempt()
                assert isinstance(caught.value, PermissionError)
                assert f"s3://{bucket}/root" in str(caught.value)
                shown = "".join(traceback.format_exception(caught.value))
                assert wrong_secret not in shown
            # A read is refused too (its HEAD request gets a bare 403, so no more is known).
            with pytest.raises(StorageError) as refused:
                storage.read_bytes("ok.txt")
            assert isinstance(refused.value, PermissionError)
            assert wrong_secret not in "".join(traceback.format_exception(refused.value))
            assert wrong_secret not in repr(bad) + repr(storage)

    assert key["SecretAccessKey"] not in repr(right)
    assert "secret" in repr(right)  # the option is named, its value is not


def test_redact_masks_secret_looking_values() -> None:
    message = redact(
        "url?X-Amz-Signature=abc123&token=tok456 password: 'hunter2' secret=\"s3cr3t\""
    )
    for value in ("abc123", "tok456", "hunter2", "s3cr3t"):
        assert value not in message
