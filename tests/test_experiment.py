"""End-to-end experiments: a real Prefect API, a real Dask cluster, local and S3 storage."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter

import prefect_tune as tune
from prefect_tune import CheckpointConfig, ResultGrid, RunConfig, TuneConfig, Tuner
from prefect_tune.exceptions import (
    ConfigError,
    ConfigNotSerializableError,
    MetricNotReportedError,
    SearchSpaceError,
    UnknownStorageSchemeError,
)
from prefect_tune.storage import Storage, StorageSpec, layout
from prefect_tune.testing import flow_runs_named
from tests import trainables

pytestmark = pytest.mark.slow


def quadratic_tuner(name, storage_path, runner, storage_options=None, **tune_kwargs):
    return Tuner(
        trainables.quadratic,
        param_space={
            "x": tune.grid_search([1.0, 2.0, 3.0, 4.0]),
            "lr": tune.loguniform(1e-4, 1e-1),
        },
        tune_config=TuneConfig(
            metric="loss", mode="min", max_concurrent_trials=2, seed=0, **tune_kwargs
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_options=storage_options,
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="acc", checkpoint_score_order="max"
            ),
        ),
        task_runner=runner,
    )


def check_quadratic_results(results: ResultGrid, storage: Storage) -> None:
    """What a user sees after the quadratic experiment, checked against what it reported."""
    assert len(results) == 4
    assert results.num_terminated == 4 and results.num_errors == 0 and results.errors == []
    best = results.get_best_result()
    assert best.config["x"] == 3.0
    assert best.metrics["loss"] == 0.0 and best.metrics["training_iteration"] == 5
    frame = best.metrics_dataframe
    assert list(frame["training_iteration"]) == [1, 2, 3, 4, 5]
    assert list(frame["loss"]) == [0.0] * 5
    for result in results:
        x = result.config["x"]
        assert result.metrics["loss"] == pytest.approx((x - 3.0) ** 2 / 5)
        # acc rises with the step, so the best two by acc are the last two.
        assert [m["training_iteration"] for _, m in result.best_checkpoints] == [4, 5]
        with result.checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as fh:
            assert json.load(fh) == {"step": 5, "x": x}
    frame = results.get_dataframe()
    assert sorted(frame["config/x"]) == [1.0, 2.0, 3.0, 4.0]
    worst = results.get_best_result(metric="loss", mode="max")
    assert worst.config["x"] == 1.0

    # The stored tree.
    assert storage.exists(layout.EXPERIMENT_FILE) and storage.exists(layout.EXPERIMENT_STATE_FILE)
    trial_dirs = storage.list_dir(layout.TRIALS_DIR)
    assert len(trial_dirs) == 4
    for name in trial_dirs:
        names = storage.list_dir(layout.trial_dir(name))
        assert layout.TRIAL_FILE in names and layout.RESULTS_DIR in names
        assert sorted(n for n in names if n.startswith("checkpoint_")) == [
            "checkpoint_000003",
            "checkpoint_000004",
        ]
        ckpt_files = storage.list_dir(f"{layout.trial_dir(name)}/checkpoint_000004")
        assert ckpt_files == ["state.json", "weights.bin"]

    # Rebuilt from the URI alone, with no cached filesystem.
    Storage._cache.clear()
    again = ResultGrid.from_path(storage.url, storage_options=storage.spec.options)
    assert again.get_best_result().config == best.config
    assert again.num_terminated == 4


def test_local_experiment_end_to_end(prefect_api, runner, tmp_path):
    results = quadratic_tuner("local-exp", str(tmp_path), runner).fit()
    check_quadratic_results(results, Storage.open(StorageSpec(str(tmp_path / "local-exp"))))
    assert results.experiment_path == str(tmp_path / "local-exp")

    flow_runs = flow_runs_named("local-exp")
    assert len(flow_runs) == 1 and flow_runs[0].state.is_completed()
    task_runs = experiment_task_runs("local-exp", expected=4)
    assert len(task_runs) == 4
    for task_run in task_runs:
        assert task_run.state.is_completed()
        assert "local-exp" in task_run.tags
        assert "x=" in task_run.name and task_run.name.startswith("quadratic_")


def experiment_task_runs(name: str, expected: int) -> list:
    """The task runs of the experiment's flow runs, once the API has recorded ``expected`` of
    them in a final state: it records task runs from their events, a moment after they ran."""

    def runs():
        flow_run_ids = [r.id for r in flow_runs_named(name)]
        with get_client(sync_client=True) as client:
            return client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": flow_run_ids}),
                task_run_filter=TaskRunFilter(),
            )

    deadline = time.monotonic() + 30.0
    while True:
        task_runs = runs()
        recorded = [t for t in task_runs if t.state is not None and t.state.is_final()]
        if len(recorded) >= expected or time.monotonic() > deadline:
            return task_runs
        time.sleep(0.2)


@pytest.mark.parametrize("tags", [("team-a", "nightly"), ()], ids=["custom", "none"])
def test_trial_tags(prefect_api, runner, tmp_path, tags):
    name = f"tags-{len(tags)}-{uuid.uuid4().hex[:6]}"
    results = Tuner(
        trainables.quadratic,
        param_space={"x": tune.grid_search([1.0, 2.0]), "steps": 1},
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name=name, storage_path=str(tmp_path), trial_tags=tags),
        task_runner=runner,
    ).fit()
    assert results.num_terminated == 2
    task_runs = experiment_task_runs(name, expected=2)
    assert len(task_runs) == 2
    for task_run in task_runs:
        assert task_run.state.is_completed() and sorted(task_run.tags) == sorted(tags)
        assert task_run.name.startswith("quadratic_")


def test_s3_experiment_end_to_end(prefect_api, runner, s3_server):
    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/sub-path"
    results = quadratic_tuner("s3-exp", url, runner, storage_options=s3_server.options).fit()
    check_quadratic_results(results, Storage.open(StorageSpec(f"{url}/s3-exp", s3_server.options)))


def test_fit_inside_a_user_flow_is_a_subflow(prefect_api, runner, tmp_path):
    @flow
    def nightly_tuning():
        return quadratic_tuner("sub-exp", str(tmp_path), runner).fit().num_terminated

    assert nightly_tuning() == 4

    (run,) = flow_runs_named("sub-exp")
    assert run.parent_task_run_id is not None


def test_context_inside_a_trial(prefect_api, runner, tmp_path):
    results = Tuner(
        trainables.records_context,
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name="ctx", storage_path=str(tmp_path)),
        task_runner=runner,
    ).fit()
    (result,) = list(results)
    assert result.metrics["ctx_experiment"] == "ctx"
    assert result.metrics["ctx_trial_dir"] == result.path
    assert result.metrics["ctx_trial_id"] == result.metrics["trial_id"]


def test_trainable_that_raises_and_missing_metric_are_errored_trials(prefect_api, runner, tmp_path):
    results = Tuner(
        trainables.raises_at,
        param_space={"fail_at": tune.grid_search([None, 2])},
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name="errors", storage_path=str(tmp_path)),
        task_runner=runner,
    ).fit()
    assert results.num_errors == 1 and results.num_terminated == 1
    (error,) = results.errors
    assert "boom at step 2" in str(error)
    # Errored trials still count with what they reported (as in Ray Tune).
    assert results.get_best_result(mode="max").config["fail_at"] is None
    assert results.get_best_result().config["fail_at"] == 2
    # The stored experiment is intact and loads elsewhere.
    Storage._cache.clear()
    assert ResultGrid.from_path(str(tmp_path / "errors")).num_errors == 1

    results = Tuner(
        trainables.reports_wrong_metric,
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name="wrong-metric", storage_path=str(tmp_path)),
        task_runner=runner,
    ).fit()
    (error,) = results.errors
    assert MetricNotReportedError.__name__ in str(error) and "'loss'" in str(error)


def test_bad_input_fails_up_front_with_named_errors(tmp_path):
    with pytest.raises(SearchSpaceError, match="greater than 0"):
        tune.loguniform(0, 1)
    with pytest.raises(SearchSpaceError, match=r"model.*lr"):
        Tuner(trainables.quadratic, param_space={"model": {"lr": {"grid_search": []}}})
    with pytest.raises(ConfigNotSerializableError, match="model"):
        Tuner(trainables.quadratic, param_space={"model": object()})
    with pytest.raises(UnknownStorageSchemeError, match="nosuch"):
        Tuner(trainables.quadratic, run_config=RunConfig(name="e", storage_path="nosuch://x")).fit()
    with pytest.raises(ConfigError, match="metric and mode"):
        TuneConfig(metric="loss")
    for tags in ("exp", ["ok", ""], [3]):
        with pytest.raises(ConfigError, match="trial_tags"):
            RunConfig(trial_tags=tags)


def test_same_name_resumes_and_other_definition_is_refused(prefect_api, runner, tmp_path):
    results = quadratic_tuner("again", str(tmp_path), runner).fit()
    attempts = {r.trial_id: r for r in results}
    assert len(attempts) == 4
    # Running the same experiment again runs nothing: every trial is finished.
    results = quadratic_tuner("again", str(tmp_path), runner).fit()
    assert results.num_terminated == 4
    storage = Storage.open(StorageSpec(str(tmp_path / "again")))
    for name in storage.list_dir(layout.TRIALS_DIR):
        trial = json.loads(storage.read_bytes(layout.trial_file(name)))
        assert len(trial["attempts"]) == 1
    with pytest.raises(ConfigError, match="different"):
        Tuner(
            trainables.quadratic,
            param_space={"x": tune.grid_search([7.0])},
            tune_config=TuneConfig(metric="loss", mode="min"),
            run_config=RunConfig(name="again", storage_path=str(tmp_path)),
            task_runner=runner,
        ).fit()


def test_tune_storage_block_and_bad_credentials(prefect_api, runner, s3_server):
    from prefect_tune import TuneStorage
    from prefect_tune.exceptions import StorageCredentialsError, StoragePermissionError
    from tests._s3auth import create_access_key, moto_checks_credentials

    bucket = s3_server.new_bucket()
    key = create_access_key(s3_server.endpoint_url)
    options = {k: v for k, v in s3_server.options.items() if k not in ("key", "secret")}

    def block(secret: str) -> TuneStorage:
        return TuneStorage(
            storage_path=f"s3://{bucket}/tuning",
            storage_options=options,
            credentials={"key": key["AccessKeyId"], "secret": secret},
        )

    good = block(key["SecretAccessKey"])
    good.save("tuning-store", overwrite=True)
    loaded = TuneStorage.load("tuning-store")
    with moto_checks_credentials(s3_server.endpoint_url):
        results = Tuner(
            trainables.quadratic,
            param_space={"x": tune.grid_search([2.0, 3.0])},
            tune_config=TuneConfig(metric="loss", mode="min"),
            run_config=RunConfig(name="block-exp", storage=loaded),
            task_runner=runner,
        ).fit()
        assert results.num_terminated == 2
        assert results.experiment_path == f"s3://{bucket}/tuning/block-exp"

        wrong = f"wrong-{uuid.uuid4().hex}"
        # A HEAD refused with a bare 403 cannot tell bad credentials from a denied path: the
        # error is a named PermissionError either way, and says to check the credentials.
        with pytest.raises((StorageCredentialsError, StoragePermissionError)) as caught:
            Tuner(
                trainables.quadratic,
                param_space={"x": tune.grid_search([2.0, 3.0])},
                tune_config=TuneConfig(metric="loss", mode="min"),
                run_config=RunConfig(name="block-exp", storage=block(wrong)),
                task_runner=runner,
            ).fit()
        assert "credentials" in str(caught.value) and wrong not in str(caught.value)
        # The stored experiment is intact and loads with the right credentials.
        Storage._cache.clear()
        assert ResultGrid.from_path("block-exp", storage=loaded).num_terminated == 2


def test_with_parameters_binds_data(prefect_api, runner, tmp_path):
    results = Tuner(
        tune.with_parameters(trainables.uses_bound_data, data=[1, 2, 3]),
        param_space={"scale": tune.grid_search([1.0, 2.0])},
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(name="bound", storage_path=str(tmp_path)),
        task_runner=runner,
    ).fit()
    assert sorted(r.metrics["loss"] for r in results) == [6.0, 12.0]
    assert all(r.path.split("/")[-1].startswith("uses_bound_data_") for r in results)


def test_the_driver_keeps_only_a_few_of_the_messages_it_sent_to_dask(runner):
    # Dask keeps the last 1 000 message batches a client sent, for debugging: with each trial's
    # request in one, they were most of the driver's memory in a large experiment.
    from prefect import flow

    from prefect_tune.prefect._executor import MESSAGE_LOG_LENGTH, PrefectTaskExecutor

    @flow
    def send_many() -> tuple[int | None, int]:
        executor = PrefectTaskExecutor("exp", runner)
        executor.start()
        try:
            client = executor._client
            for i in range(3 * MESSAGE_LOG_LENGTH):
                assert client.submit(abs, -i, pure=False).result() == i
            log = client.scheduler_comm.recent_message_log
            return log.maxlen, len(log)
        finally:
            executor.close()

    maxlen, kept = send_many()
    assert maxlen == MESSAGE_LOG_LENGTH and 0 < kept <= MESSAGE_LOG_LENGTH


def test_a_trainable_calling_sys_exit_on_dask_is_a_failed_trial(prefect_api, runner, tmp_path):
    # SystemExit is no Exception: it used to escape the task run, which Dask then forgot
    # (FutureCancelledError), leaving trial.json RUNNING without error.txt.
    name = f"exits-{uuid.uuid4().hex[:6]}"
    results = Tuner(
        trainables.exits_with,
        param_space={"code": 3},
        tune_config=TuneConfig(metric="loss", mode="min"),
        run_config=RunConfig(
            name=name,
            storage_path=str(tmp_path),
            failure_config=tune.FailureConfig(max_failures=1),
        ),
        task_runner=runner,
    ).fit()
    (result,) = list(results)
    assert result.status is tune.TrialStatus.ERROR and result.num_failures == 2
    assert "sys.exit() with exit code 3" in str(result.error)
    assert result.error is not None and "SystemExit: 3" in (result.error.traceback or "")
    task_runs = experiment_task_runs(name, expected=2)
    assert len(task_runs) == 2 and all(t.state.is_failed() for t in task_runs)


def test_the_default_local_cluster_serves_its_dashboard_on_this_machine_only(prefect_api):
    from distributed import LocalCluster
    from distributed.comm.utils import get_tcp_server_addresses
    from prefect_dask import DaskTaskRunner

    tuner = Tuner(trainables.quadratic, run_config=RunConfig(name="dash"))
    kwargs = tuner._default_task_runner().cluster_kwargs
    assert kwargs["dashboard_address"] == "127.0.0.1:8787"
    with LocalCluster(**kwargs, n_workers=0, processes=False) as cluster:
        bound = get_tcp_server_addresses(cluster.scheduler.http_server)
        assert bound and {address[0] for address in bound} == {"127.0.0.1"}
    # A task runner the user gives is used as it is.
    mine = DaskTaskRunner(cluster_kwargs={"dashboard_address": ":9999"})
    assert Tuner(trainables.quadratic, task_runner=mine).task_runner is mine
