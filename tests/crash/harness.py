"""The test side of the crash suite: drivers as process groups, storage watched from outside,
kill points, what storage held at each kill, and the checks made once the experiment is done.

An experiment is driven by ``python -m tests.crash.driver`` processes, one after another: each
is started in a new session (its own process group, with its local Dask cluster's worker
processes), watched through storage until its kill point, frozen (SIGSTOP to the group) while
the point is confirmed, then SIGKILLed: the whole group ("the driver machine died") or the
driver process alone. What storage and the side logs held at that instant is recorded as a
:class:`Kill`, after checking that the experiment loads as it is; the next driver resumes the
experiment. :func:`tests.crash.checks.check_experiment` then compares everything with the
reference run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_tune import ResultGrid
from prefect_tune.storage import Storage
from prefect_tune.testing import ObjectStoreServer, flow_runs_named, s3_client
from prefect_tune.testing.side_log import read_side_log
from tests._env import REPO_ROOT
from tests.crash.driver import SUMMARY_PREFIX

#: (what, seconds, details) of each crash test, printed at the end of the session.
TIMINGS: list[tuple[str, float, str]] = []
TRIALS = "trials/"
STATE = "experiment_state.json"

# -- storage, seen from the test process ---------------------------------------------------------


class StorageView:
    """Reads an experiment's stored files directly, without the product's code.

    ``listing()`` maps each file's path relative to the experiment to a stamp that changes
    whenever the file is rewritten; JSON documents are parsed once per stamp.

    Attributes:
        poll_s: Pause between two looks while watching for a kill point.
    """

    poll_s = 0.001

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[Any, Any]] = {}

    def listing(self) -> dict[str, Any]:
        raise NotImplementedError

    def read(self, rel: str) -> bytes | None:
        raise NotImplementedError

    def read_json(self, rel: str, stamp: Any = None) -> Any:
        """The parsed document (None if absent); reused while its ``stamp`` is unchanged."""
        cached = self._parsed.get(rel)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        data = self.read(rel)
        parsed = json.loads(data) if data is not None else None
        if stamp is not None:
            self._parsed[rel] = (stamp, parsed)
        return parsed


class LocalView(StorageView):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def listing(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for parent, _, names in os.walk(self.path):
            rel_parent = os.path.relpath(parent, self.path)
            for name in names:
                rel = name if rel_parent == "." else f"{rel_parent}/{name}"
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(os.path.join(parent, name))
                    # Files are replaced by rename, so the inode tells rewrites apart.
                    out[rel] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return out

    def read(self, rel: str) -> bytes | None:
        try:
            return Path(self.path, rel).read_bytes()
        except FileNotFoundError:
            return None


class S3View(StorageView):
    # Every look is a request to the moto server, which serves the drivers from this process.
    poll_s = 0.05

    def __init__(self, client: Any, bucket: str, prefix: str):
        super().__init__()
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/"

    def listing(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(self.prefix) :]] = (
                    obj["ETag"],
                    obj["LastModified"],
                    obj["Size"],
                )
        return out

    def read(self, rel: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + rel)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None


@dataclass
class Observed:
    """One look at an experiment's storage."""

    files: dict[str, Any]
    view: StorageView

    def trial_dirs(self) -> list[str]:
        return sorted(
            {
                rel.split("/")[1]
                for rel in self.files
                if rel.count("/") >= 2 and rel.startswith(TRIALS)
            }
        )

    def trial(self, dir_name: str) -> dict[str, Any] | None:
        """The trial's ``trial.json`` (None before its first task run began)."""
        rel = f"{TRIALS}{dir_name}/trial.json"
        if rel not in self.files:
            return None
        return self.view.read_json(rel, self.files[rel])

    def trials(self) -> dict[str, dict[str, Any]]:
        return {d: t for d in self.trial_dirs() if (t := self.trial(d)) is not None}

    def checkpoint_dirs(self) -> dict[str, dict[str, Any]]:
        """``trials/<trial>/checkpoint_N`` -> {file name: stamp}."""
        out: dict[str, dict[str, Any]] = {}
        for rel, stamp in self.files.items():
            parts = rel.split("/")
            if len(parts) == 4 and parts[0] == "trials" and parts[2].startswith("checkpoint_"):
                out.setdefault("/".join(parts[:3]), {})[parts[3]] = stamp
        return out

    def partial_checkpoints(self) -> dict[str, dict[str, Any]]:
        """Checkpoint directories their trial's ``trial.json`` does not list: uploads not (yet)
        committed."""
        listed: dict[str, set[str]] = {}
        out: dict[str, dict[str, Any]] = {}
        for d, files in self.checkpoint_dirs().items():
            _, trial_dir, name = d.split("/")
            if trial_dir not in listed:
                trial = self.trial(trial_dir)
                listed[trial_dir] = {c["dir_name"] for c in (trial or {}).get("checkpoints", [])}
            if name not in listed[trial_dir]:
                out[d] = files
        return out


# -- processes -----------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


class Driver:
    """One ``python -m tests.crash.driver`` process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, label: str):
        self.stdout_path = log_dir / f"{label}.out"
        self.stderr_path = log_dir / f"{label}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.crash.driver", *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.pgid = self.proc.pid

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def running(self) -> bool:
        return self.proc.poll() is None

    def freeze(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGSTOP)

    def thaw(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGCONT)

    def kill(self, mode: str) -> None:
        """``"group"``: the driver and its Dask workers at once; ``"driver"``: the driver
        process alone (its workers, thawed, find out by themselves)."""
        if mode == "group":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
        else:
            self.proc.kill()
            self.thaw()
        self.proc.wait()

    def wait_gone(self, timeout: float = 60.0) -> None:
        """Waits until no process of the group is left; kills stragglers after ``timeout``."""
        deadline = time.monotonic() + timeout
        while group_members(self.pgid):
            if time.monotonic() > deadline:
                left = group_members(self.pgid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                raise AssertionError(
                    f"processes {left} of the killed driver's group still ran {timeout:.0f} s "
                    "after the driver died"
                )
            time.sleep(0.05)

    def finish(self, timeout: float) -> dict[str, Any]:
        """Waits for the driver to exit and returns its summary."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            raise AssertionError(
                f"the driver ran for over {timeout:.0f} s\n{self.tail()}"
            ) from None
        with contextlib.suppress(AssertionError):
            self.wait_gone(timeout=30)
        for line in self.stdout_path.read_text().splitlines():
            if line.startswith(SUMMARY_PREFIX):
                return json.loads(line[len(SUMMARY_PREFIX) :])
        raise AssertionError(
            f"the driver exited with {self.proc.returncode} and no summary\n{self.tail()}"
        )

    def tail(self, lines: int = 60) -> str:
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """Kills what is left of the group (cleanup after a failed test)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)


# -- kill points -----------------------------------------------------------------------------


@dataclass
class Baseline:
    """Storage as a driver found it when it started: kill points look only at what changed."""

    name: str
    trials: dict[str, dict[str, Any]]
    partials: dict[str, dict[str, Any]]
    state_stamp: Any


class KillPoint:
    """Where in a driver's run to kill it.

    ``reached`` is asked on each look at storage; once it says yes the group is frozen and
    ``confirm`` is asked on a look taken once storage is still (no: the group is thawed and
    watching goes on).
    """

    name = "point"

    def start(self, baseline: Baseline) -> None:
        self.baseline = baseline

    def reached(self, seen: Observed, driver: Driver) -> bool:
        raise NotImplementedError

    def confirm(self, seen: Observed) -> bool:
        return True

    def __repr__(self) -> str:
        return self.name


class DefinitionWritten(KillPoint):
    """The experiment's definition is stored and no trial has started."""

    name = "definition-written"

    def reached(self, seen: Observed, driver: Driver) -> bool:
        return "experiment.json" in seen.files and not seen.trials()


def _attempts(trial: dict[str, Any] | None) -> int:
    return len(trial["attempts"]) if trial else 0


class FlowRunStarted(KillPoint):
    """The driver's flow run is RUNNING in the Prefect API and has written its record under
    ``drivers/``, but does not hold the experiment's lease yet."""

    name = "flow-run-started"

    def start(self, baseline: Baseline) -> None:
        super().start(baseline)
        self.known = {str(run.id) for run in flow_runs_named(baseline.name)}
        self.asked = 0.0

    def _unleased(self, seen: Observed) -> bool:
        lease = seen.view.read_json("lease.json", seen.files.get("lease.json"))
        return not lease or lease.get("flow_run_id") not in self.new

    def reached(self, seen: Observed, driver: Driver) -> bool:
        if time.monotonic() - self.asked < 0.05:
            return False
        self.asked = time.monotonic()
        runs = flow_runs_named(self.baseline.name)
        self.new = {str(r.id) for r in runs if str(r.id) not in self.known and r.state.is_running()}
        announced = {
            rel.split("/")[-1][: -len(".json")] for rel in seen.files if rel.startswith("drivers/")
        }
        return bool(self.new & announced) and self._unleased(seen)

    def confirm(self, seen: Observed) -> bool:
        return self._unleased(seen)


class TrialStarted(KillPoint):
    """A task run of a trial has begun (its ``trial.json`` says RUNNING with a new attempt)."""

    name = "trial-started"

    def reached(self, seen: Observed, driver: Driver) -> bool:
        return any(
            t["status"] == "RUNNING" and _attempts(t) > _attempts(self.baseline.trials.get(d))
            for d, t in seen.trials().items()
        )


class MidCheckpoint(KillPoint):
    """A checkpoint upload is under way: files are stored that no ``trial.json`` lists yet."""

    name = "mid-checkpoint-upload"

    def _new_partials(self, seen: Observed) -> dict[str, Any]:
        return {
            d: files
            for d, files in seen.partial_checkpoints().items()
            if self.baseline.partials.get(d) != files
        }

    def reached(self, seen: Observed, driver: Driver) -> bool:
        return bool(self._new_partials(seen))

    def confirm(self, seen: Observed) -> bool:
        return bool(self._new_partials(seen))


class TrialFinished(KillPoint):
    """A trial has just finished (its ``trial.json`` says TERMINATED) while others run on."""

    name = "trial-finished"

    def reached(self, seen: Observed, driver: Driver) -> bool:
        trials = seen.trials()
        return any(
            t["status"] == "TERMINATED"
            and (self.baseline.trials.get(d) or {}).get("status") != "TERMINATED"
            for d, t in trials.items()
        )


class StateSave(KillPoint):
    """The driver is saving ``experiment_state.json`` while trials run: killed while its
    temporary file exists (local storage), or else right as a new version appears."""

    name = "state-save"

    def start(self, baseline: Baseline) -> None:
        super().start(baseline)
        self.stamps = [baseline.state_stamp]
        self.mid_write = False

    def _temporary(self, seen: Observed) -> bool:
        return any(rel.startswith(".tmp-") and rel.endswith(STATE) for rel in seen.files)

    def reached(self, seen: Observed, driver: Driver) -> bool:
        stamp = seen.files.get(STATE)
        if stamp is not None and stamp != self.stamps[-1]:
            self.stamps.append(stamp)
        trials_running = any(
            _attempts(t) > _attempts(self.baseline.trials.get(d)) for d, t in seen.trials().items()
        )
        if not trials_running:
            return False
        # Wait for a few saves in the hope of catching one mid-write, then take the next one.
        return self._temporary(seen) or len(self.stamps) > 3

    def confirm(self, seen: Observed) -> bool:
        self.mid_write = self._temporary(seen)
        return True

    def __repr__(self) -> str:
        return f"{self.name}{' (mid-write)' if getattr(self, 'mid_write', False) else ''}"


class AfterDelay(KillPoint):
    """``seconds`` after the driver process started."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.name = f"after-{seconds:.2f}s"

    def reached(self, seen: Observed, driver: Driver) -> bool:
        return driver.elapsed >= self.seconds


# -- experiments ---------------------------------------------------------------------------------


@dataclass
class Kill:
    """What storage and the side logs held when a driver was killed."""

    point: str
    mode: str
    at_s: float
    trials: dict[str, dict[str, Any]]  # trial dir -> trial.json
    side_log_lengths: dict[str, int]  # trial id -> events logged before the kill
    lease: dict[str, Any] | None
    lineage: list[str]  # flow runs recorded in experiment_state.json
    partials: list[str]
    # False: only the trials in ``trials`` were hit (a worker kill); the others ran on.
    whole_experiment: bool = True


@dataclass
class Backend:
    """Where an experiment is stored: ``storage`` is its RunConfig storage_path."""

    name: str
    storage: str
    options: dict[str, Any]
    view_for: Callable[[str], StorageView]


def result_grid(exp: CrashExperiment) -> ResultGrid:
    """The experiment as a user on another machine would load it (nothing cached)."""
    Storage._cache.clear()
    url = f"{exp.backend.storage.rstrip('/')}/{exp.name}"
    return ResultGrid.from_path(url, storage_options=exp.backend.options or None)


def check_loads(exp: CrashExperiment, kill: Kill) -> None:
    """Right after a kill, before any resume, the experiment loads (promise 4) and each trial's
    history runs from iteration 1 without a gap or a repeat, up to at least its latest
    committed checkpoint (promises 1 and 3)."""
    grid = result_grid(exp)
    by_id = {t["trial_id"]: t for t in kill.trials.values()}
    assert len(grid) >= len(by_id), (kill.point, len(grid), sorted(by_id))
    for result in grid:
        trial = by_id.get(result.trial_id)
        if trial is None:  # known to the driver's snapshot only; it never started
            continue
        frame = result.metrics_dataframe
        iterations = list(frame["training_iteration"]) if len(frame) else []
        where = f"trial {result.trial_id} right after the kill at {kill.point}"
        if trial.get("exploits"):
            # A PBT exploit resumes at the donor's iteration: a gap or a rewind, each once.
            assert iterations == sorted(set(iterations)), f"{where}: {iterations}"
            continue
        assert iterations == list(range(1, len(iterations) + 1)), f"{where}: {iterations}"
        if trial["checkpoints"]:
            committed = trial["checkpoints"][-1]["training_iteration"]
            assert len(iterations) >= committed, f"{where}: rows {iterations}, ckpt {committed}"


def local_backend(root: Path) -> Backend:
    root.mkdir(parents=True, exist_ok=True)
    return Backend("local", str(root), {}, lambda name: LocalView(str(root / name)))


def s3_backend(server: ObjectStoreServer) -> Backend:
    """A new bucket on the session's moto server."""
    bucket = server.new_bucket()
    client = s3_client(server.endpoint_url)
    return Backend(
        "s3",
        f"s3://{bucket}/crash",
        server.options,
        lambda name: S3View(client, bucket, f"crash/{name}"),
    )


def unique_name(prefix: str) -> str:
    """An experiment name no other test uses: flow runs are looked up by it."""
    return f"{prefix}-{os.urandom(3).hex()}"


@dataclass
class CrashExperiment:
    """An experiment driven by driver processes that the test kills."""

    name: str
    backend: Backend
    workdir: Path
    env: dict[str, str]
    extra_args: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    runs: int = 0
    summary: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.side_log = self.workdir / "side-log"
        self.side_log.mkdir(parents=True, exist_ok=True)
        self.view = self.backend.view_for(self.name)

    def args(self) -> list[str]:
        return [
            "--storage",
            self.backend.storage,
            "--storage-options",
            json.dumps(self.backend.options),
            "--name",
            self.name,
            "--side-log",
            str(self.side_log),
            *self.extra_args,
        ]

    def start(self) -> Driver:
        self.runs += 1
        return Driver(self.args(), self.env, self.workdir, f"run{self.runs}")

    def observe(self) -> Observed:
        return Observed(self.view.listing(), self.view)

    def side_log_lengths(self) -> dict[str, int]:
        return {p.stem: len(read_side_log(self.side_log, p.stem)) for p in self.side_log.iterdir()}

    def settled(self) -> Observed:
        """A look at storage once writes still in flight (S3 requests sent before the kill)
        have landed: two identical listings in a row."""
        seen = self.observe()
        for _ in range(50):
            time.sleep(0.2)
            again = self.observe()
            if again.files == seen.files:
                return again
            seen = again
        return seen

    @contextlib.contextmanager
    def driver(self) -> Iterator[Driver]:
        driver = self.start()
        try:
            yield driver
        finally:
            driver.stop()

    def run_to_kill(
        self, point: KillPoint, mode: str = "group", timeout: float = 240
    ) -> Kill | None:
        """Runs a driver until ``point`` and kills it; None if it finished first (it is then
        the experiment's last run)."""
        before = self.observe()
        point.start(
            Baseline(
                name=self.name,
                trials=before.trials(),
                partials=before.partial_checkpoints(),
                state_stamp=before.files.get(STATE),
            )
        )
        with self.driver() as driver:
            while True:
                if not driver.running():
                    self.summary = driver.finish(timeout=30)
                    return None
                if driver.elapsed > timeout:
                    raise AssertionError(f"{point} not reached in {timeout} s\n{driver.tail()}")
                if point.reached(self.observe(), driver):
                    driver.freeze()
                    # Requests sent before the freeze (to S3) may still land: judge after them.
                    if driver.running() and point.confirm(self.settled()):
                        at = driver.elapsed
                        driver.kill(mode)
                        driver.wait_gone()
                        break
                    driver.thaw()
                time.sleep(self.view.poll_s)
        seen = self.settled()
        state = seen.view.read_json(STATE) if STATE in seen.files else None
        kill = Kill(
            point=repr(point),
            mode=mode,
            at_s=at,
            trials=seen.trials(),
            side_log_lengths=self.side_log_lengths(),
            lease=seen.view.read_json("lease.json") if "lease.json" in seen.files else None,
            lineage=[r["flow_run_id"] for r in state["flow_runs"]] if state else [],
            partials=sorted(seen.partial_checkpoints()),
        )
        self.kills.append(kill)
        if "experiment.json" in seen.files:
            check_loads(self, kill)
        return kill

    def run_to_end(self, timeout: float = 300) -> dict[str, Any]:
        with self.driver() as driver:
            self.summary = driver.finish(timeout=timeout)
        return self.summary
