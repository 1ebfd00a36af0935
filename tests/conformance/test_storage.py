"""The storage contract, checked on every backend: memory, local, shared dir, S3 (moto), GCS.

:class:`TestStorage` is the suite of :mod:`prefect_tune.testing.storage_suite`, run once per
backend of :data:`~prefect_tune.testing.storage_suite.BACKENDS` through the ``storage_spec``
fixture of ``tests/conftest.py``: a new backend gets the whole suite by being added there. The
tests after it are not parametrized: each needs one particular backend or failure.
"""

from __future__ import annotations

import importlib
import sys
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
from prefect_tune.storage import Storage, StorageSpec, redact
from prefect_tune.storage._filesystem import PREALLOCATE_MIN_BYTES, copy_file
from prefect_tune.testing.storage_suite import BACKENDS, StorageSuite, random_bytes
from tests._s3auth import create_access_key, moto_checks_credentials

# The module: the package attribute `fsspec.registry` is the read-only mapping of loaded drivers.
_fsspec_registry = importlib.import_module("fsspec.registry")


class TestStorage(StorageSuite):
    backends = BACKENDS


# -- a local copy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, PREALLOCATE_MIN_BYTES - 1, PREALLOCATE_MIN_BYTES, 5 * 2**20 + 7]
)
def test_a_local_copy_is_exact_whatever_the_target_held_before(tmp_path: Path, size: int) -> None:
    # Files of PREALLOCATE_MIN_BYTES or more have their space reserved before the copy: the
    # copy must still end exactly where the source does, also over a bigger file.
    source = tmp_path / "source.bin"
    data = random_bytes(size) if size else b""
    source.write_bytes(data)
    target = tmp_path / "target.bin"
    target.write_bytes(random_bytes(6 * 2**20))

    copy_file(str(source), str(target))

    assert target.read_bytes() == data


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
