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


@pytest.mark.parametrize("name", ["async_hyperband_example.py", "pbt_function.py"])
def test_the_imports_are_all_that_changed(name):
    text = (PORTS / name).read_text()
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


def test_pbt_function(tmp_path, prefect_api):
    out = run_port("pbt_function.py", tmp_path, prefect_api)
    assert "Best hyperparameters found were: " in out
    path = tmp_path / "prefect_tune_results" / "pbt_function_api_example"
    grid = ResultGrid.from_path(str(path))
    assert len(grid) == 8 and grid.num_terminated == 8 and not grid.errors
    best = grid.get_best_result()
    assert repr(best.config["lr"]) in out.split("Best hyperparameters found were: ", 1)[1]
    stored = json.loads((path / "decisions.json").read_text())
    assert stored["data"]["scheduler"]["kind"] == "PopulationBasedTraining"
    assert stored["data"]["scheduler"]["data"]["pending"] == {}
    for result in grid:
        # --smoke-test: stop={"training_iteration": 10}; checkpoints at 5 and 10 (the step
        # the trainable carries, checkpoint_interval=5), or a donor's after an exploit.
        iterations = list(result.metrics_dataframe["training_iteration"])
        assert iterations == sorted(set(iterations)) and iterations[-1] <= 10, iterations
        assert result.checkpoint is not None
        for record in result.exploits:  # when trials overlap enough for PBT to exploit
            assert record.donor_trial_id != result.trial_id
            assert (
                0.0001 <= record.new_config["lr"] <= 0.02 or record.operations["lr"] != "resample"
            )
            assert record.new_config["some_other_factor"] in (1, 2)
