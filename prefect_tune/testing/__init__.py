"""Test servers and helpers for prefect-tune's tests and benchmarks, and for storage backends.

Started on 127.0.0.1, each a context manager that stops what it started:

- :func:`moto_server`: S3 (moto), in a thread of this process or, with ``own_process=True``,
  as a process of its own; :func:`gcs_emulator`: GCS (gcp-storage-emulator). Both yield an
  :class:`ObjectStoreServer` (endpoint, fsspec options, :meth:`~ObjectStoreServer.new_bucket`);
- :func:`prefect_api`: a temporary Prefect API with its own database (``prefect_test_harness``);
  :func:`flow_runs_named` reads an experiment's flow runs from it;
- :func:`postgres_server`: a throw-away PostgreSQL cluster (Debian's ``postgresql``), and
  :func:`prefect_server`: ``prefect server start`` as a process, on SQLite or that PostgreSQL;
- :func:`local_cluster`: a Dask ``LocalCluster`` of worker processes reporting to that API.

Two public modules go with them: :mod:`prefect_tune.testing.storage_suite`, the storage
contract as a test class that a backend runs by subclassing it (it imports pytest, so it is not
imported here), and :mod:`prefect_tune.testing.side_log`, a checkpointing trainable whose side
log tells which iterations ran where, for tests and benchmarks of crashes and restores.

Why inside the library: the repository's ``tests/`` and ``bench/`` both need these and neither
should import the other; Dask workers and driver subprocesses import the trainables by name
wherever the library is installed; and a storage backend's authors get the suite with
``pip install prefect-tune``, as fsspec ships ``fsspec.tests.abstract`` and Prefect
``prefect.testing``. The packages the servers need (moto, boto3, gcp-storage-emulator, gcsfs,
distributed: the ``test`` extra) are imported inside the functions that start them, so the
library never needs them installed.

What is not here: settling the process environment (``PREFECT_HOME``, dummy AWS credentials,
``PYTHONPATH``) has to happen before Prefect is imported, and importing this package imports
Prefect through ``prefect_tune``; in the repository, ``tests/_env.py`` does it.

Examples:
    >>> from prefect_tune.testing import moto_server
    >>> with moto_server() as s3:  # doctest: +SKIP
    ...     bucket = s3.new_bucket()
    ...     storage_options = s3.options
"""

from prefect_tune.testing._proxy import faulty_api_proxy
from prefect_tune.testing._servers import (
    ObjectStoreServer,
    flow_runs_named,
    gcs_emulator,
    local_cluster,
    local_cluster_kwargs,
    moto_server,
    postgres_server,
    prefect_api,
    prefect_server,
    s3_client,
)

__all__ = [
    "ObjectStoreServer",
    "faulty_api_proxy",
    "flow_runs_named",
    "gcs_emulator",
    "local_cluster",
    "local_cluster_kwargs",
    "moto_server",
    "postgres_server",
    "prefect_api",
    "prefect_server",
    "s3_client",
]
