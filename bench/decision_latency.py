"""Decision latency through the wired desk channel on a local Dask cluster (loopback).

A trial on a worker reports a row every 0.5 ms; a ``MaximumIterationStopper(5)`` on the
driver's desk stops it at its 5th row. Measured on the worker: from that report to the report
at which the trial sees STOP (up: ``Worker.log_event``, batched per ~5 ms; the desk writes
``decisions.json``; down: ``Client.run`` to the trial's worker).

Run: ``python -m bench.decision_latency [--rounds 100]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from distributed import Client, LocalCluster

from prefect_tune.engine._channel import DaskDeskChannel, RemoteDeskControl
from prefect_tune.engine._control import Decision
from prefect_tune.engine._decisions import DecisionDesk, DeskControl
from prefect_tune.stopper import MaximumIterationStopper
from prefect_tune.storage import StorageSpec

STOP_AT = 5


def _trial(control: RemoteDeskControl, trial_id: str) -> float:
    triggered = 0.0
    i = 0
    while True:
        i += 1
        decision = control.on_result(trial_id, {"training_iteration": i})
        if i == STOP_AT:
            triggered = time.perf_counter()
        if decision is not Decision.CONTINUE:
            return time.perf_counter() - triggered
        time.sleep(0.0005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        storage = StorageSpec(tempfile.mkdtemp()).open()
        desk = DeskControl(DecisionDesk(stopper=MaximumIterationStopper(STOP_AT)), storage)
        channel = DaskDeskChannel(desk, client, "prefect-tune-decision-latency")
        try:
            lat = sorted(
                client.submit(_trial, channel.control(r, f"t{r}"), f"t{r}", pure=False).result()
                for r in range(args.rounds)
            )
        finally:
            channel.close()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3  # noqa: E731
    print(
        f"decision latency, {len(lat)} trials: p50 {p(0.5):.1f} ms, p95 {p(0.95):.1f} ms, "
        f"max {lat[-1] * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
