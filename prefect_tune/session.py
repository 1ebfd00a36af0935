"""What a trainable calls while it runs: :func:`report`, :func:`get_checkpoint`, :func:`get_context`.

Each call reaches the session of the trial running in this thread (`prefect_tune.engine`); called
anywhere else, they raise :class:`~prefect_tune.exceptions.SessionError`.

Examples:
    A trainable that resumes from its latest checkpoint and checkpoints every epoch::

        import tempfile
        import prefect_tune as tune

        def train_fn(config):
            start = 0
            checkpoint = tune.get_checkpoint()  # None on a fresh trial
            if checkpoint is not None:
                with checkpoint.as_directory() as d:
                    start = load_state(d)
            for epoch in range(start, 10):
                loss = train_one_epoch(config)
                with tempfile.TemporaryDirectory() as d:
                    save_state(d, epoch + 1)
                    tune.report({"loss": loss}, checkpoint=tune.Checkpoint.from_directory(d))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_tune.checkpoint import Checkpoint
from prefect_tune.engine import TrialContext, TrialSession, current_session
from prefect_tune.exceptions import SessionError

__all__ = ["TrialContext", "get_checkpoint", "get_context", "report"]


def _session(caller: str) -> TrialSession:
    session = current_session()
    if session is None:
        raise SessionError(
            f"prefect_tune.{caller}() was called outside a trial: call it from the trainable "
            "that Tuner runs."
        )
    return session


def report(metrics: Mapping[str, Any], *, checkpoint: Checkpoint | None = None) -> None:
    """Reports a result of the running trial, optionally with a checkpoint.

    When this returns, the checkpoint is committed to storage: a later resume of the trial starts
    from it. ``training_iteration`` counts reports (it continues from the checkpoint on resume).
    If a stop condition is met, ``report()`` does not return: the trial ends there.

    A checkpoint directory must exist and hold at least one file. A link in it to one of its own
    files is uploaded as a regular file with that content; any other link (out of the directory,
    dangling, or to a directory) is refused. A refused checkpoint commits nothing, and nothing
    of that report is recorded.

    Args:
        metrics: Metric name -> JSON-friendly value (numbers, strings, bools, lists, dicts).
        checkpoint: A :class:`Checkpoint`, usually ``Checkpoint.from_directory(tmpdir)``; the
            directory may be deleted once ``report()`` returns.

    Raises:
        ReportError: ``metrics`` is not a dict of JSON-friendly values.
        MetricNotReportedError: the experiment's metric (or checkpoint score attribute) is missing.
        CheckpointError: ``checkpoint`` does not exist, holds no file, or holds a link or a
            special file it may not.
        SessionError: called outside a trial.

    Examples:
        >>> def train_fn(config):  # doctest: +SKIP
        ...     for epoch in range(10):
        ...         report({"loss": 1.0 / (epoch + 1)})
    """
    _session("report").report(metrics, checkpoint=checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint to resume from: the trial's latest committed one, or None on a fresh trial.

    Raises:
        SessionError: called outside a trial.
    """
    return _session("get_checkpoint").resume_checkpoint


def get_context() -> TrialContext:
    """Facts about the running trial: ids, names, its directory in storage.

    Raises:
        SessionError: called outside a trial.
    """
    return _session("get_context").context
