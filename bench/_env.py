"""The process environment of a benchmark run: settled before Prefect, Dask or boto is imported.

Dask worker processes inherit it, so they find the repository (``bench.workloads.*`` trainables
are imported there by name), the temporary Prefect home and the dummy AWS settings.
"""

from __future__ import annotations

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configure(workdir: str, prefect_log_level: str = "WARNING") -> None:
    """Points Prefect at a fresh home under ``workdir`` and makes the repo importable everywhere."""
    already = [name for name in ("prefect", "distributed", "boto3") if name in sys.modules]
    if already:
        raise RuntimeError(
            f"bench._env.configure() must run before importing {', '.join(already)}: their "
            "settings are read at import time."
        )
    home = os.path.join(workdir, "prefect-home")
    os.makedirs(home, exist_ok=True)
    os.environ["PREFECT_HOME"] = home
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = prefect_log_level
    # Dask's own INFO logs (clients connecting and leaving at every flow run) only add noise.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    # Dummy AWS settings: boto must never look for real credentials or a metadata endpoint.
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
    add_repo_to_path()


def add_repo_to_path() -> None:
    """Puts the repository root on ``sys.path`` and on ``PYTHONPATH`` (for child processes)."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO_ROOT not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *parts])
