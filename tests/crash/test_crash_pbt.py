"""Population based training resumed exactly after the driver is SIGKILLed (issue 14).

The crash suite's driver with ``--scheduler pbt``: 8 trials of ``tests.trainables.pbt_climb``
(one ``lr`` each, a checkpoint every iteration, 12 iterations), two Dask workers,
``PopulationBasedTraining(perturbation_interval=2, hyperparam_mutations={"lr": ...})``. The
driver is killed at each of the points an exploit passes through:

1. decided and stored in ``decisions.json`` (pending), not yet made;
2. the donor's checkpoint copied into the receiving trial, the copy not yet committed
   (``--slow-exploit`` holds the driver there);
3. committed to the receiving trial's ``trial.json``, the scheduler not yet told
   (``--slow-exploit`` again);

and restored each time by a new run of the same command. Checked from storage and the side log:

- exactly the 8 trials asked for, all TERMINATED, nothing pending at the end;
- an exploit committed at a kill is in the final state, at the same place (not undone), and
  no exploit is recorded twice (not redone): the scheduler's lineage and the trials' records
  agree, one for one, in order;
- an exploit pending at a kill is made after it, exactly once (not lost);
- every exploit recorded was acted on: the receiving trial's next task run loaded the donor's
  checkpoint (its owner and step in the side log) with the explored ``lr``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.crash.harness import (
    CrashExperiment,
    KillPoint,
    Observed,
    local_backend,
    result_grid,
    unique_name,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DECISIONS = "decisions.json"
TRIALS = 8
Key = tuple[str, float, float]  # (donor, time, donor_time): an exploit of one trial


def _desk(seen: Observed) -> dict[str, Any] | None:
    document = seen.view.read_json(DECISIONS, seen.files.get(DECISIONS))
    return document["data"] if document else None


def _pbt(desk: dict[str, Any] | None) -> dict[str, Any]:
    if not desk or not desk.get("scheduler"):
        return {"pending": {}, "lineage": {}, "trials": {}}
    data: dict[str, Any] = desk["scheduler"]["data"]
    return data


def _key(record: dict[str, Any]) -> Key:
    """An exploit's identity, from a trial's ExploitRecord or the scheduler's Exploit."""
    if "donor_trial_id" in record:
        return (record["donor_trial_id"], float(record["time"]), float(record["donor_time"]))
    return (record["source_trial_id"], float(record["time"]), float(record["source_time"]))


def committed(seen: Observed) -> dict[str, list[Key]]:
    """Trial id -> the exploits its trial.json records, in order."""
    return {t["trial_id"]: [_key(r) for r in t.get("exploits", [])] for t in seen.trials().values()}


def pending(seen: Observed) -> dict[str, Key]:
    """Trial id -> its exploit stored as pending in decisions.json and not in its trial.json."""
    made = committed(seen)
    return {
        trial_id: _key(exploit)
        for trial_id, exploit in _pbt(_desk(seen))["pending"].items()
        if _key(exploit) not in made.get(trial_id, [])
    }


class ExploitPending(KillPoint):
    """An exploit is stored as decided, and not made yet."""

    name = "exploit-pending"

    def reached(self, seen: Observed, driver: Any) -> bool:
        return bool(pending(seen))


class CopyNotCommitted(KillPoint):
    """A trial with a pending exploit has a checkpoint directory its trial.json does not list:
    the donor's checkpoint, copied and not committed."""

    name = "copy-not-committed"

    def reached(self, seen: Observed, driver: Any) -> bool:
        waiting = pending(seen)
        if not waiting:
            return False
        trial_ids = {d: t["trial_id"] for d, t in seen.trials().items()}
        for partial, files in seen.partial_checkpoints().items():
            trial_dir = partial.split("/")[1]
            if trial_ids.get(trial_dir) in waiting and "state.json" in files:
                return True
        return False


class CommittedNotTold(KillPoint):
    """A trial.json records an exploit that decisions.json still has as pending."""

    name = "committed-not-told"

    def reached(self, seen: Observed, driver: Any) -> bool:
        made = committed(seen)
        stored = _pbt(_desk(seen))["pending"]
        return any(_key(e) in made.get(t, []) for t, e in stored.items())


def side_log(directory: Path, trial_id: str) -> list[dict[str, Any]]:
    path = directory / f"{trial_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def experiment(crash_env, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    return CrashExperiment(
        unique_name("pbt"),
        local_backend(tmp_path / "store"),
        work,
        crash_env,
        ["--scheduler", "pbt", "--trials", str(TRIALS), "--sleep", "0.15"],
    )


def test_pbt_exploits_resume_exactly_after_sigkill(experiment):
    exp: CrashExperiment = experiment
    base = list(exp.extra_args)
    at_kills: list[tuple[dict[str, list[Key]], dict[str, Key]]] = []
    for point, mode, slow in [
        (CopyNotCommitted(), "group", True),
        (CommittedNotTold(), "driver", True),
        (ExploitPending(), "group", False),
    ]:
        exp.extra_args = [*base, "--slow-exploit", "2"] if slow else base
        kill = exp.run_to_kill(point, mode)
        assert kill is not None, f"the experiment finished before {point}"
        seen = exp.observe()
        at_kills.append((committed(seen), pending(seen)))
    exp.extra_args = base
    summary = exp.run_to_end()
    assert summary["num_errors"] == 0, summary

    grid = result_grid(exp)
    assert len(grid) == TRIALS and grid.num_terminated == TRIALS
    final_seen = exp.observe()
    final = committed(final_seen)
    scheduler = _pbt(_desk(final_seen))
    assert scheduler["pending"] == {}
    # The scheduler's lineage and the trials' records agree, one for one: no exploit was
    # committed twice, none lost between the two writes.
    lineage = {t: [_key(e) for e in records] for t, records in scheduler["lineage"].items()}
    assert {t: k for t, k in lineage.items() if k} == {t: k for t, k in final.items() if k}
    for trial_id, keys in final.items():
        assert len(keys) == len(set(keys)), (trial_id, keys)
    for (made, waiting), kill in zip(at_kills, exp.kills, strict=True):
        for trial_id, keys in made.items():  # committed then: still there, same place
            assert final[trial_id][: len(keys)] == keys, (kill.point, trial_id, keys)
        for trial_id, key in waiting.items():  # pending then: made once after the kill
            assert final[trial_id].count(key) == 1, (kill.point, trial_id, key, final[trial_id])
    total = 0
    by_id = {r.trial_id: r for r in grid}
    for trial_id, result in by_id.items():
        restores = [e for e in side_log(exp.side_log, trial_id) if e["event"] == "restore"]
        assert result.config["lr"] == (
            result.exploits[-1].new_config["lr"] if result.exploits else result.config["lr"]
        )
        for record in result.exploits:
            total += 1
            assert record.donor_trial_id in by_id
            assert any(
                e["owner"] == record.donor_trial_id
                and e["step"] == record.donor_iteration
                and e["lr"] == record.new_config["lr"]
                for e in restores
            ), (trial_id, record, restores)
        iterations = list(result.metrics_dataframe["training_iteration"])
        assert iterations == sorted(set(iterations)), (trial_id, iterations)
    assert total >= len(exp.kills)
    seen_at = [
        f"{kill.point}: {sum(map(len, made.values()))} committed, {len(waiting)} pending"
        for (made, waiting), kill in zip(at_kills, exp.kills, strict=True)
    ]
    print(f"PBT after kills ({'; '.join(seen_at)}): {total} exploits at the end")
