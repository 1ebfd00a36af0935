"""The storage suite as a backend's authors use it: a subclass, its backends and one fixture."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUBCLASS = """
import uuid

import pytest

from prefect_tune.storage import StorageSpec
from prefect_tune.testing.storage_suite import StorageBackend, StorageSuite


class TestInMemory(StorageSuite):
    backends = (StorageBackend("mem-a", shared=False), StorageBackend("mem-b", shared=False))

    @pytest.fixture
    def storage_spec(self, storage_backend):
        spec = StorageSpec(f"memory://{storage_backend.name}-{uuid.uuid4().hex}")
        yield spec
        spec.open().delete("")
"""


def test_a_subclass_runs_the_suite_on_each_of_its_backends(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_in_memory=SUBCLASS)

    result = pytester.runpytest_inprocess("-v", "-rs", "-p", "no:cacheprovider")

    # 14 tests on each backend; the multi-process one needs a shared backend: neither has it.
    result.assert_outcomes(passed=28, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*::TestInMemory::test_bytes_round_trip_and_overwrite[[]mem-a[]] PASSED*",
            "*::TestInMemory::test_bytes_round_trip_and_overwrite[[]mem-b[]] PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["SKIPPED*needs a backend with shared=True; none of mem-a, mem-b has it"]
    )


def test_a_subclass_without_backends_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_nothing="""
from prefect_tune.testing.storage_suite import StorageSuite


class TestNothing(StorageSuite):
    pass
"""
    )

    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")

    assert result.ret != 0
    result.stdout.fnmatch_lines(["*TestNothing sets no backends to run on*"])
