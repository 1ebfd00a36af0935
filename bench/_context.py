"""`BenchContext`: the services a workload needs, each started once and only when first asked for.

- a Prefect API: ``prefect_test_harness`` (a temporary server and SQLite database, the default),
  or with ``prefect_db`` ``"sqlite"`` / ``"postgresql"`` a ``prefect server start`` on SQLite or
  on a throw-away PostgreSQL cluster (``prefect_tune.testing.prefect_server`` /
  ``postgres_server``),
- one ``distributed.LocalCluster`` (2 worker processes x 1 thread) whose workers report to it,
  hosted in a child process (``bench._cluster_host``) unless ``in_process_cluster``,
- a moto S3 server on 127.0.0.1 (its own process),
- directories under the run's work directory,
- ``fit()``: a Tuner's ``fit()`` timed alone (optionally under cProfile or tracemalloc), started
  once the Prefect server has caught up with the events of the runs before it, with the CPU time
  the server spends on it measured (`FitTiming.server_cpu_s`).

The API, the cluster and the S3 server are those of :mod:`prefect_tune.testing`, as in the
tests. Start-up times go to ``Recorder.setup``, never into a workload's numbers.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import json
import os
import pstats
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bench._cluster_host import N_WORKERS, THREADS_PER_WORKER
from bench._common import Recorder

if TYPE_CHECKING:
    from prefect_tune.testing import ObjectStoreServer


@dataclass
class FitTiming:
    """One timed ``fit()``."""

    results: Any
    wall_s: float
    peak_bytes: int | None = None  # tracemalloc peak above the level before fit()
    retained_bytes: int | None = None  # still allocated after fit(), results held
    server_cpu_s: float | None = None  # Prefect server CPU from fit() until it was idle again
    server_busy_after_s: float | None = None  # how long the server stayed busy after fit()
    # CPU seconds used during fit() (start to return) by: the driver, the Dask cluster's
    # processes, the Prefect server
    cpu_during_s: dict[str, float] = field(default_factory=dict)
    # the driver's resident memory: its highest value during fit() (sampled every 50 ms) above
    # its value before
    rss_growth_bytes: int | None = None
    started_at: float = 0.0  # time.time() when fit() was called
    returned_at: float = 0.0  # time.time() when it returned


PREFECT_DBS = ("harness", "sqlite", "postgresql")


class BenchContext:
    """Shared by every workload of one ``bench.run`` invocation."""

    concurrency = N_WORKERS * THREADS_PER_WORKER

    def __init__(
        self,
        rec: Recorder,
        workdir: str,
        *,
        repeat: int,
        floor: bool,
        profile_dir: str | None = None,
        in_process_cluster: bool = False,
        prefect_db: str = "harness",
    ):
        if prefect_db not in PREFECT_DBS:
            raise ValueError(f"prefect_db {prefect_db!r}: expected one of {', '.join(PREFECT_DBS)}")
        self.rec = rec
        self.workdir = workdir
        self.repeat = repeat
        self.floor = floor
        self.profile_dir = profile_dir
        self.in_process_cluster = in_process_cluster
        self.prefect_db = prefect_db
        self._stack = contextlib.ExitStack()
        self._api_url: str | None = None
        self._cluster: Any = None
        self._client: Any = None
        self._s3: ObjectStoreServer | None = None
        self._warm = False
        self._server: Any = None
        self._postgres_pids: set[int] = set()
        self._clusters: dict[tuple[int, int], Any] = {}
        self.cluster_start_s: dict[tuple[int, int], float] = {}

    # -- services --------------------------------------------------------------------------------

    def prefect_api(self) -> str:
        if self._api_url is None:
            from prefect_tune.testing import postgres_server, prefect_api, prefect_server

            start = time.perf_counter()
            if self.prefect_db == "harness":
                self._api_url = self._stack.enter_context(prefect_api(startup_timeout=120))
                what = "Prefect API start (prefect_test_harness)"
            elif self.prefect_db == "sqlite":
                self._api_url = self._stack.enter_context(prefect_server(None))
                what = "Prefect API start (prefect server start, SQLite)"
            else:
                database = self._stack.enter_context(postgres_server())
                self.rec.add_setup(
                    "PostgreSQL start (initdb + postgres)", time.perf_counter() - start
                )
                self._postgres_pids = _postgres_pids()
                start = time.perf_counter()
                self._api_url = self._stack.enter_context(prefect_server(database))
                what = "Prefect API start (prefect server start, PostgreSQL)"
            self.rec.add_setup(what, time.perf_counter() - start)
        return self._api_url

    def server_process(self) -> Any:
        """The Prefect server's process (a child of this one), or None if not found."""
        if self._server is None:
            import psutil

            self.prefect_api()
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    cmdline = " ".join(child.cmdline())
                    if _is_prefect_server(cmdline):
                        self._server = child
                        break
        return self._server

    def _role(self, process: Any) -> str:
        server = self.server_process()
        if server is not None and process.pid == server.pid:
            return "Prefect server"
        if process.pid in self._postgres_pids or _is_postgres(process):
            return "PostgreSQL"
        return "Dask cluster"

    def server_cpu_s(self) -> float | None:
        server = self.server_process()
        return None if server is None else _cpu_s(server)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds used so far by this process (the driver), the Prefect server, PostgreSQL
        (with ``prefect_db="postgresql"``) and every other child process (the Dask clusters)."""
        import psutil

        me = psutil.Process()
        out = {"driver": _cpu_s(me), "Prefect server": 0.0, "Dask cluster": 0.0}
        if self.prefect_db == "postgresql":
            out["PostgreSQL"] = 0.0
        for child in me.children(recursive=True):
            role = self._role(child)
            out[role] = out.get(role, 0.0) + _cpu_s(child)
        return out

    def settle_server(self, max_wait_s: float = 180.0) -> float:
        """Waits until the Prefect server is idle (under 10 % of a core for a second): on this
        2-core machine it catches up with the previous runs' events after they end, and would
        otherwise take CPU from the next timed run. Returns the seconds waited."""
        start = time.perf_counter()
        quiet = 0
        last = self.server_cpu_s()
        if last is None:
            return 0.0
        while time.perf_counter() - start < max_wait_s and quiet < 2:
            time.sleep(0.5)
            now = self.server_cpu_s()
            assert now is not None
            quiet = quiet + 1 if now - last < 0.05 else 0
            last = now
        return time.perf_counter() - start

    def cluster(self) -> Any:
        """The shared cluster: ``.scheduler_address`` is all a workload needs."""
        if self._cluster is None:
            api_url = self.prefect_api()
            start = time.perf_counter()
            if self.in_process_cluster:
                from prefect_tune.testing import local_cluster

                self._cluster = self._stack.enter_context(
                    local_cluster(
                        n_workers=N_WORKERS, threads_per_worker=THREADS_PER_WORKER, api_url=api_url
                    )
                )
                where = "in the driver process"
            else:
                self._cluster = self._stack.enter_context(hosted_cluster(api_url))
                where = "in its own process"
            self.rec.add_setup(
                f"Dask LocalCluster start ({N_WORKERS} workers x {THREADS_PER_WORKER} thread, "
                f"{where})",
                time.perf_counter() - start,
            )
        return self._cluster

    def cluster_of(self, n_workers: int, threads_per_worker: int = 1) -> Any:
        """Another cluster of ``n_workers`` (W8's 16), in its own process, started once; its
        start time goes to the set-up list and to ``self.cluster_start_s[n_workers]``."""
        key = (n_workers, threads_per_worker)
        if key not in self._clusters:
            api_url = self.prefect_api()
            start = time.perf_counter()
            self._clusters[key] = self._stack.enter_context(
                hosted_cluster(api_url, n_workers, threads_per_worker)
            )
            seconds = time.perf_counter() - start
            self.cluster_start_s[key] = seconds
            self.rec.add_setup(
                f"Dask LocalCluster start ({n_workers} workers x {threads_per_worker} thread, "
                "in its own process)",
                seconds,
            )
        return self._clusters[key]

    def task_runner(self) -> Any:
        """A DaskTaskRunner on the shared cluster (a new client for each flow run)."""
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=self.cluster().scheduler_address)

    def dask_client(self) -> Any:
        """A plain Dask client on the shared cluster, for the floors."""
        if self._client is None:
            from distributed import Client

            self._client = self._stack.enter_context(Client(self.cluster().scheduler_address))
        return self._client

    def s3(self) -> ObjectStoreServer:
        """A moto S3 server in a process of its own, as S3 is a service apart from the driver
        (in the driver's process it would compete with the driver for the GIL)."""
        if self._s3 is None:
            from prefect_tune.testing import moto_server

            start = time.perf_counter()
            self._s3 = self._stack.enter_context(moto_server(own_process=True))
            self.rec.add_setup("moto S3 server start (own process)", time.perf_counter() - start)
        return self._s3

    def warm_up(self) -> None:
        """Runs a 2-trial experiment once, so that worker imports and Prefect's first-flow costs
        land here and not in the first measured repetition."""
        if self._warm:
            return
        import prefect_tune as tune
        from bench.workloads import w1_trivial

        self.cluster()
        start = time.perf_counter()
        tuner = tune.Tuner(
            w1_trivial.trainable,
            param_space={"x": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, seed=0),
            run_config=tune.RunConfig(name="warm-up", storage_path=self.new_dir("warm-up")),
            task_runner=self.task_runner(),
        )
        results = tuner.fit()
        check(results, "warm-up")
        if self.floor:
            from bench import floor

            self.dask_client().gather(self.dask_client().map(floor.trivial, [0, 1], pure=False))
        self.rec.add_setup("warm-up experiment (2 trials)", time.perf_counter() - start)
        self._warm = True

    def new_dir(self, *parts: str) -> str:
        """A fresh, empty directory below the work directory."""
        path = os.path.join(self.workdir, *parts, uuid.uuid4().hex[:8])
        os.makedirs(path)
        return path

    # -- timing ----------------------------------------------------------------------------------

    def fit(self, tuner: Any, label: str, *, memory: bool = False) -> FitTiming:
        """Times ``tuner.fit()`` alone; with ``memory``, under tracemalloc (slower: not timed)."""
        profiler = cProfile.Profile() if self.profile_dir and not memory else None
        if memory:
            gc.collect()
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        self.settle_server()
        server_cpu_before = self.server_cpu_s()
        cpu_before = self.cpu_by_role()
        sampler = _RssSampler()
        started_at = time.time()
        start = time.perf_counter()
        try:
            if profiler is not None:
                profiler.enable()
            with sampler:
                results = tuner.fit()
            wall = time.perf_counter() - start
        finally:
            if profiler is not None:
                profiler.disable()
        returned_at = time.time()
        cpu_after = self.cpu_by_role()
        timing = FitTiming(results, wall, started_at=started_at, returned_at=returned_at)
        timing.rss_growth_bytes = sampler.growth
        timing.cpu_during_s = {
            role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after
        }
        if server_cpu_before is not None:
            timing.server_busy_after_s = self.settle_server()
            timing.server_cpu_s = (self.server_cpu_s() or 0.0) - server_cpu_before
        if memory:
            peak = tracemalloc.get_traced_memory()[1]
            gc.collect()  # retained = what is still reachable, not garbage awaiting collection
            current = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            timing.peak_bytes = peak - baseline
            timing.retained_bytes = current - baseline
        if profiler is not None and self.profile_dir is not None:
            os.makedirs(self.profile_dir, exist_ok=True)
            path = os.path.join(self.profile_dir, f"{label}.prof")
            profiler.dump_stats(path)
            stats = pstats.Stats(profiler)
            self.rec.details.setdefault("profiles", {})[label] = {
                "path": path,
                "total_calls": stats.total_calls,  # type: ignore[attr-defined]
            }
        check(results, label)
        return timing

    def close(self) -> None:
        self._stack.close()


class _RssSampler:
    """The driver's resident set size, sampled every 50 ms by a thread while inside."""

    def __init__(self, interval_s: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self.before = 0
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _RssSampler:
        self.before = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _cpu_s(process: Any) -> float:
    """User + system CPU seconds of a psutil process so far; 0 if it has gone."""
    import psutil

    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return float(times.user + times.system)
    return 0.0


def _is_prefect_server(cmdline: str) -> bool:
    """The harness's uvicorn, or ``prefect server start`` (which runs uvicorn in its process)."""
    return ("uvicorn" in cmdline and "prefect.server" in cmdline) or " server start" in cmdline


def _is_postgres(process: Any) -> bool:
    import psutil

    with contextlib.suppress(psutil.Error):
        return bool(process.name() == "postgres")
    return False


def _postgres_pids() -> set[int]:
    """The PostgreSQL processes below this one (the postmaster and its backends)."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True) if _is_postgres(p)}


@contextlib.contextmanager
def hosted_cluster(
    api_url: str, n_workers: int = N_WORKERS, threads_per_worker: int = THREADS_PER_WORKER
) -> Iterator[Any]:
    """The LocalCluster of ``bench._cluster_host``, in a child process (see that module)."""
    from tests._env import REPO_ROOT

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench._cluster_host",
            api_url,
            str(n_workers),
            str(threads_per_worker),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench._cluster_host exited ({process.wait()}) before starting")
        yield SimpleNamespace(scheduler_address=json.loads(line)["address"], pid=process.pid)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=30)


def check(results: Any, label: str) -> None:
    """Refuses to report numbers of an experiment whose trials did not all finish cleanly."""
    if results.num_errors or results.num_terminated != len(results):
        first = results.errors[0] if results.errors else "unfinished trials"
        raise RuntimeError(
            f"{label}: {results.num_errors} errored and "
            f"{len(results) - results.num_terminated} unfinished trials of {len(results)}: {first}"
        )


@contextlib.contextmanager
def traced_memory() -> Iterator[dict[str, int]]:
    """tracemalloc around a block: yields a dict that gets ``peak`` and ``retained`` bytes."""
    out: dict[str, int] = {}
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        yield out
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out["peak"] = peak - baseline
        out["retained"] = current - baseline
