"""What an experiment shows in Prefect: its flow run's parameters, artifacts and events, read
back through a real Prefect API (the session's ``prefect_test_harness``)."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.sorting import ArtifactSort

import prefect_tune as tune
from prefect_tune import ResultGrid, RunConfig, TuneConfig, Tuner
from prefect_tune.exceptions import ConfigError
from prefect_tune.prefect._ui import artifact_keys, artifact_slug, public_url
from prefect_tune.testing import flow_runs_named
from tests import trainables
from tests._s3auth import create_access_key

pytestmark = pytest.mark.slow

EVENTS = "prefect-tune.experiment."


# -- reading back what a user sees ----------------------------------------------------------------


def artifacts_of(flow_run_id: Any) -> list[Any]:
    """Every artifact (every version) of a flow run, newest first."""
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(str(flow_run_id))])
                ),
                sort=ArtifactSort.CREATED_DESC,
            )
        )


def latest(artifacts: list[Any], key: str) -> Any:
    versions = [a for a in artifacts if a.key == key]
    assert versions, f"no artifact {key!r} among {sorted({a.key for a in artifacts})}"
    return versions[0]


def experiment_events(name: str, expect: set[str], wait_s: float = 90.0) -> list[dict[str, Any]]:
    """The ``prefect-tune.experiment.*`` events of experiment ``name`` read from the API's
    ``/events/filter``, oldest first, once every event name in ``expect`` is among them (the
    server persists events in batches); all of them after ``wait_s`` otherwise."""
    body = {
        "filter": {
            "event": {"prefix": [EVENTS]},
            "resource": {"id": [f"{EVENTS}{name}"]},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + wait_s
    while True:
        with get_client(sync_client=True) as client:
            events = client.request("POST", "/events/filter", json=body).json()["events"]
        if expect <= {e["event"] for e in events} or time.monotonic() > deadline:
            return sorted(events, key=lambda e: e["occurred"])
        time.sleep(1.0)


def one(events: list[dict[str, Any]], name: str, flow_run_id: Any = None) -> dict[str, Any]:
    """The last event called ``name`` (of flow run ``flow_run_id`` when given)."""
    found = [
        e
        for e in events
        if e["event"] == name and (flow_run_id is None or related_run(e) == str(flow_run_id))
    ]
    assert found, f"no {name} among {[e['event'] for e in events]}"
    return found[-1]


def related_run(event: dict[str, Any]) -> str | None:
    for resource in event.get("related", []):
        if resource.get("prefect.resource.role") == "flow-run":
            return resource["prefect.resource.id"].removeprefix("prefect.flow-run.")
    return None


def dips_tuner(name: str, storage_path: str, runner: Any, **run: Any) -> Tuner:
    return Tuner(
        trainables.dips,
        param_space={"x": tune.grid_search([3.0, 1.0, 2.0]), "low": tune.choice([2, 3])},
        tune_config=TuneConfig(metric="loss", mode="min", seed=0),
        run_config=RunConfig(name=name, storage_path=storage_path, **run),
        task_runner=runner,
    )


def check_artifacts(
    run_id: Any, name: str, results: ResultGrid, storage_url: str, total: int
) -> list[Any]:
    """The artifacts of a finished experiment's flow run, checked against its results."""
    keys = artifact_keys(name)
    artifacts = artifacts_of(run_id)
    assert {a.key for a in artifacts} == set(keys.values())
    progress = [a for a in artifacts if a.key == keys["progress"]]
    assert len(progress) == 1  # updated in place
    assert progress[0].type == "progress" and float(progress[0].data) == 100.0

    best = results.get_best_result()
    board = json.loads(latest(artifacts, keys["leaderboard"]).data)
    assert latest(artifacts, keys["leaderboard"]).type == "table"
    assert len(board) == total
    assert board[0]["trial_id"] == best.metrics["trial_id"]
    by_id = {r.metrics["trial_id"]: r for r in results}
    for row in board:
        result = by_id[row["trial_id"]]
        history = list(result.metrics_dataframe["loss"])
        assert row["status"] == "TERMINATED"
        assert json.loads(row["config"]) == result.config
        assert row["last_loss"] == history[-1]
        assert row["best_loss"] == min(history) < history[-1]
        assert row["iterations"] == 5
        assert row["checkpoint_uri"] == public_url(result.checkpoint.path)
        assert row["checkpoint_uri"].startswith(public_url(storage_url))
    losses = [row["last_loss"] for row in board]
    assert losses == sorted(losses)

    summary = latest(artifacts, keys["summary"])
    assert summary.type == "markdown"
    text = summary.data
    assert best.metrics["trial_id"].replace("_", "\\_") in text
    assert f"| TERMINATED | {total} |" in text
    uri = public_url(best.checkpoint.path)
    assert f"[`{uri}`]({uri.replace(' ', '%20')})" in text
    assert f"{best.metrics['loss']:.6g}" in text
    return artifacts


# -- slugs and keys: no server ----------------------------------------------------------------------


def test_artifact_keys_of_hostile_names():
    names = ["My Exp_1", "my-exp-1", "my_exp_1", "MY EXP 1", "実験-α", "ß" * 3, "x" * 200, "---"]
    names.append("x" * 199 + "y")
    slugs = [artifact_slug(n) for n in names]
    assert len(set(slugs)) == len(names)  # no two experiments share keys
    for name, slug in zip(names, slugs, strict=True):
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug), (name, slug)
        assert len(slug) <= 70
        for key in artifact_keys(name).values():
            assert re.fullmatch(r"tune-[a-z0-9-]+-(progress|leaderboard|summary)", key)
    assert artifact_slug("digits-2") == "digits-2"  # a slug already is kept as it is
    assert artifact_slug("My Exp_1").startswith("my-exp-1-")


def test_run_config_artifacts_must_be_a_bool():
    with pytest.raises(ConfigError, match="artifacts"):
        RunConfig(artifacts="yes")  # type: ignore[arg-type]


def test_hostile_stored_trials_render_as_text():
    """What the artifacts show of trials read from storage (ids, configs, NaN best values)
    stays text: no markup, no invalid JSON."""
    from prefect_tune.engine import Progress
    from prefect_tune.prefect._ui import PrefectUIObserver
    from prefect_tune.state import TrialStatus, TrialSummary
    from prefect_tune.storage import StorageSpec

    storage = StorageSpec(f"memory://ui-{uuid.uuid4().hex}").open()
    trial = TrialSummary(
        trial_id="<img src=x onerror=alert(1)>",
        index=0,
        dir_name="t_0",
        config={"x": "[click](javascript:alert(1)) | *bold*"},
        status=TrialStatus.TERMINATED,
        last_result={"loss": 1.0, "note": "<script>x</script>"},
        best_metric=float("nan"),
    )
    progress = Progress("exp", 1, {TrialStatus.TERMINATED: 1}, 1.0, "loss", "min", done=True)
    ui = PrefectUIObserver("exp", storage, None)
    board = ui.leaderboard(progress, [trial])
    assert json.loads(json.dumps(board, allow_nan=False))[0]["best_loss"] is None
    text = ui.summary(progress, [trial])
    for raw in (r"<img", r"<script", r"\]\(javascript", r"\| \*bold"):
        assert not re.search(r"(?<!\\)" + raw, text), raw  # each one escaped
    assert "\\<img src=x onerror=alert\\(1\\)\\>" in text


def test_public_url_strips_credentials():
    assert public_url("s3://AKIA123:s3/cr:3t@bucket/tune") == "s3://bucket/tune"
    assert public_url("sftp://user@host/tune") == "sftp://user@host/tune"  # no secret there
    assert "s3cr3t" not in public_url("gs://bucket/tune?token=s3cr3t&x=1")
    assert "s3cr3t" not in public_url("https://u:s3cr3t@host:9000/a?X-Amz-Signature=s3cr3t")
    assert public_url("/data/tune") == "/data/tune"


# -- end to end ----------------------------------------------------------------------------------


def test_fit_shows_parameters_artifacts_and_events(prefect_api, runner, tmp_path):
    name = "My Exp_1 α"
    results = dips_tuner(name, str(tmp_path), runner, artifacts=True).fit()
    assert results.num_terminated == 3
    (run,) = flow_runs_named(name)
    assert run.state.is_completed()
    params = run.parameters
    assert params["experiment"] == name
    assert params["storage_path"] == str(tmp_path / name)
    assert params["trainable"] == "tests.trainables.dips"
    assert (params["metric"], params["mode"], params["num_samples"]) == ("loss", "min", 1)
    assert "grid_search" in params["search_space"] and '"low"' in params["search_space"]

    check_artifacts(run.id, name, results, str(tmp_path / name), 3)

    events = experiment_events(name, {EVENTS + "started", EVENTS + "completed"})
    started = one(events, EVENTS + "started", run.id)
    assert started["resource"]["prefect.resource.id"] == f"{EVENTS}{name}"
    completed = one(events, EVENTS + "completed", run.id)
    best = results.get_best_result()
    assert completed["payload"] == {
        "experiment_uri": str(tmp_path / name),
        "metric": "loss",
        "mode": "min",
        "best_trial_id": best.metrics["trial_id"],
        "best_metric_value": best.metrics["loss"],
        "checkpoint_uri": best.checkpoint.path,
        "num_trials": 3,
        "num_terminated": 3,
        "num_errored": 0,
    }
    updated = one(events, EVENTS + "best-updated", run.id)
    assert updated["payload"]["best_trial_id"] == best.metrics["trial_id"]
    assert not [e for e in events if e["event"] == EVENTS + "failed"]


def test_fit_inside_a_user_flow_is_a_subflow_with_its_own_parameters(prefect_api, runner, tmp_path):
    name = f"inner-{uuid.uuid4().hex[:6]}"

    @flow(name="user-pipeline")
    def pipeline(epochs: int = 3) -> str:
        results = dips_tuner(name, str(tmp_path), runner).fit()
        return results.get_best_result().metrics["trial_id"]

    best_id = pipeline()
    (run,) = flow_runs_named(name)
    assert run.parent_task_run_id is not None  # a subflow run of the user's flow
    assert run.parameters["experiment"] == name and run.parameters["metric"] == "loss"
    with get_client(sync_client=True) as client:
        parent_task = client.read_task_run(run.parent_task_run_id)
        parent = client.read_flow_run(parent_task.flow_run_id)
    assert parent.parameters == {"epochs": 3}  # the user's flow keeps its own
    artifacts = artifacts_of(run.id)
    keys = artifact_keys(name)
    assert {a.key for a in artifacts} == set(keys.values())
    assert not artifacts_of(parent.id)  # on the experiment's run, not the user's
    events = experiment_events(name, {EVENTS + "completed"})
    assert one(events, EVENTS + "completed", run.id)["payload"]["best_trial_id"] == best_id


def test_artifacts_off(prefect_api, runner, tmp_path):
    name = f"quiet-{uuid.uuid4().hex[:6]}"
    results = dips_tuner(name, str(tmp_path), runner, artifacts=False).fit()
    assert results.num_terminated == 3
    (run,) = flow_runs_named(name)
    assert artifacts_of(run.id) == []
    events = experiment_events(name, {EVENTS + "completed"})
    assert one(events, EVENTS + "completed", run.id)["payload"]["num_trials"] == 3


def test_no_credentials_in_parameters_artifacts_or_events(prefect_api, runner, s3_server):
    key = create_access_key(s3_server.endpoint_url)
    secrets = [key["AccessKeyId"], key["SecretAccessKey"]]
    options = {k: v for k, v in s3_server.options.items() if k not in ("key", "secret")}
    options.update(key=secrets[0], secret=secrets[1])
    bucket = s3_server.new_bucket()
    name = f"s3-{uuid.uuid4().hex[:6]}"
    results = dips_tuner(name, f"s3://{bucket}/tune", runner, storage_options=options).fit()
    assert results.num_terminated == 3
    (run,) = flow_runs_named(name)
    artifacts = check_artifacts(run.id, name, results, f"s3://{bucket}/tune/{name}", 3)
    events = experiment_events(name, {EVENTS + "started", EVENTS + "completed"})
    assert one(events, EVENTS + "completed")["payload"]["experiment_uri"] == (
        f"s3://{bucket}/tune/{name}"
    )
    shown = json.dumps(
        [
            run.parameters,
            [(a.key, a.description, a.data) for a in artifacts],
            events,
        ],
        default=str,
    )
    assert bucket in shown
    for secret in secrets:
        assert secret not in shown


def test_restored_experiment_reports_the_whole_experiment(prefect_api, runner, tmp_path):
    poison = tmp_path / "poison"
    poison.mkdir()
    (poison / "b").write_text("")
    name = f"restored-{uuid.uuid4().hex[:6]}"
    tuner = Tuner(
        trainables.flaky,
        param_space={
            "key": tune.grid_search(["a", "b", "c"]),
            "poison_dir": str(poison),
            "fail_at": 2,
        },
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name=name, storage_path=str(tmp_path / "store")),
        task_runner=runner,
    )
    first = tuner.fit()
    assert first.num_errors == 1 and first.num_terminated == 2
    (first_run,) = flow_runs_named(name)
    events = experiment_events(name, {EVENTS + "failed"})
    failed = one(events, EVENTS + "failed", first_run.id)
    assert failed["payload"]["error_type"] == "TrialsErroredError"
    assert failed["payload"]["num_errored"] == 1 and failed["payload"]["num_trials"] == 3
    assert failed["payload"]["will_retry"] is False

    (poison / "b").unlink()
    path = str(tmp_path / "store" / name)
    results = Tuner.restore(path, trainables.flaky, resume_errored=True, task_runner=runner).fit()
    assert results.num_terminated == 3
    second = next(r for r in flow_runs_named(name) if r.id != first_run.id)
    assert second.state.is_completed()
    keys = artifact_keys(name)
    artifacts = artifacts_of(second.id)
    board = json.loads(latest(artifacts, keys["leaderboard"]).data)
    assert sorted(row["trial_id"] for row in board) == sorted(
        r.metrics["trial_id"] for r in results
    )
    assert {row["status"] for row in board} == {"TERMINATED"}
    assert "| TERMINATED | 3 |" in latest(artifacts, keys["summary"]).data
    assert float(latest(artifacts, keys["progress"]).data) == 100.0
    events = experiment_events(name, {EVENTS + "completed"})
    completed = one(events, EVENTS + "completed", second.id)
    assert completed["payload"]["num_trials"] == 3  # the trials of both runs
    assert completed["payload"]["num_errored"] == 0
    assert completed["payload"]["best_trial_id"] == results.get_best_result().metrics["trial_id"]


def test_flow_retry_reports_the_whole_experiment(prefect_api, runner, tmp_path):
    poison = tmp_path / "poison"
    poison.mkdir()
    (poison / "p").write_text("")
    name = f"retried-{uuid.uuid4().hex[:6]}"
    results = Tuner(
        trainables.flaky,
        param_space={
            "key": tune.grid_search(["p", "q"]),
            "poison_dir": str(poison),
            "fail_at": 3,
            "fail_once": True,
        },
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name=name, storage_path=str(tmp_path / "store"), flow_retries=1),
        task_runner=runner,
    ).fit()
    assert results.num_terminated == 2
    (run,) = flow_runs_named(name)
    assert run.run_count == 2 and run.state.is_completed()
    events = experiment_events(name, {EVENTS + "failed", EVENTS + "completed"})
    assert one(events, EVENTS + "failed", run.id)["payload"]["will_retry"] is True
    completed = one(events, EVENTS + "completed", run.id)
    assert completed["payload"]["num_trials"] == 2 and completed["payload"]["num_errored"] == 0
    summary = latest(artifacts_of(run.id), artifact_keys(name)["summary"]).data
    assert "| TERMINATED | 2 |" in summary and "ERROR" not in summary


def test_credentials_in_the_url_are_never_shown(prefect_api, runner, s3_server):
    """s3fs takes no credentials from a URL (``s3://KEY:SECRET@bucket``): such a path is refused
    before anything runs, by an error that shows neither the key nor the secret."""
    key = create_access_key(s3_server.endpoint_url)
    bucket = s3_server.new_bucket()
    options = {k: v for k, v in s3_server.options.items() if k not in ("key", "secret")}
    url = f"s3://{key['AccessKeyId']}:{key['SecretAccessKey']}@{bucket}/tune"
    name = f"s3url-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ConfigError, match="carries credentials") as raised:
        dips_tuner(name, url, runner, storage_options=options).fit()
    assert f"s3://{bucket}/tune" in str(raised.value)
    for secret in (key["AccessKeyId"], key["SecretAccessKey"]):
        assert secret not in str(raised.value)
    assert flow_runs_named(name) == []
    with pytest.raises(ConfigError, match="carries credentials"):
        ResultGrid.from_path(url)
    assert public_url(url) == f"s3://{bucket}/tune"


def test_an_api_that_refuses_artifacts_never_fails_the_experiment(
    prefect_api, runner, tmp_path, caplog
):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from prefect_tune.testing import faulty_api_proxy

    name = f"refused-{uuid.uuid4().hex[:6]}"

    def artifacts_down(method: str, path: str) -> bool:
        return path.startswith("/api/artifacts") and method in ("POST", "PATCH")

    with (
        faulty_api_proxy(prefect_api, refuse=artifacts_down) as (url, refused),
        temporary_settings(updates={PREFECT_API_URL: url}),
        caplog.at_level("WARNING", logger="prefect_tune"),
    ):
        results = dips_tuner(name, str(tmp_path), runner).fit()
    assert results.num_terminated == 3 and results.num_errors == 0
    assert refused and all(r.startswith(("POST /api/artifacts", "PATCH")) for r in refused)
    (run,) = flow_runs_named(name)
    assert run.state.is_completed()
    assert artifacts_of(run.id) == []
    warnings = [r for r in caplog.records if "Could not publish the progress" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert name in warnings[0].getMessage()


def test_fail_fast_emits_failed(prefect_api, runner, tmp_path):
    name = f"fast-{uuid.uuid4().hex[:6]}"
    results = Tuner(
        trainables.raises_at,
        param_space={"fail_at": tune.grid_search([1, None, None])},
        tune_config=TuneConfig(metric="loss", mode="min", max_concurrent_trials=1),
        run_config=RunConfig(
            name=name, storage_path=str(tmp_path), failure_config=tune.FailureConfig(fail_fast=True)
        ),
        task_runner=runner,
    ).fit()
    assert results.num_errors == 1
    (run,) = flow_runs_named(name)
    assert run.state.is_failed()
    events = experiment_events(name, {EVENTS + "failed"})
    failed = one(events, EVENTS + "failed", run.id)["payload"]
    assert failed["error_type"] == "TrialsErroredError" and "boom at step 1" in failed["error"]
    assert failed["num_errored"] == 1 and failed["experiment_uri"] == str(tmp_path / name)
    assert not [e for e in events if e["event"] == EVENTS + "completed"]
    summary = latest(artifacts_of(run.id), artifact_keys(name)["summary"]).data
    assert "| ERROR | 1 |" in summary
