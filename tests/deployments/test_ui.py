"""The Prefect UI of a real server, loaded by headless Chromium, shows the experiment's artifacts.

Screenshots are saved under the directory the test prints, for people to look at.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

from tests.deployments.conftest import Stack

CHROMIUM = "/usr/bin/chromium"


def _chromium(url: str, *extra: str) -> str:
    assert os.path.exists(CHROMIUM) or shutil.which("chromium"), (
        "Chromium is missing: install Debian's package (apt-get install -y chromium; .ci/run "
        "does it) to run the UI tests."
    )
    binary = CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        done = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--window-size=1400,1000",
                "--virtual-time-budget=20000",
                *extra,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, f"chromium {url}: {done.stderr[-2000:]}"
    return done.stdout


def _page(url: str, shot: str) -> str:
    _chromium(url, f"--screenshot={shot}")
    assert os.path.getsize(shot) > 0
    return _chromium(url, "--dump-dom")


def test_the_ui_shows_the_flow_run_and_its_artifacts(stack: Stack, nightly_run: Any) -> None:
    shots = tempfile.mkdtemp(prefix="prefect-tune-ui-")
    print(f"UI screenshots in {shots}")
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    slug = f"digits-{date}"

    run_page = _page(
        f"{stack.ui_url}/runs/flow-run/{nightly_run.id}", os.path.join(shots, "flow-run.png")
    )
    assert nightly_run.name in run_page, run_page[-3000:]

    artifacts = _page(f"{stack.ui_url}/artifacts", os.path.join(shots, "artifacts.png"))
    assert f"tune-{slug}-leaderboard" in artifacts
    assert f"tune-{slug}-summary" in artifacts

    # The flow run page's Artifacts tab falls back to Logs when loaded headless (seen with
    # Prefect 3.9.1's UI), so the content is checked on each artifact's own page.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=f"tune-{slug}-"))
        )
    by_key = {a.key: a for a in found}
    board = json.loads(by_key[f"tune-{slug}-leaderboard"].data)
    best_id = board[0]["trial_id"]
    expected = {
        # The table's columns and its best row, rendered by the UI's table component.
        "leaderboard": ["trial_id", "best_acc", "checkpoint_uri", best_id],
        # The markdown rendered: its headings and the best trial.
        "summary": ["Best trial", best_id, "TERMINATED"],
    }
    # The experiment is a subflow run of the deployment's run: its artifacts are on it.
    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        experiment = client.read_flow_run(by_key[f"tune-{slug}-summary"].flow_run_id)
        assert experiment.parent_task_run_id is not None
        parent = client.read_task_run(experiment.parent_task_run_id).flow_run_id
    assert str(parent) == str(nightly_run.id)
    assert experiment.parameters["experiment"] == slug
    experiment_page = _page(
        f"{stack.ui_url}/runs/flow-run/{experiment.id}", os.path.join(shots, "experiment.png")
    )
    assert experiment.name in experiment_page, experiment_page[-3000:]
    for kind, texts in expected.items():
        artifact = by_key[f"tune-{slug}-{kind}"]
        assert artifact.flow_run_id == experiment.id
        page = _page(
            f"{stack.ui_url}/artifacts/artifact/{artifact.latest_id}",
            os.path.join(shots, f"{kind}.png"),
        )
        for needle in texts:
            assert needle in page, (kind, needle, page[-3000:])
