"""The example deployments on a real Prefect server and worker: deploy, schedule, run, crash."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.deployments.conftest import Stack


@pytest.fixture
def client(stack: Stack) -> Iterator[Any]:
    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as c,
    ):
        yield c


def _wait_final(client: Any, flow_run_id: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        assert time.monotonic() < deadline, f"flow run {run.name} still {run.state}"
        time.sleep(1)


def _today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def test_deployments_carry_schedule_concurrency_and_triggers(stack: Stack, client: Any) -> None:
    nightly = client.read_deployment_by_name("tune-digits/nightly")
    assert nightly.work_pool_name == "tune-pool"
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.schedules[0].active
    assert nightly.global_concurrency_limit is not None
    assert nightly.global_concurrency_limit.limit == 1
    assert str(nightly.concurrency_options.collision_strategy.value) == "CANCEL_NEW"
    assert nightly.parameters["name"] == "digits-{date}"
    automations = {a.name: a for a in client.read_automations()}
    assert "tune-digits-resume-after-crash" in automations
    assert "digits-batch-inference-on-experiment-completed" in automations
    infer = client.read_deployment_by_name("digits-batch-inference/on-experiment-completed")
    assert infer.work_pool_name == "tune-pool"


def test_nightly_run_makes_the_dated_experiment(stack: Stack, nightly_run: Any) -> None:
    assert nightly_run.state.is_completed(), nightly_run.state
    assert nightly_run.name == f"tune-digits-{_today()}"
    assert nightly_run.parameters["name"] == "digits-{date}"
    assert os.path.isdir(os.path.join(stack.storage, "nightly", f"digits-{_today()}"))


def _flow_run_pid(flow_run_id: Any) -> int | None:
    """The pid of the process the worker started for the flow run (its env names the run)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"prefect" in f.read():
                    return int(pid)
    return None


def test_a_killed_run_is_run_again_and_resumes(stack: Stack, client: Any) -> None:
    from prefect.deployments import run_deployment

    storage = os.path.join(stack.storage, "crash")
    name = "crash-{date}"
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        first = run_deployment(
            "tune-digits/nightly",
            parameters={
                "storage_path": storage,
                "name": name,
                "num_samples": 1,
                "epochs": 40,
                "max_concurrent_trials": 1,
            },
            timeout=0,
        )
    experiment = os.path.join(storage, f"crash-{_today()}")
    deadline = time.monotonic() + 240
    pid = None
    while True:  # kill it once a trial has committed a checkpoint
        run = client.read_flow_run(first.id)
        assert not (run.state and run.state.is_final()), f"ended before the kill: {run.state}"
        pid = pid or _flow_run_pid(first.id)
        checkpoints = [
            d for _, ds, _ in os.walk(experiment) for d in ds if d.startswith("checkpoint")
        ]
        if pid and checkpoints:
            break
        assert time.monotonic() < deadline, "no checkpoint written in 240 s"
        time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    crashed = _wait_final(client, first.id, timeout=120)
    assert crashed.state.is_crashed(), crashed.state

    deployment_id = crashed.deployment_id
    deadline = time.monotonic() + 300
    while True:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        )
        again = [r for r in runs if r.name == crashed.name and r.id != crashed.id]
        if again and again[0].state and again[0].state.is_final():
            break
        assert time.monotonic() < deadline, f"no completed re-run: {[r.state for r in again]}"
        time.sleep(1)
    rerun = again[0]
    assert rerun.state.is_completed(), rerun.state
    assert rerun.parameters["name"] == f"crash-{_today()}"
    assert rerun.parameters["storage_path"] == storage


def test_after_crashes_in_a_row_the_resume_stops_and_says_why(stack: Stack, client: Any) -> None:
    from prefect.states import Crashed, Running

    storage = os.path.join(stack.storage, "loop")
    nightly = client.read_deployment_by_name("tune-digits/nightly")
    parameters = {
        **nightly.parameters,
        "storage_path": storage,
        "name": "loop-{date}",
        "num_samples": 1,
        "epochs": 2,
        "max_concurrent_trials": 1,
    }
    flow_run_name = f"tune-loop-{_today()}"
    crashed = [
        client.create_flow_run_from_deployment(
            nightly.id, parameters=parameters, name=flow_run_name, state=Running()
        )
        for _ in range(3)
    ]
    for run in crashed:  # as a worker reports a flow run process that died
        client.set_flow_run_state(run.id, Crashed(message="process killed"), force=True)

    crashed_ids = {r.id for r in crashed}
    deadline = time.monotonic() + 240
    while True:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])),
        )
        reruns = [r for r in runs if r.name == flow_run_name and r.id not in crashed_ids]
        if reruns and all(r.state and r.state.is_final() for r in reruns):
            break
        assert time.monotonic() < deadline, f"re-runs not final: {[r.state for r in reruns]}"
        time.sleep(1)
    failed = [r for r in reruns if r.state.is_failed()]
    assert failed, [r.state for r in reruns]
    assert not [r for r in reruns if r.state.is_completed()], [r.state for r in reruns]
    assert "crashed in a row" in failed[0].state.message, failed[0].state.message
    assert "CrashLoopError" in failed[0].state.message, failed[0].state.message
    assert not os.path.exists(os.path.join(storage, f"loop-{_today()}"))


def _completed_payload(experiment: str) -> dict[str, Any]:
    """The ``prefect-tune.experiment.completed`` payload of the contract, for a stored
    experiment (read from storage as the driver would have it at its end)."""
    from prefect_tune import ResultGrid

    grid = ResultGrid.from_path(experiment)
    best = grid.get_best_result(metric="acc", mode="max")
    assert best.checkpoint is not None
    return {
        "experiment_uri": experiment,
        "metric": "acc",
        "mode": "max",
        "best_trial_id": best.trial_id,
        "best_metric_value": best.metrics["acc"],
        "checkpoint_uri": best.checkpoint.path,
        "num_trials": len(grid),
        "num_errored": grid.num_errors,
    }


def _read_events(stack: Stack, names: list[str], resource_id: str) -> list[dict[str, Any]]:
    """The events named ``names`` about ``resource_id``, as the server's API returns them."""
    import httpx

    response = httpx.post(
        f"{stack.api_url}/events/filter",
        json={
            "filter": {
                "event": {"name": names},
                "resource": {"id": [resource_id]},
                "order": "ASC",
            },
            "limit": 50,
        },
        timeout=30,
    )
    response.raise_for_status()
    return list(response.json()["events"])


def test_the_nightly_run_emits_started_and_completed_events_with_the_outcome(
    stack: Stack, nightly_run: Any
) -> None:
    assert nightly_run.state.is_completed(), nightly_run.state
    name = f"digits-{_today()}"
    experiment = os.path.join(stack.storage, "nightly", name)
    names = ["prefect-tune.experiment.started", "prefect-tune.experiment.completed"]
    deadline = time.monotonic() + 60
    while True:  # the server records an event a moment after it is emitted
        events = _read_events(stack, names, f"prefect-tune.experiment.{name}")
        if {e["event"] for e in events} == set(names):
            break
        assert time.monotonic() < deadline, [e["event"] for e in events]
        time.sleep(1)
    assert [e["event"] for e in events] == names, [e["event"] for e in events]
    completed = events[-1]
    expected = _completed_payload(experiment)
    assert {k: completed["payload"].get(k) for k in expected} == expected
    assert completed["payload"]["num_terminated"] == expected["num_trials"]
    related = [r for r in completed["related"] if r["prefect.resource.role"] == "flow-run"]
    assert len(related) == 1 and related[0]["prefect.resource.id"].startswith("prefect.flow-run.")
    assert "secret" not in str(completed).lower()


def test_the_completed_event_starts_batch_inference_that_writes_predictions(
    stack: Stack, client: Any, nightly_run: Any
) -> None:
    assert nightly_run.state.is_completed(), nightly_run.state
    experiment = os.path.join(stack.storage, "nightly", f"digits-{_today()}")
    # The nightly run's own prefect-tune.experiment.completed event starts the inference; the
    # payload it must carry is read here from the stored experiment.
    payload = _completed_payload(experiment)

    inference = client.read_deployment_by_name("digits-batch-inference/on-experiment-completed")
    deadline = time.monotonic() + 300
    while True:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[inference.id])),
        )
        mine = [r for r in runs if r.parameters.get("experiment_uri") == experiment]
        if mine and all(r.state and r.state.is_final() for r in mine):
            break
        assert time.monotonic() < deadline, f"no final triggered run: {[r.state for r in mine]}"
        time.sleep(1)
    assert len(mine) == 1, [r.name for r in mine]  # one event, one run
    for run in mine:
        assert run.state.is_completed(), run.state
        assert run.parameters["checkpoint_uri"] == payload["checkpoint_uri"]
        assert run.parameters["storage_block"] is None  # the deployment's, under the trigger's
        predictions = os.path.join(experiment, "predictions", f"{run.id}.csv")
        with open(predictions) as f:
            lines = f.read().splitlines()
        assert lines[0] == "index,label,prediction,confidence" and len(lines) == 1 + 200
