"""`TuneStorage`, the Prefect block: Prefect's standard block checks, and the block used for real.

Against the session's Prefect API (``prefect_api``) and moto S3 server (``s3_server``): a block
saved here is loaded by name in a fresh process that never imported prefect_tune (Prefect finds
the class through the ``prefect.collections`` entry point), reads and writes S3 through
``get_storage()``, and its secret shows up in no API response, log or repr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from urllib.error import URLError
from urllib.request import urlopen

import boto3
import httpx
import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect.types import SecretDict

from prefect_tune import TuneStorage


class TestTuneStorageIsAStandardBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[TuneStorage]:
        return TuneStorage

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # Prefect requires an http(s) logo URL (a data: URL fails its validation when the block
        # type is saved). Where the network reaches it, run Prefect's own check of the image;
        # offline, check what can be: a pinned https URL of a PNG, which the API accepted when
        # the block type was registered (test_prefect_block_register_finds_the_block).
        try:
            urlopen(str(block._logo_url), timeout=10).close()
        except (URLError, TimeoutError):
            url = str(block._logo_url)
            assert url.startswith("https://") and url.endswith(".png")
            return
        super().test_has_a_valid_image(block)


# -- against the Prefect API --------------------------------------------------------------------


@pytest.fixture
def prefect_logs() -> Iterator[list[str]]:
    """Every log message any logger emits during the test, at every level, formatted."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    # Prefect's loggers do not propagate to the root logger, so listen on them too.
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _run(args: list[str], api_url: str) -> subprocess.CompletedProcess[str]:
    """Runs a command in a fresh process that talks to the test API and logs everything."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_LOGGING_LEVEL": "DEBUG"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, check=False)


def test_prefect_block_register_finds_the_block(prefect_api: str) -> None:
    result = _run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_tune"], prefect_api
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully registered 1 block" in result.stdout
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("tune-storage")
    assert block_type.name == "Tune Storage"
    assert str(block_type.logo_url) == str(TuneStorage._logo_url)
    assert 'TuneStorage.load("BLOCK_NAME")' in (block_type.code_example or "")


def test_a_saved_block_works_by_name_in_a_fresh_process_and_keeps_its_secret(
    prefect_api: str, s3_server, prefect_logs: list[str]
) -> None:
    bucket = s3_server.new_bucket()
    secret = f"tune-secret-{uuid.uuid4().hex}"
    name = f"s3-{uuid.uuid4().hex[:8]}"
    block = TuneStorage(
        storage_path=f"s3://{bucket}/experiments",
        storage_options={
            "endpoint_url": s3_server.endpoint_url,
            "client_kwargs": {"region_name": "us-east-1"},
        },
        credentials=SecretDict({"key": "tune-key", "secret": secret}),
    )
    block.save(name)

    # In this process: load by name, write through get_storage(), see the object in the bucket.
    loaded = TuneStorage.load(name)
    assert isinstance(loaded, TuneStorage)
    assert loaded.spec().options["secret"] == secret
    loaded.get_storage().write_bytes("from-parent.txt", b"written by the test")
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    stored = s3.get_object(Bucket=bucket, Key="experiments/from-parent.txt")["Body"].read()
    assert stored == b"written by the test"

    # In a fresh process that has never imported prefect_tune: Block.load finds the class.
    script = textwrap.dedent(
        f"""
        import json, sys
        from prefect.blocks.core import Block

        assert "prefect_tune" not in sys.modules
        block = Block.load("tune-storage/{name}")
        storage = block.get_storage()
        storage.write_bytes("from-child.txt", b"written by a fresh process")
        print(json.dumps({{
            "class": type(block).__module__ + "." + type(block).__qualname__,
            "read": storage.read_bytes("from-parent.txt").decode(),
            "repr": repr(block),
        }}))
        """
    )
    child = _run([sys.executable, "-c", script], prefect_api)
    assert child.returncode == 0, child.stdout + child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["class"] == "prefect_tune.storage._block.TuneStorage"
    assert report["read"] == "written by the test"
    stored = s3.get_object(Bucket=bucket, Key="experiments/from-child.txt")["Body"].read()
    assert stored == b"written by a fresh process"
    assert loaded.get_storage().read_bytes("from-child.txt") == b"written by a fresh process"

    # The secret is in no API answer, repr or log (the child logged at DEBUG).
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            name, block_type_slug="tune-storage", include_secrets=False
        )
        schema_fields = document.block_schema.fields if document.block_schema else {}
    assert set(document.data["credentials"]) == {"key", "secret"}
    assert secret not in document.model_dump_json()
    assert "credentials" in str(schema_fields.get("secret_fields"))
    api_answers = [
        httpx.get(f"{prefect_api}/block_types/slug/tune-storage/block_documents/name/{name}"),
        httpx.post(f"{prefect_api}/block_documents/filter", json={}),
    ]
    for answer in api_answers:
        answer.raise_for_status()
        assert name in answer.text
        assert secret not in answer.text
    assert secret not in repr(block) + repr(loaded) + repr(loaded.spec()) + report["repr"]
    assert secret not in child.stdout + child.stderr
    assert prefect_logs, "the log listener heard nothing"
    assert not [line for line in prefect_logs if secret in line]
