"""Figures for how scheduler decisions travel between trials and the driver on Dask.

Up: each result row goes from the trial's worker to the driver as a Dask event
(``Worker.log_event``: batched with the worker's other scheduler traffic, fire and forget;
the driver's client gets it through ``Client.subscribe_topic``). Down: a decision other than
CONTINUE goes from the driver straight to the trial's worker (``Client.run(..., workers=[that
worker], wait=False)``), into a dict in that process that the trial's ``report()`` reads.

Measures, on a local Dask cluster (loopback):

- the cost the up message adds to ``report()`` on the worker, per result row;
- result rows per second reaching the driver and decided by ASHA, four trials reporting flat
  out (W2's shape);
- the round trip of a decision: a trial sends a result and waits until the driver's answer is
  in its process; p50 / p95 / max, idle and with three other trials flooding.

Run: ``python -m bench.decision_channel [--reports 2000] [--rounds 200]``.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time
from typing import Any

from distributed import Client, LocalCluster, get_worker

TOPIC = "prefect-tune/bench/results"
#: In each worker process: (trial id, iteration) -> decision delivered by the driver.
DELIVERED: dict[tuple[str, int], str] = {}


def deliver(trial: str, iteration: int, decision: str) -> None:
    DELIVERED[(trial, iteration)] = decision


def flood(trial: str, reports: int) -> float:
    worker = get_worker()
    started = time.perf_counter()
    for i in range(1, reports + 1):
        worker.log_event(TOPIC, (trial, worker.address, {"training_iteration": i, "loss": 1 / i}))
    return (time.perf_counter() - started) / reports * 1e6


def ping(trial: str, rounds: int, pause_s: float) -> list[float]:
    worker = get_worker()
    latencies = []
    for i in range(1, rounds + 1):
        started = time.perf_counter()
        worker.log_event(TOPIC, (trial, worker.address, {"training_iteration": i, "loss": 1 / i}))
        deadline = started + 2
        while (trial, i) not in DELIVERED and time.perf_counter() < deadline:
            time.sleep(0.0002)
        latencies.append((time.perf_counter() - started) * 1e3)
        time.sleep(pause_s)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    from bench import decision_channel as here  # by reference: the workers import it too
    from prefect_tune.schedulers import ASHAScheduler

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        asha = ASHAScheduler(metric="loss", mode="min", max_t=10**9, grace_period=1)
        received = {"n": 0}

        events: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def decide() -> None:
            # The driver's thread, as the controller's: the handler only hands events over.
            while (event := events.get()) is not None:
                trial, address, row = event[1]
                received["n"] += 1
                if trial not in asha.state()["bracket_of"]:
                    asha.on_trial_add(trial, {})
                decision = asha.on_trial_result(trial, row)
                if trial.startswith("ping"):  # a real driver sends only what is not CONTINUE
                    client.run(
                        here.deliver,
                        trial,
                        row["training_iteration"],
                        decision.value,
                        workers=[address],
                        wait=True,
                    )

        driver = threading.Thread(target=decide, daemon=True)
        driver.start()
        on_event = events.put
        client.subscribe_topic(TOPIC, on_event)
        idle = client.submit(here.ping, "ping-idle", args.rounds, 0.002, pure=False).result()

        before = received["n"]
        started = time.perf_counter()
        floods = [client.submit(here.flood, f"t{i}", args.reports, pure=False) for i in range(4)]
        put_us = client.gather(floods)
        while received["n"] - before < 4 * args.reports and time.perf_counter() - started < 120:
            time.sleep(0.002)
        wall = time.perf_counter() - started
        rate = (received["n"] - before) / wall

        floods = [
            client.submit(here.flood, f"u{i}", args.reports * 5, pure=False) for i in range(3)
        ]
        loaded = client.submit(here.ping, "ping-loaded", args.rounds, 0.002, pure=False).result()
        client.gather(floods)
        client.unsubscribe_topic(TOPIC)
        events.put(None)
        driver.join()

    def quantiles(values: list[float]) -> str:
        values = sorted(values)
        p95 = values[int(0.95 * (len(values) - 1))]
        return f"p50 {statistics.median(values):.2f} ms, p95 {p95:.2f} ms, max {values[-1]:.2f} ms"

    print(f"log_event on the worker: {statistics.mean(put_us):.1f} us per result row")
    print(
        f"rows delivered to the driver and decided by ASHA: {rate:,.0f} rows/s (4 x {args.reports})"
    )
    print(f"decision round trip, idle:   {quantiles(idle)}")
    print(f"decision round trip, loaded: {quantiles(loaded)} (3 trials flooding)")


if __name__ == "__main__":
    main()
