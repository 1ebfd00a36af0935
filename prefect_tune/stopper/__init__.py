"""Stoppers with Ray Tune's names: per trial, for the whole experiment, and combined.

Decision cores: each answers from the results it is told of, and keeps its state as a versioned
JSON document (``to_state`` / ``from_state``), so that a restore resumes it exactly.

Wiring status: these are the decision cores only; ``RunConfig(stop=Stopper)`` lands next and,
until then, refuses a :class:`Stopper` with a ``ConfigError`` (a dict or a function works).

    >>> from prefect_tune.stopper import MaximumIterationStopper  # was: from ray.tune.stopper
    >>> MaximumIterationStopper(max_iter=1)("t1", {"training_iteration": 1})
    True
"""

from prefect_tune.stopper._base import CombinedStopper, FunctionStopper, Stopper
from prefect_tune.stopper._iteration import MaximumIterationStopper
from prefect_tune.stopper._plateau import ExperimentPlateauStopper, TrialPlateauStopper
from prefect_tune.stopper._timeout import TimeoutStopper

__all__ = [
    "CombinedStopper",
    "ExperimentPlateauStopper",
    "FunctionStopper",
    "MaximumIterationStopper",
    "Stopper",
    "TimeoutStopper",
    "TrialPlateauStopper",
]
