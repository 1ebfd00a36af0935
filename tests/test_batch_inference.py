"""``flows/batch_inference.py`` on the test Prefect API: a checkpoint of a stored digits
experiment, named as the ``completed`` event names it (or its experiment), scored; the
predictions written beside the experiment and a table artifact published; bad input refused by
name with nothing written, and no credential in an artifact or a log."""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import Any

import pytest

import prefect_tune as tune
from prefect_tune import CheckpointConfig, TuneStorage
from prefect_tune.storage import Storage, StorageSpec, layout
from tests._env import import_flow
from tests._experiment_store import make_controller

SECRET = "infer-s3cr3t-" + uuid.uuid4().hex[:8]  # the block's credential: never to be seen


@pytest.fixture(scope="module")
def flows() -> Any:
    return import_flow("batch_inference")


def _root(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> tuple[StorageSpec, TuneStorage]:
    """A fresh storage root of ``kind`` and an unsaved block that reaches it (on S3 with a
    credential of its own, kept as a secret)."""
    if kind == "local":
        spec = StorageSpec(str(tmp_path / "results"))
        return spec, TuneStorage(storage_path=spec.url)
    server = request.getfixturevalue("s3_server" if kind == "s3" else "gcs_server")
    scheme = "s3" if kind == "s3" else "gs"
    url = f"{scheme}://{server.new_bucket()}/results"
    options = server.options
    if kind == "s3":  # moto takes any key: the block's own, with the secret below
        options.pop("key")
        options.pop("secret")
        credentials = {"key": "AKIAINFERTEST", "secret": SECRET}
        return StorageSpec(url, {**options, **credentials}), TuneStorage(
            storage_path=url, storage_options=options, credentials=credentials
        )
    return StorageSpec(url, options), TuneStorage(storage_path=url, storage_options=options)


def _digits_experiment(flows: Any, spec: StorageSpec, name: str) -> Any:
    """A finished digits experiment ``name`` of two trials of two epochs, every checkpoint kept."""
    tune_digits = import_flow("tune_digits")
    store, controller = make_controller(
        spec.child(name),
        tune_digits.train_digits,
        {
            "alpha": 1e-4,
            "eta0": 0.05,
            "learning_rate": "constant",
            "penalty": tune.grid_search(["l2", "elasticnet"]),
            "epochs": 2,
        },
        checkpoint_config=CheckpointConfig(),
    )
    controller.run()
    return store


@pytest.fixture
def info_logs() -> Any:
    """Prefect's loggers at INFO in this process (the suite runs at WARNING), so prints and
    run logs of the flows run here reach the API."""
    import logging

    logger = logging.getLogger("prefect")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.fixture
def client(prefect_api: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        yield c


def _artifacts(client: Any, flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )


def _logs(client: Any, flow_run_id: Any, until: str) -> list[str]:
    """The flow run's log messages, once one containing ``until`` has reached the API."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 60
    while True:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        messages = [log.message for log in logs]
        if any(until in m for m in messages):
            return messages
        assert time.monotonic() < deadline, f"no log with {until!r}: {messages}"
        time.sleep(0.5)


@pytest.mark.parametrize("kind", ["local", "s3", "gcs"])
def test_the_events_checkpoint_uri_is_scored_and_written_beside_the_experiment(
    flows: Any,
    client: Any,
    info_logs: None,
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Any,
) -> None:
    spec, block = _root(kind, request, tmp_path)
    block_name = f"infer-{kind}-{uuid.uuid4().hex[:6]}"
    block.save(block_name)
    store = _digits_experiment(flows, spec, "Digits_Run.7")
    grid = tune.ResultGrid.from_path(spec.child("Digits_Run.7").url, spec.options)
    best = grid.get_best_result(metric="acc", mode="max")
    checkpoint_uri = best.get_best_checkpoint(metric="acc", mode="max").path

    state = flows.batch_inference(
        checkpoint_uri=checkpoint_uri,
        experiment_uri=store.storage.uri(),
        metric="acc",
        mode="max",
        storage_block=block_name,
        batch_size=50,
        return_state=True,
    )
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    out = state.result()
    assert out["checkpoint"] == checkpoint_uri
    rel = layout.predictions_file(str(flow_run_id))
    assert out["predictions"] == store.storage.uri(rel)
    rows = list(csv.DictReader(io.StringIO(store.storage.read_bytes(rel).decode())))
    assert len(rows) == 50 and set(rows[0]) == {"index", "label", "prediction", "confidence"}
    right = sum(r["label"] == r["prediction"] for r in rows)
    assert out["accuracy"] == round(right / 50, 4) and out["accuracy"] > 0.5

    (artifact,) = _artifacts(client, flow_run_id)
    assert artifact.key == "digits-scores-digits-run-7"
    assert artifact.type == "table"
    assert '"digit": "all"' in str(artifact.data) or "'digit': 'all'" in str(artifact.data)
    assert checkpoint_uri in (artifact.description or "")
    messages = _logs(client, flow_run_id, until="Predictions written to")
    seen = " ".join([str(artifact.data), artifact.description or "", *messages, repr(out)])
    assert SECRET not in seen and "AKIAINFERTEST" not in seen


def test_an_experiment_path_alone_picks_the_best_checkpoint(
    flows: Any, prefect_api: str, tmp_path: Any
) -> None:
    spec = StorageSpec(str(tmp_path / "results"))
    store = _digits_experiment(flows, spec, "digits")
    grid = tune.ResultGrid.from_path(store.storage.uri())
    best = grid.get_best_result(metric="acc", mode="max")
    out = flows.batch_inference(experiment_path=store.storage.uri(), batch_size=20)
    assert out["trial_id"] == best.trial_id
    assert out["checkpoint"] == best.get_best_checkpoint(metric="acc", mode="max").path
    assert out["batch_size"] == 20
    assert Storage.open(StorageSpec(out["predictions"])).exists()


def _damage_model(store: Any, checkpoint_uri: str) -> None:
    """Overwrites model.pkl with bytes of the same size: its record still matches."""
    rel = checkpoint_uri[len(store.storage.uri()) + 1 :] + "/model.pkl"
    size = len(store.storage.read_bytes(rel))
    store.storage.write_bytes(rel, b"\x00" * size)


@pytest.mark.parametrize(
    "case, error",
    [
        ("missing", "CheckpointNotFoundError"),
        ("outside", "CheckpointOutsideExperimentError"),
        ("deleted-file", "IncompleteCheckpointError"),
        ("junk-model", "does not hold a digits model"),
        ("other-experiment", "ConfigError"),
        ("nothing", "ConfigError"),
    ],
)
def test_bad_input_fails_by_name_and_writes_nothing(
    flows: Any, client: Any, tmp_path: Any, case: str, error: str
) -> None:
    spec = StorageSpec(str(tmp_path / "results"))
    store = _digits_experiment(flows, spec, "digits")
    checkpoint = tune.ResultGrid.from_path(store.storage.uri())[0].checkpoint
    assert checkpoint is not None
    uri, experiment = checkpoint.path, None
    if case == "missing":
        uri = uri.rsplit("/", 1)[0] + "/checkpoint_000042"
    elif case == "outside":
        outside = tmp_path / "elsewhere" / "trials" / "t" / "checkpoint_000001"
        outside.mkdir(parents=True)
        (outside / "model.pkl").write_bytes(b"not a model")
        uri = str(outside)
    elif case == "deleted-file":
        store.storage.delete(uri[len(store.storage.uri()) + 1 :] + "/progress.json")
    elif case == "junk-model":
        _damage_model(store, uri)
    elif case == "other-experiment":
        experiment = str(tmp_path / "results" / "another")
    elif case == "nothing":
        uri = "None"  # what a trigger renders for a payload field that is missing
    before = {rel: store.storage.read_bytes(rel) for rel in store.storage.walk_files()}

    state = flows.batch_inference(
        checkpoint_uri=uri, experiment_uri=experiment, batch_size=10, return_state=True
    )
    assert state.is_failed(), state
    assert state.message and error in state.message, state.message
    after = {rel: store.storage.read_bytes(rel) for rel in store.storage.walk_files()}
    assert after == before
    assert not store.storage.exists(layout.PREDICTIONS_DIR)
    published = [a for a in _artifacts(client, state.state_details.flow_run_id) if a.key]
    assert published == []  # Prefect's own result record of the failure has no key
