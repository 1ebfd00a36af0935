"""The one rule set that turns a path, storage options and a TuneStorage block into a location.

The rules are checked as a table on :func:`resolve_spec`; then every entry point that takes a
path and a block (``Tuner.can_restore``/``restore``, ``ResultGrid.from_path``, the
``prefect-tune`` command, ``RunConfig``) is checked to reach the same places with it.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import pytest

from prefect_tune import RunConfig, Tuner, cli
from prefect_tune.exceptions import ConfigError
from prefect_tune.results import ResultGrid
from prefect_tune.state import ExperimentStore
from prefect_tune.storage import (
    DEFAULT_STORAGE_PATH,
    StorageSpec,
    TuneStorage,
    normalize_url,
    resolve_spec,
)
from prefect_tune.tuner import storage_root
from tests._experiment_store import a_definition

S3_BLOCK = TuneStorage(
    storage_path="s3://bucket/tune/",
    storage_options={"endpoint_url": "http://127.0.0.1:9000"},
    credentials={"key": "AKIA-test", "secret": "s3cr3t"},
)
BLOCK_OPTIONS = {"endpoint_url": "http://127.0.0.1:9000", "key": "AKIA-test", "secret": "s3cr3t"}
LOCAL_BLOCK = TuneStorage(storage_path="/data/tune")


@pytest.mark.parametrize(
    ("path", "options", "block", "url", "expected_options"),
    [
        # No block: the path as given, with the options given.
        ("/data/exp", None, None, "/data/exp", {}),
        ("relative/exp", None, None, "relative/exp", {}),
        (Path("/data/exp"), None, None, "/data/exp", {}),
        ("~/exp", None, None, "~/exp", {}),
        ("s3://b/exp", {"anon": True}, None, "s3://b/exp", {"anon": True}),
        (None, None, None, DEFAULT_STORAGE_PATH, {}),
        (None, {"anon": True}, None, DEFAULT_STORAGE_PATH, {"anon": True}),
        # A block: a relative name below its root, with its options and credentials.
        ("exp", None, S3_BLOCK, "s3://bucket/tune/exp", BLOCK_OPTIONS),
        ("group/exp/", None, S3_BLOCK, "s3://bucket/tune/group/exp", BLOCK_OPTIONS),
        ("exp", None, LOCAL_BLOCK, "/data/tune/exp", {}),
        (Path("exp"), None, LOCAL_BLOCK, "/data/tune/exp", {}),
        # A block with a path that says where it is: used as it is, with the block's options.
        ("/elsewhere/exp", None, S3_BLOCK, "/elsewhere/exp", BLOCK_OPTIONS),
        ("gs://other/exp", None, S3_BLOCK, "gs://other/exp", BLOCK_OPTIONS),
        ("s3://bucket/other/exp", None, S3_BLOCK, "s3://bucket/other/exp", BLOCK_OPTIONS),
        ("~/exp", None, S3_BLOCK, "~/exp", BLOCK_OPTIONS),
        ("~", None, LOCAL_BLOCK, "~", {}),
        # A block and no path: the block's root. Empty options are no options.
        ("", None, S3_BLOCK, "s3://bucket/tune/", BLOCK_OPTIONS),
        (None, None, S3_BLOCK, "s3://bucket/tune/", BLOCK_OPTIONS),
        ("exp", {}, S3_BLOCK, "s3://bucket/tune/exp", BLOCK_OPTIONS),
    ],
)
def test_rules(
    path: Any, options: dict[str, Any] | None, block: TuneStorage | None, url: str, expected_options
):
    spec = resolve_spec(path, options, block)
    assert (spec.url, spec.options) == (url, expected_options)


def test_options_are_copied():
    options = {"anon": True}
    spec = resolve_spec("s3://b/exp", options)
    options["anon"] = False
    assert spec.options == {"anon": True}


@pytest.mark.parametrize("path", ["exp", "/elsewhere/exp", "s3://b/exp", "", None])
def test_block_with_options_is_refused(path):
    with pytest.raises(ConfigError, match="not both: put the options in the block"):
        resolve_spec(path, {"anon": True}, S3_BLOCK)


# -- every entry point follows the rules -------------------------------------------------------


def _store_experiment(spec: StorageSpec) -> None:
    definition = a_definition(param_space={}, num_samples=1, seed=0, total_trials=None)
    ExperimentStore(spec.open()).write_definition(definition)


@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    """A block root with an experiment below it, and experiments outside it, named by how a
    user would pass them with the block."""
    root = tmp_path / "root"
    places = {
        "relative": "exp",
        "absolute": str(tmp_path / "elsewhere" / "exp"),
        "url": f"memory://resolve-{uuid.uuid4().hex}/exp",
    }
    _store_experiment(StorageSpec(str(root / "exp")))
    _store_experiment(StorageSpec(places["absolute"]))
    _store_experiment(StorageSpec(places["url"]))
    return {"root": str(root), **places}


def _cli_spec(path: str, block: TuneStorage, monkeypatch) -> StorageSpec:
    # Loading a saved block is test_cli's business; here the loaded block is given directly.
    monkeypatch.setattr(cli, "_load_block", lambda name: block)
    return cli._spec(argparse.Namespace(path=path, option=None, block="tuning"), [])


@pytest.mark.parametrize("kind", ["relative", "absolute", "url"])
def test_entry_points_reach_the_same_place(places, kind, monkeypatch):
    block = TuneStorage(storage_path=places["root"], credentials={"token": "tok"})
    path = places[kind]
    expected = resolve_spec(path, storage=block)
    assert Tuner.can_restore(path, storage=block)
    assert ResultGrid.from_path(path, storage=block).experiment_path == normalize_url(expected.url)
    cli_spec = _cli_spec(path, block, monkeypatch)
    assert (cli_spec.url, cli_spec.options) == (expected.url, {"token": "tok"})
    assert not Tuner.can_restore(path + "-missing", storage=block)


def test_entry_points_refuse_a_block_with_options(monkeypatch):
    with pytest.raises(ConfigError, match="not both"):
        Tuner.can_restore("exp", storage=S3_BLOCK, storage_options={"anon": True})
    with pytest.raises(ConfigError, match="not both"):
        Tuner.restore("exp", lambda config: None, storage=S3_BLOCK, storage_options={"a": 1})
    with pytest.raises(ConfigError, match="not both"):
        ResultGrid.from_path("exp", storage=S3_BLOCK, storage_options={"anon": True})
    with pytest.raises(ConfigError, match="not both"):
        RunConfig(storage=S3_BLOCK, storage_options={"anon": True})
    monkeypatch.setattr(cli, "_load_block", pytest.fail)  # refused before the block is loaded
    with pytest.raises(ConfigError, match="not both"):
        cli._spec(argparse.Namespace(path="exp", option=["anon=true"], block="tuning"), [])


def test_run_config_storage_root():
    assert storage_root(RunConfig()) == StorageSpec(DEFAULT_STORAGE_PATH)
    root = storage_root(RunConfig(storage=S3_BLOCK))
    assert (root.url, root.options) == ("s3://bucket/tune/", BLOCK_OPTIONS)
    root = storage_root(RunConfig(storage_path="s3://b/tune", storage_options={"anon": True}))
    assert (root.url, root.options) == ("s3://b/tune", {"anon": True})
    # The block names the root itself: a storage_path beside it is refused.
    with pytest.raises(ConfigError, match="not both"):
        RunConfig(storage=S3_BLOCK, storage_path="/data/tune")
