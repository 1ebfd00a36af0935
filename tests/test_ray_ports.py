"""Ray Tune's examples, ported by changing their imports only (``examples/ray_ports/``), run
small (``--smoke-test``) in a process of their own, as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_tune import ResultGrid
from tests._env import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PORTS = Path(REPO_ROOT) / "examples" / "ray_ports"


def run_port(name: str, home: Path, prefect_api: str) -> str:
    env = dict(os.environ)
    env.update(
        HOME=str(home),  # the default storage_path, ~/prefect_tune_results, lands here
        PREFECT_API_URL=prefect_api,
        DASK_DISTRIBUTED__WORKER__RESOURCES='{"CPU": 1}',  # Ray's {"cpu": 1} per trial
        PYTHONPATH=REPO_ROOT,
    )
    done = subprocess.run(
        [sys.executable, str(PORTS / name), "--smoke-test"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_the_imports_are_all_that_changed():
    text = (PORTS / "async_hyperband_example.py").read_text()
    assert "ray" not in text.split('"""', 2)[2].replace("# was: from ray", "")


def test_async_hyperband_example(tmp_path, prefect_api):
    out = run_port("async_hyperband_example.py", tmp_path, prefect_api)
    assert "Best hyperparameters found were: " in out
    best = out.split("Best hyperparameters found were: ", 1)[1].strip()
    grid = ResultGrid.from_path(str(tmp_path / "prefect_tune_results" / "asynchyperband_test"))
    assert len(grid) == 20 and grid.num_terminated == 20 and not grid.errors
    # --smoke-test stops every trial after its first report: ASHA (grace_period=5) saw each
    # row and stopped none; the best printed is the stored best.
    assert {len(r.metrics_dataframe) for r in grid} == {1}
    assert str(grid.get_best_result().config["width"]) in best
    stored = json.loads(
        (tmp_path / "prefect_tune_results" / "asynchyperband_test" / "decisions.json").read_text()
    )
    assert stored["data"]["scheduler"]["kind"] == "AsyncHyperBandScheduler"
    assert stored["data"]["stopped"] == []
