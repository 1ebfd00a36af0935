"""Builders of stored experiments and trial runs for the store, session and fence tests.

Each takes an :class:`ExperimentStore` on any backend (the ``store`` fixture of ``conftest``).
"""

from __future__ import annotations

import json
from typing import Any

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.config import CheckpointConfig, FailureConfig
from prefect_tune.engine import (
    BasicVariantGenerator,
    CommitFence,
    ResumePolicy,
    ThreadTrialExecutor,
    TrialContext,
    TrialOutcome,
    TrialRequest,
    TrialSession,
    TuneController,
    describe_param_space,
    run_trial,
)
from prefect_tune.state import ExperimentDefinition, ExperimentStore, Lease, TrialState
from prefect_tune.storage import StorageSpec, layout


def a_definition(**fields: Any) -> ExperimentDefinition:
    """An experiment's definition ("exp", optimising "loss"); ``fields`` replace defaults."""
    values: dict[str, Any] = {
        "name": "exp",
        "experiment_id": "abcde",
        "trainable": "tests.trainables.quadratic",
        "param_space": {"x": {"type": "uniform", "lower": 0, "upper": 1}},
        "num_samples": 2,
        "seed": 7,
        "total_trials": 2,
        "metric": "loss",
        "mode": "min",
    }
    values.update(fields)
    return ExperimentDefinition(**values)


def a_trial(index: int = 0) -> TrialState:
    return TrialState(
        trial_id=f"abcde_{index:05d}", index=index, dir_name=f"t_{index}", config={"x": 5.0}
    )


def make_checkpoint_dir(tmp_path: Any, step: int) -> str:
    d = tmp_path / f"ckpt-src-{step}"
    (d / "sub").mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"step": step}))
    (d / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 39 + b"0123456789abcdef")
    return str(d)


def committed_checkpoint(
    spec: StorageSpec, rel: str, files: dict[str, int] | None = None
) -> Checkpoint:
    """The committed checkpoint at ``rel`` below the experiment ``spec``."""
    child = spec.child(rel)
    return Checkpoint.from_committed(child.url, child.options, files=files)


def run_in(
    store: ExperimentStore, trial: TrialState, trainable: Any, **request: Any
) -> TrialOutcome:
    """One task run of ``trial`` (optimising "loss"), as a Dask worker runs it."""
    return run_trial(
        TrialRequest(
            experiment=store.storage.spec,
            experiment_name="exp",
            trial=trial,
            trial_name="t",
            trainable=trainable,
            metric="loss",
            **request,
        )
    )


def hold_lease(store: ExperimentStore, owner: str) -> None:
    """Writes a lease held by driver ``owner``, as that driver's take-over would."""
    lease = Lease(owner=owner, host="another-host", pid=1)
    store.storage.write_bytes(layout.LEASE_FILE, lease.model_dump_json().encode())


def a_session(
    store: ExperimentStore, trial: TrialState, fence: CommitFence | None = None
) -> TrialSession:
    """A session of ``trial``'s first attempt, as `run_trial` makes it (unfenced by default)."""
    return TrialSession(
        store,
        trial,
        TrialContext(
            trial_id=trial.trial_id,
            trial_name="t",
            experiment_name="exp",
            trial_dir=store.storage.uri(layout.trial_dir(trial.dir_name)),
            trial_index=0,
            attempt=1,
        ),
        metric="loss",
        checkpoint_config=CheckpointConfig(),
        fence=fence,
    )


def make_controller(
    where: str | StorageSpec,
    trainable: Any,
    space: dict[str, Any],
    *,
    num_samples: int = 1,
    metric: str | None = "loss",
    checkpoint_config: CheckpointConfig | None = None,
    failure_config: FailureConfig | None = None,
    stop: Any = None,
    policy: ResumePolicy | None = None,
    scheduler: Any = None,
    search_alg: Any = None,
    threads: int = 2,
) -> tuple[ExperimentStore, TuneController]:
    """The controller of the experiment at ``where`` (a URL or a spec) over ``space``, its
    definition written when none is stored, running trials in threads of this process.
    ``search_alg`` is bound to ``space`` (seed 0) as the Tuner binds it."""
    spec = StorageSpec(where) if isinstance(where, str) else where
    store = ExperimentStore(spec.open())
    generator = BasicVariantGenerator(space, num_samples, seed=0)
    if search_alg is not None:
        mode = "min" if metric else None
        assert search_alg.set_search_properties(
            metric, mode, space, num_samples=num_samples, seed=0
        )
    if store.exists():
        definition = store.read_definition()
    else:
        definition = ExperimentDefinition(
            name="exp",
            experiment_id="abcde",
            trainable=trainable.__name__,
            param_space=describe_param_space(space),
            num_samples=num_samples,
            seed=0,
            total_trials=generator.total_trials,
            metric=metric,
            mode="min" if metric else None,
        )
        store.write_definition(definition)
    controller = TuneController(
        store=store,
        definition=definition,
        generator=generator,
        trainable=trainable,
        executor=ThreadTrialExecutor(threads),
        checkpoint_config=checkpoint_config or CheckpointConfig(),
        failure_config=failure_config or FailureConfig(),
        stop=stop,
        search_alg=search_alg,
        scheduler=scheduler,
        policy=policy,
        trainable_name=trainable.__name__,
    )
    return store, controller
