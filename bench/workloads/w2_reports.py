"""W2: a few trials reporting many results each, no checkpoints: reports/s.

Two rates: over the experiment's ``fit()`` wall time (what a user waits for), and inside the
trainable's loop (the cost of ``report()`` itself, without trial start-up).
"""

from __future__ import annotations

import time
from typing import Any

import prefect_tune as tune
from bench._common import Recorder
from prefect_tune.schedulers import ASHAScheduler

NAME = "W2"
TITLE = "many reports, no checkpoints"


def trainable(config: dict[str, Any]) -> None:
    reports = int(config["reports"])
    start = time.perf_counter()
    for step in range(reports):
        # loop_s: time spent in the loop before this report (all earlier reports).
        tune.report({"score": config["x"] * step, "loop_s": time.perf_counter() - start})


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    trials, reports = int(size["trials"]), int(size["reports"])
    ctx.warm_up()
    for rep in range(ctx.repeat):
        # The default (trial task runs tagged with the experiment), then without the tag.
        # ASHA on: every row travels to the driver's decision desk and is judged; its rungs
        # lie beyond the run (grace_period), so every trial reports as often as without it.
        asha = ASHAScheduler(max_t=10 * reports, grace_period=2 * reports)
        for tags, system, scheduler in (
            (None, "prefect-tune", None),
            ((), "prefect-tune, trial_tags=()", None),
            (None, "prefect-tune, ASHA on", asha),
        ):
            tuner = tune.Tuner(
                trainable,
                param_space={"x": tune.uniform(0.0, 1.0), "reports": reports},
                tune_config=tune.TuneConfig(
                    metric="score", mode="max", num_samples=trials, seed=0, scheduler=scheduler
                ),
                run_config=tune.RunConfig(
                    name=f"w2-{rep}", storage_path=ctx.new_dir("w2"), trial_tags=tags
                ),
                task_runner=ctx.task_runner(),
            )
            timing = ctx.fit(
                tuner,
                f"W2-rep{rep}{'' if tags is None else '-untagged'}{'-asha' if scheduler else ''}",
            )
            results = timing.results
            total = trials * reports
            for result in results:
                assert result.metrics["training_iteration"] == reports, result.metrics
            rec.add(NAME, "wall time", timing.wall_s, unit="s", better="lower", system=system)
            rec.add(
                NAME,
                "reports/s (fit wall)",
                total / timing.wall_s,
                unit="reports/s",
                better="higher",
                system=system,
            )
            # Each trial's loop: (reports - 1) reports took loop_s; sum the per-trial work.
            loop = sum(r.metrics["loop_s"] for r in results)
            rec.add(
                NAME,
                "reports/s (in trainable, per trial)",
                trials * (reports - 1) / loop,
                unit="reports/s",
                better="higher",
                system=system,
            )
            print(
                f"  W2 rep {rep + 1}, {system}: {total} reports in {timing.wall_s:.2f} s",
                flush=True,
            )
    rec.note(
        NAME,
        "'in trainable, per trial': reports / time inside one trial's loop (trials run "
        f"{ctx.concurrency} at a time, so the experiment's rate can be up to that many times it).",
    )
