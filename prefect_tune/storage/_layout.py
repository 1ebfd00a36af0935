"""Every path of the stored experiment, built in one place and without I/O.

::

    <storage_path>/<experiment name>/
        experiment.json                 the definition: trainable, search space, configs
        experiment_state.json           the driver's snapshot: every trial's status and summary
        lease.json                      which driver holds the experiment, until when
        predictions/<flow run id>.csv   what a batch-inference flow run scored with a checkpoint
                                        (flows/batch_inference.py): not experiment state
        trials/<trial dir>/
            trial.json                  the trial's own state, written by its worker; the
                                        write that lists a checkpoint (its files and sizes)
                                        commits it, with the results reported since the
                                        last segment (up to 16 rows; then it writes one)
            error.txt                   the traceback of its last failure, if any
            results/<attempt>-<seq>.jsonl   reported results, one JSON object a line
            checkpoint_000003/          a checkpoint's files
                .prefect_tune_manifest.json  only in checkpoints of a version 1 trial.json:
                                        written last, it listed the files and committed them

Every name here that comes from stored state (a trial's directory, a checkpoint's directory,
the files a checkpoint lists) is checked by `path_problem` before it is joined: stored state is
read from buckets and shares that others write.
"""

from __future__ import annotations

import re

from prefect_tune.exceptions import UnsafePathError

EXPERIMENT_FILE = "experiment.json"
EXPERIMENT_STATE_FILE = "experiment_state.json"
LEASE_FILE = "lease.json"
TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
ERROR_FILE = "error.txt"
RESULTS_DIR = "results"
CHECKPOINT_PREFIX = "checkpoint_"
MANIFEST_FILE = ".prefect_tune_manifest.json"
PROBE_DIR = ".probe"
#: Outputs of downstream flows (batch inference) beside the experiment; never read as state.
PREDICTIONS_DIR = "predictions"
#: One record per driver (flow run) of the experiment, written before it takes the lease.
DRIVERS_DIR = "drivers"

#: Characters fsspec (and any glob) reads as a pattern in a path.
GLOB_CHARACTERS = frozenset("*?[]")

_SEGMENT = re.compile(r"^(\d{4})-(\d{6})\.jsonl$")
_CHECKPOINT = re.compile(r"^checkpoint_(\d{6})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What nearly every name is (the names prefect-tune makes, most file names): accepted at once.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*")
_DRIVE = re.compile(r"^[A-Za-z]:")


def path_problem(rel: object, *, single: bool = False) -> str | None:
    """What would let ``rel``, joined below a directory, lead outside it; None when nothing.

    A safe path is relative, with ``/`` between its segments, each a plain name: not empty, not
    ``.`` nor ``..``, no backslash (a separator on Windows), no control character (NUL, a
    newline...) and no drive letter. The same rule serves every backend: on an object store
    ``..`` is a key's plain text, but the local disk, an NFS mount, and any user who copies the
    experiment there, resolve it.

    Args:
        rel: The path, as read from stored state.
        single: Whether ``rel`` must be one name (a directory name), without ``/``.

    Examples:
        >>> path_problem("sub/weights.bin") is None
        True
        >>> path_problem("../../victim")
        "has a '..' segment"
    """
    if not isinstance(rel, str):
        return f"is a {type(rel).__name__}, not a string"
    if (_PLAIN_NAME if single else _PLAIN_PATH).fullmatch(rel):
        return None
    if not rel:
        return "is empty"
    if _CONTROL.search(rel):
        return "holds a control character"
    if "\\" in rel:
        return "holds a backslash"
    if rel.startswith("/"):
        return "is absolute"
    if _DRIVE.match(rel):
        return "starts with a drive letter"
    for segment in rel.split("/"):
        if not segment:
            return "has an empty segment"
        if segment in (".", ".."):
            return f"has a {segment!r} segment"
    if single and "/" in rel:
        return "holds a '/' but must be a single name"
    return None


def checked_path(rel: str, where: str, *, single: bool = False) -> str:
    """``rel``, if `path_problem` finds nothing wrong with it.

    Args:
        rel: The path, as read from stored state.
        where: The file it was read from (or the directory it is below), for the message.
        single: Whether ``rel`` must be one name, without ``/``.

    Raises:
        UnsafePathError: ``rel`` could lead outside its directory.
    """
    problem = path_problem(rel, single=single)
    if problem is not None:
        raise UnsafePathError(
            f"{where}: the path {rel!r} {problem}, so it could lead outside its directory; it "
            "is refused (nothing was read from, written to or deleted there)."
        )
    return rel


def probe_file(token: str) -> str:
    return f"{PROBE_DIR}/{token}"


def predictions_file(flow_run_id: str) -> str:
    """Where a batch-inference flow run writes its predictions, below the experiment."""
    return f"{PREDICTIONS_DIR}/{checked_path(flow_run_id, PREDICTIONS_DIR, single=True)}.csv"


def driver_file(flow_run_id: str) -> str:
    return f"{DRIVERS_DIR}/{flow_run_id}.json"


def trial_dir(trial_dir_name: str) -> str:
    return f"{TRIALS_DIR}/{trial_dir_name}"


def trial_file(trial_dir_name: str) -> str:
    return f"{TRIALS_DIR}/{trial_dir_name}/{TRIAL_FILE}"


def results_dir(trial_dir_name: str) -> str:
    return f"{TRIALS_DIR}/{trial_dir_name}/{RESULTS_DIR}"


def result_segment(trial_dir_name: str, attempt: int, seq: int) -> str:
    return f"{results_dir(trial_dir_name)}/{attempt:04d}-{seq:06d}.jsonl"


def parse_result_segment(name: str) -> tuple[int, int] | None:
    """``(attempt, seq)`` of a result segment file name, or None for anything else."""
    match = _SEGMENT.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def checkpoint_name(index: int) -> str:
    return f"{CHECKPOINT_PREFIX}{index:06d}"


def parse_checkpoint_name(name: str) -> int | None:
    """The index of a checkpoint directory name, or None for anything else."""
    match = _CHECKPOINT.match(name)
    return int(match.group(1)) if match else None


def checkpoint_dir(trial_dir_name: str, index: int) -> str:
    return f"{TRIALS_DIR}/{trial_dir_name}/{checkpoint_name(index)}"


def manifest_file(checkpoint_rel: str) -> str:
    return f"{checkpoint_rel.rstrip('/')}/{MANIFEST_FILE}"
