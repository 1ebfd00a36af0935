"""Every path of the stored experiment, built in one place and without I/O.

::

    <storage_path>/<experiment name>/
        experiment.json                 the definition: trainable, search space, configs
        experiment_state.json           the driver's snapshot: every trial's status and summary
        lease.json                      which driver holds the experiment, until when
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
"""

from __future__ import annotations

import re

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
#: One record per driver (flow run) of the experiment, written before it takes the lease.
DRIVERS_DIR = "drivers"

_SEGMENT = re.compile(r"^(\d{4})-(\d{6})\.jsonl$")
_CHECKPOINT = re.compile(r"^checkpoint_(\d{6})$")


def probe_file(token: str) -> str:
    return f"{PROBE_DIR}/{token}"


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
