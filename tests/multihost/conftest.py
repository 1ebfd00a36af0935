"""Fixtures of the multi-host tests: a base directory holding the "local disk" (a tmpfs of its
own on each other host), the shared directory (the NFS stand-in) and the process logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._hosts import namespaces_unavailable


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(f"cannot stand up other hosts here: {reason}")
    path = tmp_path_factory.mktemp("hosts")
    (path / "nfs").mkdir()
    (path / "local").mkdir()
    return path
