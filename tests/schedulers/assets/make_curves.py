"""Regenerates curves.json, the recorded result stream the scheduler tests replay.

Twelve trials of 27 iterations each, reported round-robin as a cluster of equal workers would:
``loss = floor + scale * exp(-t / tau) + noise``, ``acc = 1 - loss``. Run from the repository
root: ``python tests/schedulers/assets/make_curves.py``.
"""

import json
import math
import pathlib
import random

rng = random.Random(14)
trials = {
    f"trial_{i:02d}": {
        "lr": round(10 ** rng.uniform(-4, -1), 6),
        "floor": rng.uniform(0.05, 0.6),
        "scale": rng.uniform(0.5, 1.5),
        "tau": rng.uniform(2, 12),
    }
    for i in range(12)
}
rows = []
for t in range(1, 28):
    for trial_id, p in trials.items():
        loss = p["floor"] + p["scale"] * math.exp(-t / p["tau"]) + rng.gauss(0, 0.01)
        rows.append(
            {
                "trial_id": trial_id,
                "result": {
                    "training_iteration": t,
                    "time_total_s": float(t * 10),
                    "loss": round(loss, 6),
                    "acc": round(1 - loss, 6),
                },
            }
        )
document = {
    "description": __doc__.splitlines()[0],
    "configs": {trial_id: {"lr": p["lr"]} for trial_id, p in trials.items()},
    "rows": rows,
}
path = pathlib.Path(__file__).with_name("curves.json")
path.write_text(json.dumps(document, indent=0) + "\n")
