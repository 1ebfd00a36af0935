"""``flows/tune_then_infer.py`` on the test Prefect API: the digits experiment tuned, then batch
inference run as a subflow with its best checkpoint; read back through the API and storage."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_tune import ResultGrid
from prefect_tune.storage import Storage, StorageSpec, layout
from tests._env import import_flow

pytestmark = pytest.mark.slow


def test_the_pipeline_tunes_then_scores_with_the_best_checkpoint(
    prefect_api: str, tmp_path: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    pipeline = import_flow("tune_then_infer")
    storage = str(tmp_path / "results")
    state = pipeline.tune_then_infer(
        storage_path=storage,
        name="chain",
        num_samples=1,
        epochs=2,
        max_concurrent_trials=1,
        batch_size=30,
        return_state=True,
    )
    assert state.is_completed(), state
    out = state.result()
    experiment = f"{storage}/chain"
    grid = ResultGrid.from_path(experiment)
    assert len(grid) == 2 and grid.num_terminated == 2  # one sample x two penalties
    best = grid.get_best_result(metric="acc", mode="max")
    assert out["inference"]["checkpoint"] == best.get_best_checkpoint("acc", "max").path

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(
                    any_=[state.state_details.flow_run_id]
                )
            )
        )
        flows = {client.read_flow(run.flow_id).name: run for run in children}
        assert set(flows) == {"tune-digits", "digits-batch-inference"}, flows
        inference = flows["digits-batch-inference"]
        assert inference.state is not None and inference.state.is_completed(), inference.state
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[inference.id]))
        )
    predictions = layout.predictions_file(str(inference.id))
    assert out["inference"]["predictions"] == f"{experiment}/{predictions}"
    text = Storage.open(StorageSpec(experiment)).read_bytes(predictions).decode()
    assert len(text.splitlines()) == 1 + 30
    assert [a.key for a in artifacts if a.key] == ["digits-scores-chain"]
