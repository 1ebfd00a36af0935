"""The servers of :mod:`prefect_tune.testing`: they serve what the tests and benchmarks need and
stop when their block ends."""

from __future__ import annotations

import pytest
import requests

from prefect_tune.storage import Storage, StorageSpec
from prefect_tune.testing import moto_server


@pytest.mark.parametrize("own_process", [False, True], ids=["thread", "process"])
def test_a_moto_server_serves_s3_until_its_block_ends(own_process: bool) -> None:
    with moto_server(own_process=own_process) as server:
        bucket = server.new_bucket()
        storage = Storage.open(StorageSpec(f"s3://{bucket}/root", server.options))
        storage.write_bytes("trials/t/trial.json", b"{}")
        assert storage.read_bytes("trials/t/trial.json") == b"{}"
        endpoint_url = server.endpoint_url

    with pytest.raises(requests.ConnectionError):
        requests.get(endpoint_url, timeout=5)
