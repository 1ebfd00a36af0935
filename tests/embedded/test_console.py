"""What a user sees on the console of ``fit()`` with 16 local Dask workers: Prefect's lines,
progress lines, the final table; no Dask INFO chatter and no traceback for an orderly shutdown,
but a failing trial's traceback still shows."""

from __future__ import annotations

import re

import pytest

from tests.embedded.test_embedded import _start, _wait_until_gone

# As Progress.line() writes it: "exp: 5/8 finished (1 errored), 2 running, 1 pending |
# best loss=0.0123 (trial abcde_00003) | 1m12s elapsed, ~40s left".
PROGRESS = re.compile(
    r"^(Progress|Done): (?P<name>\S+): (?P<finished>\d+)/(?P<total>\d+) finished"
    r"(?: \((?P<errored>\d+) errored\))?"
    r"(?:, \d+ (?:running|paused|pending))*"
    r"(?: \| best loss=\S+ \(trial \S+\))?"
    r" \| (?:\d+h\d\dm|\d+m\d\ds|\d+s) elapsed(?:, ~(?:\d+h\d\dm|\d+m\d\ds|\d+s) left)?$"
)
# What distributed logs at INFO, in its own format ("2026-... - distributed.nanny - INFO - Start
# Nanny at: ...") or in Prefect's ("13:10:05.188 | INFO    | distributed.nanny - Start Nanny").
DASK_INFO = re.compile(r"distributed\.\S+ - INFO - |INFO +\| distributed\.")
# A row of the driver's final table: "37dd6_00000 TERMINATED 0 0".
TABLE_ROW = re.compile(r"^\s*[0-9a-f]{5}_\d{5}\s+[A-Z]+\s")


def _run(tmp_path, *args: str) -> str:
    home = tmp_path / "home"
    driver = _start(tmp_path, home, "--workers", "16", *args)
    try:
        output, _ = driver.communicate(timeout=420)
    finally:
        driver.kill()
    assert _wait_until_gone(home, timeout=30) == []
    assert driver.returncode == 0, output[-4000:]
    return output


def _progress(output: str) -> list[re.Match[str]]:
    lines = [line for line in output.splitlines() if line.startswith(("Progress: ", "Done: "))]
    matches = [PROGRESS.match(line) for line in lines]
    assert all(matches), [line for line, m in zip(lines, matches, strict=True) if not m]
    return [m for m in matches if m]


@pytest.mark.slow
def test_a_sixteen_worker_run_shows_progress_and_the_table_and_no_dask_chatter(tmp_path):
    output = _run(tmp_path, "--name", "quiet", "--trials", "48", "--sleep", "0.5")
    assert "EMBEDDED-DONE trials=48 errors=0" in output, output[-4000:]
    assert not DASK_INFO.findall(output), DASK_INFO.findall(output)[:5]
    assert "Traceback" not in output, output[-6000:]
    assert "CommClosedError" not in output, output[-6000:]
    progress = _progress(output)
    assert progress[0].group(1) == "Progress" and progress[0]["total"] == "48"
    assert progress[-1].group(1) == "Done" and progress[-1]["finished"] == "48"
    assert all(m["name"] == "quiet" for m in progress)
    assert "best loss=0 " in progress[-1].group(0)
    # The final table: a row per trial, best (x=0) among them.
    rows = [line.split() for line in output.splitlines() if TABLE_ROW.match(line)]
    assert len(rows) == 48 and {row[1] for row in rows} == {"TERMINATED"}
    # Prefect's own flow and task run lines are still there.
    assert "Finished in state" in output


@pytest.mark.slow
def test_a_failing_trial_keeps_its_traceback_and_verbose_3_shows_dask_info(tmp_path):
    output = _run(tmp_path, "--name", "loud", "--trials", "4", "--fail", "2", "--verbose", "3")
    assert "EMBEDDED-DONE trials=4 errors=1" in output, output[-4000:]
    assert "Traceback" in output and "trial x=2 fails on purpose" in output
    assert _progress(output)[-1]["errored"] == "1"


@pytest.mark.slow
def test_verbose_0_shows_no_progress_lines(tmp_path):
    output = _run(tmp_path, "--name", "silent", "--trials", "4", "--verbose", "0")
    assert "EMBEDDED-DONE trials=4 errors=0" in output, output[-4000:]
    assert not [line for line in output.splitlines() if line.startswith(("Progress: ", "Done: "))]
    assert not DASK_INFO.search(output)


@pytest.mark.parametrize("verbose", [4, -1, "2", 2.0])
def test_a_verbose_level_other_than_0_to_3_is_refused(verbose):
    from prefect_tune import RunConfig
    from prefect_tune.exceptions import ConfigError

    with pytest.raises(ConfigError, match="verbose"):
        RunConfig(verbose=verbose)


def test_verbose_false_and_true_are_levels_0_and_1_as_in_ray_tunes_examples():
    from prefect_tune import RunConfig

    assert RunConfig(verbose=False).verbose == 0
    assert RunConfig(verbose=True).verbose == 1


def test_the_dask_log_level_follows_verbose_unless_the_user_set_it(monkeypatch):
    import logging
    import os

    from prefect_tune._console import quiet_dask

    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    for verbose, level in [(0, "error"), (2, "warning"), (3, "info")]:
        with quiet_dask(verbose):  # what the local cluster's processes read at start
            assert os.environ["DASK_LOGGING__DISTRIBUTED"] == level
            assert logging.getLogger("distributed").level == getattr(logging, level.upper())
        assert "DASK_LOGGING__DISTRIBUTED" not in os.environ
    monkeypatch.setenv("DASK_LOGGING__DISTRIBUTED", "debug")
    with quiet_dask(0):
        assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "debug"
