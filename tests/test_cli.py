"""The ``prefect-tune`` command over experiments stored by the engine (no Prefect needed), and
once over a ``TuneStorage`` block saved to the session's Prefect API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import prefect_tune as tune
from prefect_tune.cli import main
from prefect_tune.state import ExperimentStore, FlowRunRecord
from prefect_tune.storage import StorageSpec
from tests import trainables
from tests._experiment_store import make_controller


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root with two finished experiments:

    - ``quad``: ``quadratic`` over x in 1, 3, 5 (loss = (x - 3)^2 / step, 5 steps): x=3 is best.
    - ``flaky``: ``raises_at`` with fail_at 3 (ERROR after step 2) and 99 (TERMINATED, 5 steps).
    """
    path = tmp_path_factory.mktemp("cli-root")
    _, quad = make_controller(
        str(path / "quad"), trainables.quadratic, {"x": tune.grid_search([1.0, 3.0, 5.0])}
    )
    quad.run()
    _, flaky = make_controller(
        str(path / "flaky"), trainables.raises_at, {"fail_at": tune.grid_search([3, 99])}
    )
    flaky.run()
    (path / "not-an-experiment").mkdir()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_lists_experiments_with_status_counts(root, capsys):
    code, out, err = run(capsys, "ls", str(root))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["EXPERIMENT", "TRIALS", "STATUS", "UPDATED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"quad", "flaky"}
    assert rows["quad"][1:3] == ["3", "TERMINATED=3"]
    assert rows["flaky"][1:4] == ["2", "TERMINATED=1", "ERROR=1"]


def test_ls_of_an_empty_root_says_so(tmp_path, capsys):
    code, out, _ = run(capsys, "ls", str(tmp_path))
    assert code == 0
    assert out.strip() == f"No experiments under {tmp_path}."


def test_show_prints_definition_lineage_and_trials(root, capsys):
    code, out, err = run(capsys, "show", str(root / "flaky"))
    assert code == 0, err
    assert f"({root / 'flaky'})" in out
    assert "Metric      loss (min)" in out
    assert "num_samples=1, trials=2, seed=0" in out
    assert "Driver      none live" in out  # the engine released its lease
    assert "Trials: 2 (TERMINATED=1 ERROR=1)" in out
    table = out.split("Trials:")[1].splitlines()
    assert table[1].split() == ["TRIAL", "STATUS", "fail_at", "loss", "ITER", "CHECKPOINT"]
    assert table[2].split() == ["abcde_00000", "ERROR", "3", "2", "2", "checkpoint_000001"]
    assert table[3].split() == ["abcde_00001", "TERMINATED", "99", "5", "5", "checkpoint_000004"]
    assert "abcde_00000: ValueError: boom at step 3" in out.split("Errors:")[1]


def test_show_lists_the_flow_runs_that_drove_the_experiment(root, capsys):
    store = ExperimentStore(StorageSpec(str(root / "quad")).open())
    state = store.read_state()
    assert state is not None
    state.flow_runs.append(
        FlowRunRecord(flow_run_id=str(uuid.uuid4()), flow_run_name="quad", run_count=2)
    )
    store.write_state(state)
    code, out, _ = run(capsys, "show", str(root / "quad"))
    assert code == 0
    lineage = out.split("Flow runs:")[1].split("Trials:")[0].splitlines()
    assert lineage[1].split() == ["#", "NAME", "ID", "RUN", "STARTED"]
    assert lineage[2].split()[:4] == ["1", "quad", state.flow_runs[0].flow_run_id, "2"]


def test_best_prints_the_best_trial(root, capsys):
    code, out, err = run(capsys, "best", str(root / "quad"))
    assert code == 0, err
    assert out.splitlines()[0] == "Best trial  abcde_00001 (TERMINATED) by loss (min, last)"
    assert 'Config      {"x": 3.0}' in out
    assert '"loss": 0.0' in out
    assert "Iterations  5" in out
    checkpoint = root / "quad" / "trials" / "quadratic_abcde_00001" / "checkpoint_000004"
    assert f"Checkpoint  {checkpoint}" in out


def test_best_json_with_metric_mode_and_scope(root, capsys):
    # By max loss averaged over all reports, x=1 (first of the tie with x=5) is "best".
    code, out, err = run(
        capsys, "best", str(root / "quad"), "--metric", "loss", "--mode", "max", "--scope", "avg"
    )
    assert code == 0, err
    assert "abcde_00000" in out.splitlines()[0]
    code, out, err = run(capsys, "best", str(root / "quad"), "--json", "--scope", "all")
    assert code == 0, err
    best = json.loads(out)
    assert best["trial_id"] == "abcde_00001"
    assert best["config"] == {"x": 3.0}
    assert best["metrics"]["loss"] == 0.0 and best["metrics"]["training_iteration"] == 5
    assert (best["metric"], best["mode"], best["scope"]) == ("loss", "min", "all")
    assert best["checkpoint"].endswith("quadratic_abcde_00001/checkpoint_000004")
    assert best["path"].endswith("quadratic_abcde_00001")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "{root}/missing"], "ExperimentNotFoundError: No experiment is stored at"),
        (["best", "{root}/not-an-experiment"], "ExperimentNotFoundError: No experiment"),
        (["ls", "{root}/nothing-here"], "StorageNotFoundError: Nothing is stored at"),
        (["ls", "foo://bucket/tune"], "UnknownStorageSchemeError: Unknown storage scheme 'foo'"),
        (["best", "{root}/quad", "--metric", "nope"], "MetricNotReportedError: No best trial"),
        (["ls", "{root}", "--option", "novalue"], "ConfigError: Each --option must be NAME=VALUE"),
    ],
)
def test_errors_print_one_line_and_exit_2(root, capsys, argv, message):
    code, out, err = run(capsys, *(a.format(root=root) for a in argv))
    assert code == 2
    assert out == ""
    assert err.startswith(f"prefect-tune: error: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_storage_option_values_never_printed(capsys):
    code, _, err = run(
        capsys,
        "show",
        "memory://nowhere/exp",
        "--option",
        "secret=hunter2-value",
        "--option",
        'x={"token": "tok-123456"}',
    )
    assert code == 2 and "ExperimentNotFoundError" in err
    assert "hunter2-value" not in err and "tok-123456" not in err


def test_block_names_the_storage_root(root, capsys, prefect_api):
    from prefect_tune import TuneStorage

    name = f"cli-{uuid.uuid4().hex[:8]}"
    TuneStorage(storage_path=str(root), credentials={"token": "never-shown-123"}).save(name)
    code, out, err = run(capsys, "ls", "--block", name)
    assert code == 0, err
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"quad", "flaky"}
    code, out, err = run(capsys, "best", "quad", "--block", name, "--json")
    assert code == 0, err
    assert json.loads(out)["config"] == {"x": 3.0}
    code, out, err = run(capsys, "show", "missing", "--block", name)
    assert code == 2 and "ExperimentNotFoundError" in err and "never-shown-123" not in err
    code, _, err = run(capsys, "ls", "--block", f"{name}-absent")
    assert code == 2 and f"Could not load the TuneStorage block '{name}-absent'" in err


def test_console_script(root):
    script = Path(sys.executable).with_name("prefect-tune")
    if not script.exists():
        pytest.skip(f"{script} is not installed: pip install -e . --no-deps")
    done = subprocess.run(
        [str(script), "best", str(root / "quad"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["config"] == {"x": 3.0}
    missing = subprocess.run(
        [str(script), "show", str(root / "missing")], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("prefect-tune: error: ExperimentNotFoundError: ")
