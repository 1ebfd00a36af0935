"""A driver of a small experiment, run as its own process by the tests of drivers racing.

    python -m tests.race_driver --storage /tmp/store --name exp --marks /tmp/m \
        --trial-gate /tmp/open --dask-address tcp://127.0.0.1:8786 [--resume overwrite] \
        [--seed 1] [--label b --lease-gate /tmp/b-may-lease]

runs ``Tuner(tests.trainables.gated, ...).fit()`` on the Dask cluster at ``--dask-address``,
its trials held after their first checkpoint until ``--trial-gate`` exists. With
``--lease-gate``, the driver creates ``<marks>/<label>.at-lease`` once its flow run is about to
take the experiment's lease (``fit()`` has checked what is stored), and waits there until that
file exists. It prints ``RACE-SUMMARY <json>`` when ``fit()`` returns; when ``fit()`` raises a
prefect-tune error it prints ``RACE-ERROR <class name>: <message>`` to stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

SUMMARY_PREFIX = "RACE-SUMMARY "
ERROR_PREFIX = "RACE-ERROR "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.race_driver")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--marks", required=True, help="directory of the driver's marker files")
    parser.add_argument("--trial-gate", required=True)
    parser.add_argument("--dask-address", required=True)
    parser.add_argument("--resume", default="auto")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--label", default="driver")
    parser.add_argument("--lease-gate", default=None)
    return parser.parse_args(argv)


def hold_before_the_lease(marks: str, label: str, gate: str) -> None:
    """Makes the first lease acquisition of this process wait for ``gate``."""
    from prefect_tune.state import LeaseHolder

    acquire = LeaseHolder.acquire

    def held_acquire(self: LeaseHolder) -> Any:
        if os.path.exists(os.path.join(marks, f"{label}.at-lease")):
            return acquire(self)
        with open(os.path.join(marks, f"{label}.at-lease"), "w"):
            pass
        deadline = time.monotonic() + 300
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate {gate} never opened")
            time.sleep(0.02)
        return acquire(self)

    LeaseHolder.acquire = held_acquire  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from prefect_dask import DaskTaskRunner

    import prefect_tune as tune
    from prefect_tune import RunConfig, TuneConfig, Tuner
    from prefect_tune.exceptions import PrefectTuneError
    from tests.trainables import gated

    if args.lease_gate:
        hold_before_the_lease(args.marks, args.label, args.lease_gate)
    tuner = Tuner(
        gated,
        param_space={
            "x": tune.grid_search([1, 2]),
            "marks": args.marks,
            "gate": args.trial_gate,
        },
        tune_config=TuneConfig(metric="loss", mode="min", max_concurrent_trials=2, seed=args.seed),
        run_config=RunConfig(name=args.name, storage_path=args.storage, resume=args.resume),
        task_runner=DaskTaskRunner(address=args.dask_address),
    )
    try:
        results = tuner.fit()
    except PrefectTuneError as exc:
        print(f"{ERROR_PREFIX}{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 2
    trials = {
        r.trial_id: {"status": r.status.value, "step": r.metrics.get("step")} for r in results
    }
    print(SUMMARY_PREFIX + json.dumps({"trials": trials}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
