"""Testing helpers that ship with prefect-tune, for its own tests and for storage backends.

- :mod:`prefect_tune.testing.storage_suite`: the storage contract as a test class that a
  backend runs by subclassing it and supplying fixtures (it imports pytest, so it is not
  imported here).

Why inside the library: a storage backend's authors get the suite with
``pip install prefect-tune``, as fsspec ships ``fsspec.tests.abstract`` and Prefect
``prefect.testing``; and Dask workers import what the suite submits to them by name wherever
the library is installed.
"""
