"""Hosts a benchmark's ``distributed.LocalCluster`` in a process of its own.

``python -m bench._cluster_host <prefect api url> [<workers> <threads per worker>]`` starts the
cluster (:func:`prefect_tune.testing.local_cluster`: by default 2 worker processes x 1 thread,
workers reporting to the given Prefect API), prints ``{"address": ...}`` as one JSON line and
keeps it up until its standard input is closed.

Why a separate process: a LocalCluster runs its scheduler inside the process that creates it.
Here the driver talks to the cluster by address only (``DaskTaskRunner(address=...)``, as with a
real cluster), so the driver's memory and CPU numbers are the driver's, not the scheduler's.
"""

from __future__ import annotations

import json
import sys

N_WORKERS = 2
THREADS_PER_WORKER = 1


def main(argv: list[str]) -> int:
    from prefect_tune.testing import local_cluster

    api_url = argv[0]
    n_workers = int(argv[1]) if len(argv) > 1 else N_WORKERS
    threads = int(argv[2]) if len(argv) > 2 else THREADS_PER_WORKER
    with local_cluster(n_workers=n_workers, threads_per_worker=threads, api_url=api_url) as cluster:
        print(json.dumps({"address": cluster.scheduler_address}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or exits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
