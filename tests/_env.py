"""The process environment of the tests and the benchmarks, settled before Prefect is imported.

:func:`settle_environment` is the first thing ``tests/conftest.py`` and ``bench/run.py`` do.
Every process they start (Dask workers, driver subprocesses, the Prefect server) inherits the
environment, so it finds the repository (trainables are imported by name there), the temporary
Prefect home and the dummy AWS settings.

Why this module is not in :mod:`prefect_tune.testing` with the servers: Prefect reads its
settings (``PREFECT_HOME``, the profile, the logging level) and gcsfs its feature switch when
they are imported, and importing any module under ``prefect_tune`` runs
``prefect_tune/__init__.py``, which imports Prefect. So the settling has to come from a package
that imports nothing: this one, standard library only.
"""

from __future__ import annotations

import os
import sys
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Read at import time: settling after any of these is imported would come too late for it.
_READ_AT_IMPORT = ("prefect", "distributed", "boto3", "gcsfs")


def settle_environment(
    prefect_home: str, *, prefect_logging_level: str = "WARNING", quiet_dask: bool = False
) -> None:
    """Points Prefect at a fresh home, keeps boto away from real credentials, and makes the
    repository importable here and in every child process.

    Args:
        prefect_home: ``PREFECT_HOME`` (created if missing): its profile and database are the
            run's own, never the user's ``~/.prefect``.
        prefect_logging_level: ``PREFECT_LOGGING_LEVEL`` of this process and its children.
        quiet_dask: Also silence Dask's INFO logs (clients connecting and leaving at every flow
            run), unless ``DASK_LOGGING__DISTRIBUTED`` is set.

    Raises:
        RuntimeError: When Prefect, Dask, boto3 or gcsfs is imported already.
    """
    already = [name for name in _READ_AT_IMPORT if name in sys.modules]
    if already:
        raise RuntimeError(
            f"settle_environment() must run before importing {', '.join(already)}: their "
            "settings are read at import time."
        )
    os.makedirs(prefect_home, exist_ok=True)
    os.environ["PREFECT_HOME"] = prefect_home
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = prefect_logging_level
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    if quiet_dask:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # Without this gcsfs probes for hierarchical namespaces, and every call waits 60 s for a
    # timeout.
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    # Dummy AWS settings so that boto never looks for real credentials, config files or an
    # instance-metadata endpoint. No session token: the moto IAM checks would reject it.
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    # The repository on sys.path, and on PYTHONPATH for the child processes.
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO_ROOT not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *parts])


FLOWS_DIR = os.path.join(REPO_ROOT, "flows")


def import_flow(module: str) -> Any:
    """The example flow module ``flows/<module>.py``, imported as the flows import each other
    (``from tune_digits import ...``): ``flows/`` on ``sys.path`` here and on ``PYTHONPATH``
    for the processes started from now on (Dask workers import the trainables by name)."""
    import importlib

    if FLOWS_DIR not in sys.path:
        sys.path.insert(0, FLOWS_DIR)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if FLOWS_DIR not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([*parts, FLOWS_DIR])
    return importlib.import_module(module)
