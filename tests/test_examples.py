"""Ray Tune's examples, ported by changing imports, run as scripts (small: ``--smoke-test``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prefect_tune import ResultGrid
from tests._env import REPO_ROOT

pytestmark = [pytest.mark.slow]


def test_optuna_example_runs_as_ported(prefect_api, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "examples", "optuna_example.py"), "--smoke-test"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Best hyperparameters found were: " in done.stdout
    (experiment,) = (tmp_path / "prefect_tune_results").iterdir()
    grid = ResultGrid.from_path(str(experiment))
    assert len(grid) == 10 and not grid.errors
    record = json.loads((experiment / "search.json").read_text())
    assert record["kind"] == "ConcurrencyLimiter"
    assert record["searcher"]["settings"]["searcher"][0] == "OptunaSearch"
    assert len({(c["width"], c["height"]) for _, _, c in record["suggested"]}) == 10
    # The example's scheduler, ASHA, stopped some trials before their 100 steps.
    assert sum(len(r.metrics_dataframe) for r in grid) < 10 * 100
    best = grid.get_best_result()
    assert best.metrics["mean_loss"] == min(r.metrics["mean_loss"] for r in grid)
