"""Benchmarks of prefect-tune against the raw floor and Ray Tune (workloads W1-W8 of DESIGN.md).

Run ``python -m bench.run --help``. Modules here import nothing heavy at import time, so that
``bench.ray_side`` can run in a virtualenv that has Ray but not Prefect.
"""
