"""The class trainable: Ray Tune's ``Trainable``, run by ``Tuner`` as a function trainable.

A subclass defines ``setup(config)`` and ``step()`` (one iteration, returning its result dict),
and ``save_checkpoint(checkpoint_dir)`` / ``load_checkpoint(checkpoint)`` to be checkpointed;
``CheckpointConfig(checkpoint_frequency=N, checkpoint_at_end=True)`` says when. Each ``step()``
result is reported as by ``report()``; a result with ``done=True`` ends the trial.

    >>> class Quadratic(Trainable):
    ...     def setup(self, config):
    ...         self.x = config["x"]
    ...     def step(self):
    ...         return {"loss": (self.x - 3) ** 2}
    >>> Quadratic({"x": 1.0}).step()
    {'loss': 4.0}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.exceptions import CheckpointError, ConfigError, ReportError
from prefect_tune.session import get_checkpoint, report

__all__ = ["Trainable", "class_trainable_runner"]

#: The file in a class trainable's checkpoint holding what ``save_checkpoint`` returned (a
#: JSON-able dict) and the iteration it was taken at.
STATE_FILE = ".prefect_tune_trainable.json"


class Trainable:
    """Base of class trainables, with Ray Tune's methods.

    Args:
        config: The trial's config; ``setup(config)`` is called with a copy.

    Attributes:
        config: The trial's config.

    Examples:
        >>> class Counter(Trainable):
        ...     def setup(self, config):
        ...         self.n = 0
        ...     def step(self):
        ...         self.n += 1
        ...         return {"n": self.n, "done": self.n >= 3}
        ...     def save_checkpoint(self, checkpoint_dir):
        ...         return {"n": self.n}
        ...     def load_checkpoint(self, checkpoint):
        ...         self.n = checkpoint["n"]
        >>> Counter({}).step()
        {'n': 1, 'done': False}
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self._iteration = 0
        self.setup(dict(self.config))

    @property
    def iteration(self) -> int:
        """Iterations done so far (``step()`` calls, counting those before a restore)."""
        return self._iteration

    @property
    def training_iteration(self) -> int:
        return self._iteration

    def setup(self, config: dict[str, Any]) -> None:
        """Called once, with the trial's config, before any other method."""

    def step(self) -> dict[str, Any]:
        """One iteration of training; returns its result (``done=True`` ends the trial)."""
        raise NotImplementedError(f"{type(self).__name__} must define step().")

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | None:
        """Writes the trainable's state into ``checkpoint_dir``; may return a JSON-able dict,
        which ``load_checkpoint`` is then given instead of the directory."""
        return None

    def load_checkpoint(self, checkpoint: dict[str, Any] | str) -> None:
        """Takes back the state ``save_checkpoint`` wrote: its dict, or the directory."""

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Takes a new config without being built again; True if it did (never asked by this
        version, which builds a new trainable per task run)."""
        return False

    def cleanup(self) -> None:
        """Called once when the trial's task run ends, however it ends."""


def _save(trainable: Trainable, directory: str) -> None:
    state = trainable.save_checkpoint(directory)
    if state is not None and not isinstance(state, dict):
        raise ReportError(
            f"{type(trainable).__name__}.save_checkpoint() must return None or a dict, got "
            f"{type(state).__name__}."
        )
    try:
        text = json.dumps({"iteration": trainable.iteration, "state": state})
    except (TypeError, ValueError) as exc:
        raise ReportError(
            f"{type(trainable).__name__}.save_checkpoint() returned a dict that is not JSON "
            f"({exc}); write other state into checkpoint_dir instead (no pickles are stored)."
        ) from exc
    with open(os.path.join(directory, STATE_FILE), "w") as handle:
        handle.write(text)


def _load(trainable: Trainable, checkpoint: Checkpoint) -> None:
    with checkpoint.as_directory() as directory:
        path = os.path.join(directory, STATE_FILE)
        saved: Any = {}
        if os.path.exists(path):
            try:
                with open(path) as handle:
                    saved = json.load(handle)
            except (OSError, ValueError) as exc:
                raise CheckpointError(
                    f"The checkpoint {checkpoint.path} has a damaged {STATE_FILE}: {exc}."
                ) from exc
        if not isinstance(saved, dict):
            saved = {}
        iteration = saved.get("iteration")
        if isinstance(iteration, int) and not isinstance(iteration, bool) and iteration >= 0:
            trainable._iteration = iteration
        state = saved.get("state")
        trainable.load_checkpoint(state if isinstance(state, dict) else directory)


class class_trainable_runner:  # noqa: N801 - stands for a function trainable
    """A :class:`Trainable` subclass as a function trainable: what ``Tuner`` runs.

    Args:
        cls: The subclass.
        checkpoint_frequency: Checkpoint after every this many iterations (0: never).
        checkpoint_at_end: Checkpoint after the result with ``done=True``.
    """

    def __init__(self, cls: type[Trainable], checkpoint_frequency: int, checkpoint_at_end: bool):
        if not (isinstance(cls, type) and issubclass(cls, Trainable)):
            raise ConfigError(
                f"Tuner: a class trainable must subclass prefect_tune.Trainable, got {cls!r}."
            )
        self.cls = cls
        self.checkpoint_frequency = checkpoint_frequency
        self.checkpoint_at_end = checkpoint_at_end
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    def __call__(self, config: dict[str, Any]) -> None:
        trainable = self.cls(config)
        try:
            checkpoint = get_checkpoint()
            if checkpoint is not None:
                _load(trainable, checkpoint)
            while True:
                result = trainable.step()
                if not isinstance(result, Mapping):
                    raise ReportError(
                        f"{self.cls.__name__}.step() must return a dict of metrics, got "
                        f"{type(result).__name__}."
                    )
                trainable._iteration += 1
                metrics = {k: v for k, v in result.items() if k != "done"}
                done = bool(result.get("done", False))
                every = self.checkpoint_frequency
                if (every and trainable.iteration % every == 0) or (
                    done and self.checkpoint_at_end
                ):
                    with tempfile.TemporaryDirectory(prefix="prefect-tune-trainable-") as d:
                        _save(trainable, d)
                        report(metrics, checkpoint=Checkpoint.from_directory(d))
                else:
                    report(metrics)
                if done:
                    return
        finally:
            trainable.cleanup()
