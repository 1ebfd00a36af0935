"""W6: W3 on S3 (a moto server on 127.0.0.1 started by the benchmark): MiB/s vs raw s3fs put.

The trainable is W3's; the floor is the same raw fsspec ``put`` + ``rm`` through s3fs with the
same storage options. The moto server runs in a process of its own (in memory).
"""

from __future__ import annotations

from typing import Any

from bench._common import Recorder
from bench.workloads.w3_checkpoints import run_checkpoints

NAME = "W6"
TITLE = "checkpoints on S3 (moto)"


def run(ctx: Any, size: dict[str, Any], rec: Recorder) -> None:
    server = ctx.s3()
    run_checkpoints(
        ctx,
        size,
        rec,
        workload=NAME,
        new_root=lambda label: f"s3://{server.new_bucket()}/{label}",
        options=server.options,
        floor_name="floor: s3fs put (moto)",
    )
    rec.note(
        NAME, "moto keeps objects in memory and runs in a process of its own, shared by both sides."
    )
