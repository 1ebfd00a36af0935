"""TuneConfig(search_alg=...) wired into the controller (trials in threads of the driver's
process): suggestions made as trials free up, each stored in search.json before its trial
starts, the searcher told of results and ends, and its state checked on restore."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import prefect_tune as tune
from prefect_tune.engine import SEARCH_FILE
from prefect_tune.exceptions import DamagedStateError, DecisionStateMismatchError
from prefect_tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from prefect_tune.search.optuna import OptunaSearch
from prefect_tune.state import ExperimentStore, TrialStatus
from tests import trainables
from tests._experiment_store import make_controller

BRANIN = {"x1": tune.uniform(-5, 10), "x2": tune.uniform(0, 15)}


def finished(store: ExperimentStore) -> list[Any]:
    _, rows = store.load_summaries()
    return [r.unpack() for r in rows]


def stored_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


class Walk(Searcher):
    """A user's searcher: x = 0, 1, 2... and FINISHED after ``stop_after``; records calls."""

    def __init__(self, stop_after: int = 100) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.given: dict[str, int] = {}
        self.results: list[tuple[str, float]] = []
        self.completed: list[tuple[str, float | None, bool]] = []

    def suggest(self, trial_id: str) -> Any:
        if trial_id in self.given:
            return {"x": self.given[trial_id], "steps": 2}
        if len(self.given) >= self.stop_after:
            return Searcher.FINISHED
        self.given[trial_id] = len(self.given)
        return {"x": self.given[trial_id], "steps": 2}

    def on_trial_result(self, trial_id: str, result: Any) -> None:
        self.results.append((trial_id, result["loss"]))

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        self.completed.append((trial_id, None if result is None else result["loss"], error))

    def settings(self) -> dict[str, Any]:
        return {"stop_after": self.stop_after}

    def state(self) -> dict[str, Any]:
        return {"given": self.given}

    def load(self, data: Any) -> None:
        self.given = {str(k): int(v) for k, v in data["given"].items()}


def test_a_user_searcher_suggests_learns_and_finishes_early(tmp_path):
    walk = Walk(stop_after=3)
    store, controller = make_controller(
        str(tmp_path / "exp"), trainables.bowl, {}, num_samples=5, search_alg=walk
    )
    controller.run()
    trials = finished(store)
    # FINISHED after three: the experiment ends with those, all run, each config once.
    assert sorted(t.config["x"] for t in trials) == [0, 1, 2]
    assert {t.status for t in trials} == {TrialStatus.TERMINATED}
    assert sorted(t for t, _, _ in walk.completed) == sorted(t.trial_id for t in trials)
    assert not any(error for _, _, error in walk.completed)
    # Every reported row reached on_trial_result (2 steps each).
    assert len(walk.results) == 6
    record = json.loads((tmp_path / "exp" / SEARCH_FILE).read_text())
    assert record["finished"] is True
    assert [c["x"] for _, _, c in record["suggested"]] == [0, 1, 2]
    assert record["searcher"]["kind"] == "Walk"


def test_basic_variant_generator_runs_points_to_evaluate_first(tmp_path):
    search = BasicVariantGenerator(points_to_evaluate=[{"x": 0.3}, {"x": 0.9}], random_state=4)
    store, controller = make_controller(
        str(tmp_path / "exp"),
        trainables.bowl,
        {"x": tune.uniform(0, 1), "steps": 1},
        num_samples=4,
        search_alg=search,
    )
    controller.run()
    trials = sorted(finished(store), key=lambda t: t.index)
    assert len(trials) == 4
    assert [t.config["x"] for t in trials[:2]] == [0.3, 0.9]
    assert all(0 <= t.config["x"] <= 1 for t in trials[2:])
    assert len({t.config["x"] for t in trials}) == 4


def test_concurrency_limiter_caps_running_trials(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    space = {**BRANIN, "side_log": str(log), "hold_s": 0.2}
    search = ConcurrencyLimiter(OptunaSearch(seed=1), max_concurrent=2)
    store, controller = make_controller(
        str(tmp_path / "exp"), trainables.branin, space, num_samples=6, search_alg=search, threads=4
    )
    controller.run()
    assert len(finished(store)) == 6
    spans = [json.loads(p.read_text()) for p in log.glob("*.json")]
    assert len(spans) == 6
    # At any trial's start, at most 2 trials (itself included) have started and not ended.
    most = max(sum(1 for o in spans if o["start"] <= s["start"] < o["end"]) for s in spans)
    assert most <= 2
    assert most == 2  # and the cap is used: 4 threads were free


def test_optuna_search_is_restored_without_repeating_or_losing_a_suggestion(tmp_path):
    """The driver dies as it asks for trial 4 (after 0-3 were suggested and stored); a restore
    with the same OptunaSearch ends with exactly num_samples trials, the first four kept."""

    class Dies(Exception):
        pass

    class DiesAtFifth(OptunaSearch):
        dying = True

        def suggest(self, trial_id: str) -> Any:
            if self.dying and trial_id.endswith("_00004"):
                raise Dies
            return super().suggest(trial_id)

    url = str(tmp_path / "exp")
    space = {**BRANIN, "hold_s": 0.05}
    store, controller = make_controller(
        url, trainables.branin, space, num_samples=8, search_alg=DiesAtFifth(seed=3)
    )
    with pytest.raises(Dies):
        controller.run()
    before = {t.index: t.config for t in finished(store)}
    record = json.loads((tmp_path / "exp" / SEARCH_FILE).read_text())
    assert [i for i, _, _ in record["suggested"]] == [0, 1, 2, 3]

    # Restored by a search of another class: refused, nothing written.
    files = stored_files(tmp_path / "exp")
    for other in (OptunaSearch(seed=4), BasicVariantGenerator(random_state=3)):
        _, again = make_controller(url, trainables.branin, space, num_samples=8, search_alg=other)
        with pytest.raises(DecisionStateMismatchError):
            again.run()
    _, without = make_controller(url, trainables.branin, space, num_samples=8)
    with pytest.raises(DecisionStateMismatchError, match="search_alg"):
        without.run()
    assert stored_files(tmp_path / "exp") == files

    # The same search built again (the class it ran with), no longer dying.
    DiesAtFifth.dying = False
    store, controller = make_controller(
        url, trainables.branin, space, num_samples=8, search_alg=DiesAtFifth(seed=3)
    )
    controller.run()
    trials = finished(store)
    assert sorted(t.index for t in trials) == list(range(8))
    assert {t.status for t in trials} == {TrialStatus.TERMINATED}
    for index, config in before.items():
        assert next(t for t in trials if t.index == index).config == config
    points = {(t.config["x1"], t.config["x2"]) for t in trials}
    assert len(points) == 8  # none suggested twice
    record = json.loads((tmp_path / "exp" / SEARCH_FILE).read_text())
    told = sorted(
        t["trial_id"] for t in record["searcher"]["data"]["trials"] if t["state"] == "COMPLETE"
    )
    assert told == sorted(t.trial_id for t in trials)


def test_optuna_search_without_a_seed_takes_the_stored_one_on_restore(tmp_path):
    url = str(tmp_path / "exp")
    store, controller = make_controller(
        url, trainables.branin, BRANIN, num_samples=3, search_alg=OptunaSearch()
    )
    controller.run()
    seed = json.loads((tmp_path / "exp" / SEARCH_FILE).read_text())["searcher"]["settings"]["seed"]
    restored = OptunaSearch()
    _, again = make_controller(url, trainables.branin, BRANIN, num_samples=3, search_alg=restored)
    again.run()
    assert restored.seed == seed
    assert len(finished(store)) == 3


def _twice(record: dict[str, Any]) -> None:
    record["suggested"].append([0, "abcde_00007", {}])


def _foreign(record: dict[str, Any]) -> None:
    record["suggested"][0][1] = "../../etc"


def _far_index(record: dict[str, Any]) -> None:
    record["suggested"][1][0] = 10**12


def _too_many(record: dict[str, Any]) -> None:
    record["suggested"] += [[i, f"abcde_{i:05d}", {}] for i in range(2, 5)]


def _not_a_list(record: dict[str, Any]) -> None:
    record["told"] = "abcde_00000"


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json",
        b"[]",
        _twice,
        _foreign,
        _far_index,
        _too_many,
        _not_a_list,
    ],
    ids=[
        "not-json",
        "not-an-object",
        "index-twice",
        "foreign-trial-id",
        "far-index",
        "more-than-num-samples",
        "told-not-a-list",
    ],
)
def test_a_damaged_search_record_is_refused_and_nothing_is_written(tmp_path, damage):
    url = str(tmp_path / "exp")
    store, controller = make_controller(
        url, trainables.branin, BRANIN, num_samples=2, search_alg=OptunaSearch(seed=0)
    )
    controller.run()
    path = tmp_path / "exp" / SEARCH_FILE
    if callable(damage):
        record = json.loads(path.read_text())
        damage(record)
        damage = json.dumps(record).encode()
    path.write_bytes(damage)
    files = stored_files(tmp_path / "exp")
    _, again = make_controller(
        url, trainables.branin, BRANIN, num_samples=2, search_alg=OptunaSearch(seed=0)
    )
    with pytest.raises((DamagedStateError, DecisionStateMismatchError), match="search"):
        again.run()
    assert stored_files(tmp_path / "exp") == files


def test_a_newer_search_record_is_refused(tmp_path):
    from prefect_tune.exceptions import UnsupportedSchemaVersionError

    url = str(tmp_path / "exp")
    _, controller = make_controller(
        url, trainables.branin, BRANIN, num_samples=1, search_alg=OptunaSearch(seed=0)
    )
    controller.run()
    path = tmp_path / "exp" / SEARCH_FILE
    record = json.loads(path.read_text())
    record["schema_version"] = 99
    path.write_text(json.dumps(record))
    _, again = make_controller(
        url, trainables.branin, BRANIN, num_samples=1, search_alg=OptunaSearch(seed=0)
    )
    with pytest.raises(UnsupportedSchemaVersionError, match="search.json"):
        again.run()


def test_a_default_experiment_is_not_taken_over_by_a_search_alg(tmp_path):
    url = str(tmp_path / "exp")
    _, controller = make_controller(url, trainables.branin, BRANIN, num_samples=2)
    controller.run()
    _, again = make_controller(
        url, trainables.branin, BRANIN, num_samples=2, search_alg=OptunaSearch(seed=0)
    )
    with pytest.raises(DecisionStateMismatchError, match="default search"):
        again.run()
    assert not os.path.exists(tmp_path / "exp" / SEARCH_FILE)


def test_a_search_algorithm_object_searches_one_experiment_only(tmp_path):
    from prefect_tune.exceptions import ConfigError

    search = OptunaSearch(seed=0)
    _, first = make_controller(
        str(tmp_path / "one"), trainables.branin, BRANIN, num_samples=2, search_alg=search
    )
    first.run()
    _, second = make_controller(
        str(tmp_path / "two"), trainables.branin, BRANIN, num_samples=2, search_alg=search
    )
    with pytest.raises(ConfigError, match="each experiment needs a new one"):
        second.run()
    assert not (tmp_path / "two" / SEARCH_FILE).exists()
