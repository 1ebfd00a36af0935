"""An experiment driver run as its own process, to be killed or to run on "another host".

    python -m tests.multihost.driver fit --storage-path URL --name NAME --address ADDR \\
        [--options JSON] [--marks DIR --gate FILE] [--lease-ttl S]
    python -m tests.multihost.driver restore --path URL --address ADDR [--options JSON]

``fit`` runs two trials of `tests.multihost.trainables.stepped` (x = 1 and 2, four steps, held
after step 2 until ``--gate`` exists); ``restore`` continues the experiment stored at
``--path``. Both run on the Dask cluster at ``--address`` and print ``DRIVER-DONE <json>``.
"""

from __future__ import annotations

import argparse
import json
import socket

import prefect_tune as tune
from tests.multihost import trainables

DONE = "DRIVER-DONE "


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.multihost.driver")
    parser.add_argument("mode", choices=["fit", "restore"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--options", default="null")
    parser.add_argument("--storage-path")
    parser.add_argument("--name")
    parser.add_argument("--path")
    parser.add_argument("--marks", default="")
    parser.add_argument("--gate", default="")
    parser.add_argument("--lease-ttl", type=float, default=60.0)
    args = parser.parse_args()
    options = json.loads(args.options)

    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(address=args.address)
    if args.mode == "fit":
        tuner = tune.Tuner(
            trainables.stepped,
            param_space={
                "x": tune.grid_search([1.0, 2.0]),
                "steps": 4,
                "hold_at": 2,
                "marks": args.marks,
                "gate": args.gate,
            },
            tune_config=tune.TuneConfig(metric="loss", mode="min"),
            run_config=tune.RunConfig(
                name=args.name,
                storage_path=args.storage_path,
                storage_options=options,
                lease_ttl_s=args.lease_ttl,
            ),
            task_runner=runner,
        )
    else:
        tuner = tune.Tuner.restore(
            args.path, trainables.stepped, storage_options=options, task_runner=runner
        )
    results = tuner.fit()
    summary = {
        "host": socket.gethostname(),
        "terminated": results.num_terminated,
        "errors": results.num_errors,
    }
    print(DONE + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
