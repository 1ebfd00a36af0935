"""Drivers racing for one experiment: only the driver that holds the lease deletes or defines it.

The races run real driver processes (``python -m tests.race_driver``) against the session's
Prefect API and Dask cluster. Nothing waits on time: the first driver's trials are held after
their first checkpoint until the test opens a gate file, and a driver can be held just before it
takes the lease (``fit()`` has checked storage by then) until its own gate opens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_tune import ResultGrid
from prefect_tune.state import ExperimentDefinition, ExperimentStore, Lease
from prefect_tune.storage import Storage, StorageSpec, layout
from tests._experiment_store import a_definition
from tests.race_driver import ERROR_PREFIX, SUMMARY_PREFIX

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
WAIT_S = 240.0  # the longest a driver may take to reach a point (a loaded machine)


# -- the stored experiment, without drivers --------------------------------------------------


def test_clear_keeps_the_lease_and_the_driver_records(storage_spec: StorageSpec):
    """What an overwrite deletes, on every backend: all of the experiment but its lease and
    its drivers' records; an experiment whose name starts the same is untouched."""
    experiment = storage_spec.child("exp").open()
    sibling = storage_spec.child("exp-important").open()
    store = ExperimentStore(experiment)
    store.write_definition(
        a_definition(
            trainable="m.f",
            param_space={},
            num_samples=1,
            seed=0,
            total_trials=1,
            metric=None,
            mode=None,
        )
    )
    lease = Lease(owner="me", host="h", pid=1).model_dump_json().encode()
    experiment.write_bytes(layout.LEASE_FILE, lease)
    experiment.write_bytes(layout.driver_file("0" * 8), b"{}")
    experiment.write_bytes(layout.EXPERIMENT_STATE_FILE, b"{}")
    experiment.write_bytes(f"{layout.checkpoint_dir('t', 0)}/weights.bin", b"w")
    experiment.write_bytes(layout.trial_file("t"), b"{}")
    sibling.write_bytes(layout.EXPERIMENT_FILE, b"{}")

    store.clear()

    assert experiment.walk_files() == {
        layout.LEASE_FILE: len(lease),
        layout.driver_file("0" * 8): 2,
    }
    assert not store.exists()
    assert sibling.walk_files() == {layout.EXPERIMENT_FILE: 2}


# -- driver processes ------------------------------------------------------------------------


class RaceDriver:
    """One ``python -m tests.race_driver`` process (its own process group)."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, label: str):
        self.label = label
        self.stdout_path = log_dir / f"{label}.out"
        self.stderr_path = log_dir / f"{label}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.race_driver", "--label", label, *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"driver {self.label} ran for over {timeout:.0f} s\n{self.tail()}"
            ) from None

    def error(self) -> str | None:
        """The class name of the prefect-tune error its ``fit()`` raised, if any."""
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.startswith(ERROR_PREFIX):
                return line[len(ERROR_PREFIX) :].split(":", 1)[0]
        return None

    def error_message(self) -> str:
        lines = self.stderr_path.read_text(errors="replace").splitlines()
        return next(line for line in lines if line.startswith(ERROR_PREFIX))

    def summary(self) -> dict[str, Any]:
        for line in self.stdout_path.read_text().splitlines():
            if line.startswith(SUMMARY_PREFIX):
                return dict(json.loads(line[len(SUMMARY_PREFIX) :]))
        raise AssertionError(f"driver {self.label} printed no summary\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)


@pytest.fixture
def race(prefect_api: str, dask_cluster: Any, tmp_path: Path) -> Iterator[Race]:
    race = Race(prefect_api, dask_cluster.scheduler_address, tmp_path)
    try:
        yield race
    finally:
        for driver in race.drivers:
            driver.stop()


class Race:
    """Drivers of experiments under one storage root, and their gates and markers."""

    def __init__(self, api_url: str, dask_address: str, workdir: Path):
        self.store = workdir / "store"
        self.marks = workdir / "marks"
        self.gates = workdir / "gates"
        self.logs = workdir / "logs"
        for path in (self.store, self.marks, self.gates, self.logs):
            path.mkdir()
        self.trial_gate = self.gates / "trials"
        self.dask_address = dask_address
        self.env = dict(os.environ, PREFECT_API_URL=api_url)
        paths = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *(p for p in paths if p != REPO_ROOT)])
        self.drivers: list[RaceDriver] = []

    def start(self, name: str, label: str, *, held_at_lease: bool = False, **options: Any):
        args = [
            "--storage",
            str(self.store),
            "--name",
            name,
            "--marks",
            str(self.marks),
            "--trial-gate",
            str(self.trial_gate),
            "--dask-address",
            self.dask_address,
        ]
        if held_at_lease:
            args += ["--lease-gate", str(self.gates / label)]
        for key, value in options.items():
            args += [f"--{key}", str(value)]
        driver = RaceDriver(args, self.env, self.logs, label)
        self.drivers.append(driver)
        return driver

    def open(self, gate: str) -> None:
        (self.gates / gate).touch()

    def wait_for(self, *marks: str, alive: tuple[RaceDriver, ...] = ()) -> None:
        """Waits until every marker file exists, failing at once if a driver that must be
        alive meanwhile has exited."""
        deadline = time.monotonic() + WAIT_S
        while not all((self.marks / m).exists() for m in marks):
            for driver in alive:
                assert driver.running(), f"driver {driver.label} exited\n{driver.tail()}"
            assert time.monotonic() < deadline, f"no {marks} after {WAIT_S:.0f} s"
            time.sleep(0.05)

    def experiment(self, name: str) -> Storage:
        return Storage.open(StorageSpec(str(self.store / name)))


HELD = ("held-1", "held-2")  # both trials hold after their first checkpoint


def trial_files(experiment: Storage) -> dict[str, int]:
    return experiment.walk_files(layout.TRIALS_DIR)


def test_overwrite_while_a_driver_runs_is_refused_and_deletes_nothing(race: Race):
    first = race.start("busy", "first")
    race.wait_for(*HELD, alive=(first,))
    experiment = race.experiment("busy")
    definition = experiment.read_bytes(layout.EXPERIMENT_FILE)
    files = trial_files(experiment)
    assert sum(name.endswith("/state.json") for name in files) == 2  # a checkpoint each

    overwrite = race.start("busy", "overwrite", resume="overwrite")
    assert overwrite.wait() == 2, overwrite.tail()
    assert overwrite.error() == "ExperimentLockedError"
    assert "is being driven by flow run busy" in overwrite.error_message()
    assert experiment.read_bytes(layout.EXPERIMENT_FILE) == definition
    assert trial_files(experiment) == files
    assert first.running()

    race.open("trials")
    assert first.wait() == 0, first.tail()
    summary = first.summary()["trials"]
    assert [t["status"] for t in summary.values()] == ["TERMINATED", "TERMINATED"]
    assert [t["step"] for t in summary.values()] == [2, 2]
    results = ResultGrid.from_path(str(race.store / "busy"))
    assert results.num_terminated == 2 and results.num_errors == 0
    for result in results:
        assert result.checkpoint is not None
        with result.checkpoint.as_directory() as directory:
            assert Path(directory, "state.json").read_text().startswith('{"step": 2')
    # The first checkpoints the overwrite would have deleted are still there.
    assert set(files) <= set(trial_files(experiment))


def test_two_fresh_fits_of_one_name_leave_one_definition(race: Race):
    """Four fresh ``fit()``s of one name check storage before any of them takes the lease:
    nothing is stored. The first to take it writes the definition and runs the trials; one
    that tries while it runs is refused; of two that take the lease after it finished, the one
    with the same definition resumes it (nothing to run) and the one with another seed is
    refused by the config check, which runs again under the lease."""
    first = race.start("fresh", "first", held_at_lease=True)
    locked = race.start("fresh", "locked", held_at_lease=True)
    same = race.start("fresh", "same", held_at_lease=True)
    other = race.start("fresh", "other", held_at_lease=True, seed=7)
    everyone = (first, locked, same, other)
    race.wait_for(*(f"{d.label}.at-lease" for d in everyone), alive=everyone)
    experiment = race.experiment("fresh")
    assert not experiment.exists(layout.EXPERIMENT_FILE)  # only a lease holder writes it

    race.open("first")
    race.wait_for(*HELD, alive=everyone)
    definition = experiment.read_bytes(layout.EXPERIMENT_FILE)
    experiment_id = ExperimentDefinition.model_validate_json(definition).experiment_id

    race.open("locked")
    assert locked.wait() == 2, locked.tail()
    assert locked.error() == "ExperimentLockedError"
    assert experiment.read_bytes(layout.EXPERIMENT_FILE) == definition

    race.open("trials")
    assert first.wait() == 0, first.tail()
    trials = first.summary()["trials"]
    assert len(trials) == 2 and all(t.startswith(f"{experiment_id}_") for t in trials)

    race.open("same")
    assert same.wait() == 0, same.tail()
    assert same.summary()["trials"] == trials  # resumed: the same trials, none ran again

    race.open("other")
    assert other.wait() == 2, other.tail()
    assert other.error() == "ConfigError"
    assert "different seed" in other.error_message()

    assert experiment.read_bytes(layout.EXPERIMENT_FILE) == definition
    assert sorted(experiment.list_dir(layout.TRIALS_DIR)) == sorted(
        f"gated_{trial_id}" for trial_id in trials
    )
    stored = ExperimentStore(experiment)
    for dir_name in experiment.list_dir(layout.TRIALS_DIR):
        trial = stored.read_trial(dir_name)
        assert trial is not None and len(trial.attempts) == 1
