"""The engine on its own: controller, trial runs and session with an in-process executor."""

from __future__ import annotations

import itertools
import json
import logging
import math
import time

import pytest

import prefect_tune as tune
from prefect_tune.config import CheckpointConfig, FailureConfig
from prefect_tune.engine import (
    BasicVariantGenerator,
    ResumePolicy,
    ThreadTrialExecutor,
    TuneController,
)
from prefect_tune.exceptions import ConfigError, SessionError
from prefect_tune.state import (
    ExperimentDefinition,
    ExperimentStore,
    PackedSummary,
    TrialState,
    TrialStatus,
    TrialSummary,
)
from prefect_tune.storage import Storage, StorageSpec, layout
from tests import trainables
from tests._experiment_store import make_controller


def whole(store: ExperimentStore, rows: list[PackedSummary]) -> list[TrialState]:
    """The stored states of the trials ``TuneController.run`` returned as summaries."""
    states = [store.read_trial(row.dir_name) for row in rows]
    assert all(state is not None for state in states)
    return states  # type: ignore[return-value]


def test_runs_every_trial_and_stores_history(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"), trainables.quadratic, {"x": tune.grid_search([1.0, 2.0, 3.0])}
    )
    rows = controller.run()
    assert [t.status for t in rows] == [TrialStatus.TERMINATED] * 3
    assert [t.unpack().config["x"] for t in rows] == [1.0, 2.0, 3.0]
    for trial in whole(store, rows):
        history = store.read_history(trial)
        assert [row["training_iteration"] for row in history] == [1, 2, 3, 4, 5]
        assert [row["loss"] for row in history] == [
            (trial.config["x"] - 3.0) ** 2 / step for step in range(1, 6)
        ]
        assert trial.last_result is not None and trial.last_result["done"] is True
        assert len(trial.checkpoints) == 5
    state = store.read_state()
    assert state is not None and state.finished
    assert [t.status for t in state.trials] == [TrialStatus.TERMINATED] * 3


def test_num_to_keep_keeps_best_by_score_and_latest(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.quadratic,
        {"x": 5.0, "steps": 6},
        checkpoint_config=CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="loss", checkpoint_score_order="max"
        ),
    )
    (trial,) = whole(store, controller.run())
    # loss = 4 / step is largest at steps 1 and 2; step 6 is the latest, always kept.
    assert [c.training_iteration for c in trial.checkpoints] == [1, 2, 6]
    on_disk = sorted(
        n
        for n in store.storage.list_dir(layout.trial_dir(trial.dir_name))
        if n.startswith("checkpoint_")
    )
    assert on_disk == [c.dir_name for c in trial.checkpoints]


def test_stop_condition_ends_trial_at_report(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.quadratic,
        {"x": 1.0, "steps": 50},
        stop={"training_iteration": 3},
    )
    (trial,) = whole(store, controller.run())
    assert trial.status is TrialStatus.TERMINATED
    assert [r["training_iteration"] for r in store.read_history(trial)] == [1, 2, 3]


def test_failed_trial_resumes_from_checkpoint_with_exact_history(tmp_path):
    # Fails at step 3 on every attempt: with max_failures=1 it runs twice then is ERROR.
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.raises_at,
        {"fail_at": 3},
        failure_config=FailureConfig(max_failures=1),
    )
    (trial,) = whole(store, controller.run())
    assert trial.status is TrialStatus.ERROR
    assert trial.num_failures == 2
    assert len(trial.attempts) == 2
    assert trial.attempts[1].start_iteration == 2
    assert "boom at step 3" in (trial.error or "")
    assert "Traceback" in (store.read_trial_text(trial.dir_name, "error.txt") or "")
    assert [r["training_iteration"] for r in store.read_history(trial)] == [1, 2]


def test_restore_runs_only_unfinished(tmp_path):
    url = str(tmp_path / "exp")
    store, controller = make_controller(
        url, trainables.raises_at, {"fail_at": tune.grid_search([None, 3])}
    )
    trials = whole(store, controller.run())
    assert [t.status for t in trials] == [TrialStatus.TERMINATED, TrialStatus.ERROR]
    finished_attempts = len(trials[0].attempts)

    # Default restore skips the errored trial; resume_errored resumes it from step 2.
    _, again = make_controller(url, trainables.raises_at, {"fail_at": tune.grid_search([None, 3])})
    trials = whole(store, again.run())
    assert [t.status for t in trials] == [TrialStatus.TERMINATED, TrialStatus.ERROR]
    assert len(trials[0].attempts) == finished_attempts

    _, resumed = make_controller(
        url,
        trainables.raises_at,
        {"fail_at": tune.grid_search([None, 3])},
        policy=ResumePolicy(resume_errored=True),
    )
    trials = whole(store, resumed.run())
    assert len(trials[0].attempts) == finished_attempts  # finished trials never run again
    assert trials[1].attempts[-1].start_iteration == 2


def test_metric_never_reported_errors_the_trial(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"), trainables.reports_wrong_metric, {}, metric="loss"
    )
    (trial,) = whole(store, controller.run())
    assert trial.status is TrialStatus.ERROR
    assert trial.error_type == "MetricNotReportedError"
    assert "'loss'" in (trial.error or "") and "TuneConfig" in (trial.error or "")


def test_report_outside_trial_raises():
    with pytest.raises(SessionError, match="outside a trial"):
        tune.report({"x": 1})
    with pytest.raises(SessionError):
        tune.get_checkpoint()


def test_uncommitted_checkpoint_is_ignored_and_removed(tmp_path):
    url = str(tmp_path / "exp")
    store, controller = make_controller(url, trainables.raises_at, {"fail_at": 3})
    (trial,) = whole(store, controller.run())
    assert trial.status is TrialStatus.ERROR
    # A crash mid-upload: files of checkpoint_000002 without a manifest.
    partial = layout.checkpoint_dir(trial.dir_name, 2)
    store.storage.write_bytes(f"{partial}/state.json", json.dumps({"step": 99}).encode())
    _, resumed = make_controller(
        url,
        trainables.raises_at,
        {"fail_at": 3},
        policy=ResumePolicy(resume_errored=True),
    )
    (trial,) = whole(store, resumed.run())
    # Resumed from the committed step 2, not the partial "step 99".
    assert trial.attempts[-1].start_iteration == 2
    assert not store.storage.exists(f"{partial}/state.json")


def test_time_budget_ends_an_endless_search(tmp_path):
    import time

    store = ExperimentStore(Storage.open(StorageSpec(str(tmp_path / "exp"))))
    generator = BasicVariantGenerator(
        {"x": tune.uniform(0, 1), "steps": 1000, "sleep": 0.01}, -1, seed=0
    )
    definition = ExperimentDefinition(
        name="exp",
        experiment_id="abcde",
        trainable="flaky",
        param_space={},
        num_samples=-1,
        seed=0,
        total_trials=None,
        metric="loss",
        mode="min",
    )
    store.write_definition(definition)

    def endless(config):
        for step in range(1, 1001):
            time.sleep(0.01)
            tune.report({"loss": config["x"] / step})

    controller = TuneController(
        store=store,
        definition=definition,
        generator=generator,
        trainable=endless,
        executor=ThreadTrialExecutor(2),
        checkpoint_config=CheckpointConfig(),
        failure_config=FailureConfig(),
        time_budget_s=1.5,
        trainable_name="endless",
    )
    started = time.monotonic()
    trials = [row.unpack() for row in controller.run()]
    assert time.monotonic() - started < 10
    # Two slots, and two more trials waiting behind them: the budget of 1.5 s ends the first
    # two mid-run, and the two that waited never start (they stay PENDING, to run on resume).
    ran = [t for t in trials if t.status is TrialStatus.TERMINATED]
    waited = [t for t in trials if t.status is not TrialStatus.TERMINATED]
    assert len(ran) == 2 and len(trials) == 4
    assert all(t.last_result and t.last_result["training_iteration"] < 1000 for t in ran)
    assert all(t.status is TrialStatus.PENDING and t.last_result is None for t in waited)
    for trial in waited:
        stored = store.read_trial(trial.dir_name)
        assert stored is None or not stored.attempts
    state = store.read_state()
    assert state is not None and not state.finished  # an endless search is never "finished"


def test_stop_function(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.quadratic,
        {"x": 1.0, "steps": 50},
        stop=lambda trial_id, result: result["loss"] < 0.5,
    )
    (trial,) = [row.unpack() for row in controller.run()]
    # loss = 4 / step falls below 0.5 at step 9.
    assert trial.last_result is not None and trial.last_result["training_iteration"] == 9


def test_finished_trials_are_kept_as_the_summaries_of_their_stored_states(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"), trainables.raises_at, {"fail_at": tune.grid_search([None, 3])}
    )
    rows = controller.run()
    assert all(isinstance(row, PackedSummary) for row in rows)
    for row, stored in zip(rows, whole(store, rows), strict=True):
        summary = row.unpack()
        assert summary == TrialSummary.of(stored)
        assert (row.index, row.status, row.trial_id, row.error) == (
            stored.index,
            stored.status,
            stored.trial_id,
            stored.error,
        )
        assert summary.checkpoint == stored.checkpoints[-1].dir_name
    # The snapshot records the same summaries, and nothing of the attempts or checkpoints.
    state = store.read_state()
    assert state is not None and state.trials == [row.unpack() for row in rows]
    raw = json.loads(store.storage.read_bytes(layout.EXPERIMENT_STATE_FILE))
    assert all("attempts" not in t and "checkpoints" not in t for t in raw["trials"])


def test_restoring_a_finished_experiment_reads_no_trial_file(tmp_path, request):
    url = str(tmp_path / "exp")
    space = {"x": tune.grid_search([1.0, 2.0, 3.0]), "steps": 2}
    store, controller = make_controller(url, trainables.quadratic, space)
    before = controller.run()
    reads = request.getfixturevalue("storage_reads")
    _, again = make_controller(url, trainables.quadratic, space)
    assert again.run() == before  # nothing ran again
    assert layout.EXPERIMENT_STATE_FILE in reads
    assert not [rel for rel in reads if rel.startswith(f"{layout.TRIALS_DIR}/")], reads


def test_restore_of_a_schema_version_1_snapshot(tmp_path):
    url = str(tmp_path / "exp")
    space = {"fail_at": tune.grid_search([None, 3])}
    store, controller = make_controller(url, trainables.raises_at, space)
    rows = controller.run()
    # The same experiment as prefect-tune wrote it at schema_version 1: whole TrialStates.
    state = store.read_state()
    assert state is not None
    v1 = json.loads(state.model_dump_json(exclude={"trials"}))
    v1.update(schema_version=1, trials=[t.model_dump(mode="json") for t in whole(store, rows)])
    store.storage.write_json(layout.EXPERIMENT_STATE_FILE, v1)

    _, resumed = make_controller(
        url, trainables.raises_at, space, policy=ResumePolicy(resume_errored=True)
    )
    done, errored = whole(store, resumed.run())
    assert len(done.attempts) == 1  # finished: not run again
    assert errored.status is TrialStatus.ERROR and errored.attempts[-1].start_iteration == 2
    raw = json.loads(store.storage.read_bytes(layout.EXPERIMENT_STATE_FILE))
    assert raw["schema_version"] == 2 and [t["status"] for t in raw["trials"]] == [
        "TERMINATED",
        "ERROR",
    ]


class DyingWorkers(ThreadTrialExecutor):
    """Each trial's worker "dies" once the trial has started: its trial.json shows the attempt
    RUNNING, and the task raises without recording anything."""

    def submit(self, request):
        def die():
            from prefect_tune.engine._trial_run import _begin

            _begin(ExperimentStore(request.experiment.open()), request, None)
            raise OSError("worker lost")

        future = self._pool.submit(die)
        future.add_done_callback(self._on_done)
        return future


def test_a_trial_whose_worker_died_reads_back_as_the_driver_saw_it(tmp_path):
    url = str(tmp_path / "exp")
    store, controller = make_controller(
        url, trainables.quadratic, {"x": 3.0}, failure_config=FailureConfig(max_failures=0)
    )
    controller.executor = DyingWorkers(1)
    (row,) = controller.run()
    assert (row.status, row.num_failures, row.error) == (
        TrialStatus.ERROR,
        1,
        "OSError: worker lost",
    )
    stored = store.read_trial(row.dir_name)
    assert stored is not None and (stored.status, stored.num_failures) == (TrialStatus.RUNNING, 0)
    # Read back, the trial is what the driver recorded in its snapshot.
    (trial,) = store.load_trials()[1]
    assert (trial.status, trial.num_failures, trial.error) == (
        TrialStatus.ERROR,
        1,
        "OSError: worker lost",
    )
    assert len(trial.attempts) == 1
    # Resumed, it keeps the failure counted.
    _, resumed = make_controller(
        url, trainables.quadratic, {"x": 3.0}, policy=ResumePolicy(resume_errored=True)
    )
    (row,) = resumed.run()
    (trial,) = whole(store, [row])
    assert (trial.status, trial.num_failures) == (TrialStatus.TERMINATED, 1)


def test_a_trial_its_driver_submitted_but_never_recorded_runs_on_resume(tmp_path):
    # The driver stopped after submitting trial 0 and before saving a snapshot that lists it;
    # trial 0 never started (no directory) while trials 1 and 2 did.
    url = str(tmp_path / "exp")
    space = {"x": tune.grid_search([1.0, 2.0, 3.0])}
    store, controller = make_controller(url, trainables.quadratic, space)
    first = whole(store, controller.run())
    store.storage.delete(layout.trial_dir(first[0].dir_name))
    store.storage.delete(layout.EXPERIMENT_STATE_FILE)

    _, resumed = make_controller(url, trainables.quadratic, space)
    rows = resumed.run()
    assert [t.status for t in rows] == [TrialStatus.TERMINATED] * 3
    assert [t.unpack().config["x"] for t in rows] == [1.0, 2.0, 3.0]
    again = whole(store, rows)
    assert len(again[0].attempts) == 1  # trial 0 ran, once
    assert [len(t.attempts) for t in again[1:]] == [len(t.attempts) for t in first[1:]]


# -- bad exits and bad numbers -----------------------------------------------------------------


def test_a_trainable_calling_sys_exit_is_a_counted_failure_with_its_exit_code(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.exits_with,
        {"code": 3},
        failure_config=FailureConfig(max_failures=1),
    )
    controller.retry_delay_s = 0.01
    (trial,) = whole(store, controller.run())
    assert (trial.status, trial.num_failures, trial.error_type) == (
        TrialStatus.ERROR,
        2,  # max_failures=1 ran it again once
        "SystemExit",
    )
    assert trial.error == "SystemExit: the trainable called sys.exit() with exit code 3"
    assert [a.status for a in trial.attempts] == [TrialStatus.ERROR] * 2
    assert "SystemExit: 3" in (store.read_trial_text(trial.dir_name, layout.ERROR_FILE) or "")


def test_a_keyboard_interrupt_in_a_trainable_is_the_users_and_propagates(tmp_path):
    from tests._experiment_store import a_trial, run_in

    store = ExperimentStore(Storage.open(StorageSpec(str(tmp_path / "exp"))))
    trial = a_trial()
    with pytest.raises(KeyboardInterrupt):
        run_in(store, trial, trainables.interrupted)
    stored = store.read_trial(trial.dir_name)
    assert stored is not None and stored.status is TrialStatus.RUNNING  # resumed later
    assert store.read_trial_text(trial.dir_name, layout.ERROR_FILE) is None


def test_retries_of_a_failing_trial_back_off_and_say_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="prefect_tune")
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.raises_at,
        {"fail_at": 1},  # before its first report, every time
        failure_config=FailureConfig(max_failures=4),
    )
    controller.retry_delay_s, controller.retry_delay_max_s = 0.1, 0.2
    (trial,) = whole(store, controller.run())
    assert (trial.status, trial.num_failures) == (TrialStatus.ERROR, 5)
    starts = [a.started_at for a in trial.attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert [g >= d for g, d in zip(gaps, (0.1, 0.2, 0.2, 0.2), strict=True)] == [True] * 4
    retries = [r.getMessage() for r in caplog.records if "resuming it" in r.getMessage()]
    assert len(retries) == 4
    assert [m.split(" checkpoint in ")[1].split(" s:")[0] for m in retries] == [
        "0.1",
        "0.2",
        "0.2",
        "0.2",
    ]


def test_unlimited_retries_of_an_always_failing_trial_do_not_spin(tmp_path):
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.raises_at,
        {"fail_at": 1},
        failure_config=FailureConfig(max_failures=-1),
    )
    controller.retry_delay_s = 0.05
    controller.time_budget_s = 1.0
    (row,) = controller.run()
    (trial,) = whole(store, [row])
    # 0.05 + 0.1 + 0.2 + 0.4 s of waits fit in the budget, not hundreds of attempts.
    assert 2 <= len(trial.attempts) <= 6
    assert row.status is TrialStatus.PENDING  # its next retry waits: resumable


def test_the_default_retry_delays():
    from prefect_tune.engine._controller import RETRY_DELAY_MAX_S, RETRY_DELAY_S

    assert (RETRY_DELAY_S, RETRY_DELAY_MAX_S) == (1.0, 60.0)


def test_a_trainable_that_returns_without_reporting_is_warned_of_once(tmp_path, caplog):
    from prefect_tune.engine._trial_run import NO_REPORT_WARNING

    caplog.set_level(logging.WARNING, logger="prefect_tune")
    store, controller = make_controller(
        str(tmp_path / "exp"), trainables.returns_without_reporting, {}
    )
    (trial,) = whole(store, controller.run())
    assert trial.status is TrialStatus.TERMINATED and trial.last_result is None
    assert [a.warning for a in trial.attempts] == [NO_REPORT_WARNING]
    warned = [r for r in caplog.records if NO_REPORT_WARNING in r.getMessage()]
    assert len(warned) == 1 and trial.trial_id in warned[0].getMessage()
    # Trials that reported carry no warning.
    store, controller = make_controller(str(tmp_path / "ok"), trainables.quadratic, {"x": 3.0})
    (trial,) = whole(store, controller.run())
    assert [a.warning for a in trial.attempts] == [None]


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda v: tune.RunConfig(lease_ttl_s=v), "lease_ttl_s"),
        (lambda v: tune.RunConfig(flow_retry_delay_s=v), "flow_retry_delay_s"),
        (lambda v: tune.TuneConfig(time_budget_s=v), "time_budget_s"),
        (lambda v: tune.RunConfig(stop={"loss": v}), "stop"),
    ],
    ids=["lease_ttl_s", "flow_retry_delay_s", "time_budget_s", "stop"],
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_config_numbers_must_be_finite(make, field, value):
    with pytest.raises(ConfigError, match=rf"\({field}=\.\.\.\)"):
        make(value)


def test_a_lease_with_a_huge_time_to_live_keeps_renewing(tmp_path):
    from prefect_tune.state import LeaseHolder

    holder = LeaseHolder(Storage.open(StorageSpec(str(tmp_path))), ttl_s=1e12, settle_s=0.01)
    holder.acquire()
    try:
        time.sleep(0.1)
        assert holder._thread is not None and holder._thread.is_alive()
    finally:
        holder.release()
