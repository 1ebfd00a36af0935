"""Population based training wired into the controller (trials in threads of the driver's
process): a bottom trial pauses, and resumes as a new task run from a copy of a top trial's
checkpoint with an explored config, recorded in its stored state and in decisions.json."""

from __future__ import annotations

import json
import warnings

import pytest

import prefect_tune as tune
from prefect_tune.config import CheckpointConfig
from prefect_tune.engine._decisions import DECISIONS_FILE
from prefect_tune.exceptions import DecisionStateMismatchError, NoCheckpointToExploitWarning
from prefect_tune.schedulers import PopulationBasedTraining
from prefect_tune.state import ExperimentStore, TrialState, TrialStatus
from prefect_tune.storage import layout
from tests import trainables
from tests._experiment_store import make_controller

LRS = [0.001, 0.01, 0.1, 1.0]
STEPS = 12


def pbt(**kwargs):
    settings = dict(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        perturbation_interval=2,
        hyperparam_mutations={"lr": LRS},
        quantile_fraction=0.25,
        resample_probability=0.25,
        seed=0,
    )
    return PopulationBasedTraining(**{**settings, **kwargs})


def run(url, side_log, scheduler=None, threads=2, steps=STEPS, lrs=LRS, **space):
    store, controller = make_controller(
        url,
        trainables.pbt_climb,
        {
            "lr": tune.grid_search(lrs),
            "steps": steps,
            "side_log": str(side_log),
            **space,
        },
        metric=None,
        scheduler=scheduler or pbt(),
        threads=threads,
        checkpoint_config=CheckpointConfig(num_to_keep=1),
    )
    rows = controller.run()
    trials = store.read_trials(r.dir_name for r in rows)
    return store, [t for t in trials.values() if t is not None]


def side_log(directory, trial_id):
    path = directory / f"{trial_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_exploits(store: ExperimentStore, trials: list[TrialState], log_dir) -> int:
    """Every exploit recorded in a trial's state is what its next task run loaded; returns
    how many there were."""
    by_id = {t.trial_id: t for t in trials}
    count = 0
    for trial in trials:
        assert trial.status is TrialStatus.TERMINATED, trial
        history = store.read_history(trial)
        iterations = [row["training_iteration"] for row in history]
        assert iterations == sorted(set(iterations)), iterations  # each iteration once
        # Trained to the end: itself, or the donor whose final checkpoint it took last.
        assert trial.latest_checkpoint.training_iteration == STEPS
        assert iterations[-1] == STEPS or trial.exploits[-1].donor_iteration == STEPS
        restores = [e for e in side_log(log_dir, trial.trial_id) if e["event"] == "restore"]
        for record in trial.exploits:
            count += 1
            assert record.donor_trial_id in by_id and record.donor_trial_id != trial.trial_id
            assert record.new_config["lr"] in LRS and record.time_attr == "training_iteration"
            # The next task run loaded the donor's checkpoint: the state the donor wrote.
            loaded = [
                e
                for e in restores
                if e["owner"] == record.donor_trial_id and e["step"] == record.donor_iteration
            ]
            assert loaded, (record, restores)
            assert loaded[0]["lr"] == record.new_config["lr"]
        if trial.exploits:
            assert trial.config == trial.exploits[-1].new_config
    return count


def test_pbt_exploits_copy_the_donors_checkpoint_and_change_the_config(tmp_path):
    url = str(tmp_path / "exp")
    store, trials = run(url, tmp_path / "side")
    count = check_exploits(store, trials, tmp_path / "side")
    assert count >= 1
    desk = json.loads((tmp_path / "exp" / DECISIONS_FILE).read_text())["data"]
    pbt_state = desk["scheduler"]["data"]
    assert pbt_state["pending"] == {}
    assert sum(len(v) for v in pbt_state["lineage"].values()) == count
    # The copy is the receiving trial's own checkpoint directory, kept or dropped by its own
    # retention; the donor's directories are untouched by it.
    for trial in trials:
        for record in trial.exploits:
            assert layout.parse_checkpoint_name(record.checkpoint) is not None
    # Each trial's last result is its latest checkpoint's: the score the trainable carried
    # there (a trial that took a donor's final checkpoint ends with that checkpoint's result).
    for trial in trials:
        latest = trial.latest_checkpoint
        state = json.loads(
            store.storage.read_bytes(
                f"{layout.trial_dir(trial.dir_name)}/{latest.dir_name}/state.json"
            )
        )
        assert trial.last_result["score"] == pytest.approx(state["score"]), trial.trial_id
        assert trial.last_result["trial_id"] == trial.trial_id


def test_a_restore_with_other_pbt_settings_is_refused(tmp_path):
    url = str(tmp_path / "exp")
    run(url, tmp_path / "side")
    before = (tmp_path / "exp" / DECISIONS_FILE).read_bytes()
    with pytest.raises(DecisionStateMismatchError, match="perturbation_interval"):
        run(url, tmp_path / "side", scheduler=pbt(perturbation_interval=3))
    assert (tmp_path / "exp" / DECISIONS_FILE).read_bytes() == before


def test_without_checkpoints_pbt_warns_and_the_trials_go_on(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store, trials = run(str(tmp_path / "exp"), tmp_path / "side", checkpoint=False)
    assert [w for w in caught if issubclass(w.category, NoCheckpointToExploitWarning)]
    assert {t.status for t in trials} == {TrialStatus.TERMINATED}
    assert not any(t.exploits for t in trials)
    for trial in trials:
        assert len(store.read_history(trial)) == STEPS
        events = [e["event"] for e in side_log(tmp_path / "side", trial.trial_id)]
        assert events.count("begin") == 1 and "restore" not in events


def test_a_perturbation_interval_past_the_training_never_exploits(tmp_path):
    store, trials = run(
        str(tmp_path / "exp"), tmp_path / "side", scheduler=pbt(perturbation_interval=STEPS + 1)
    )
    assert not any(t.exploits for t in trials)
    assert all(len(store.read_history(t)) == STEPS for t in trials)


def test_a_population_of_one_never_exploits(tmp_path):
    store, trials = run(str(tmp_path / "exp"), tmp_path / "side", lrs=[0.01])
    assert len(trials) == 1 and not trials[0].exploits
    assert trials[0].status is TrialStatus.TERMINATED
