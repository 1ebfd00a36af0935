"""The floors: the same work without prefect-tune (imported on Dask workers).

- ``trivial``: the body of the W1 trainable, run with plain ``client.map`` (scheduling floor);
- ``trivial_task``: the same body as a plain Prefect task on the same DaskTaskRunner, submitted
  the way prefect-tune submits trials, so that Prefect's share of a trial's cost can be told
  apart from prefect-tune's (also with a tag, as prefect-tune tags trial task runs);
- ``put_checkpoints``: W3/W6's checkpoint bytes written with a raw fsspec ``put`` (and the same
  ``num_to_keep`` deletions), on the same workers with the same concurrency (persistence floor).
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import time
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from bench._payload import write_checkpoint_dir


def trivial(x: float) -> float:
    """The work of a W1 trial."""
    return x * 2.0


@task(name="trivial", cache_policy=NO_CACHE, persist_result=False)
def trivial_task(x: float) -> float:
    return trivial(x)


def run_prefect_tasks(
    task_runner: Any, n: int, in_flight: int, tags: list[str] | None = None
) -> list[float]:
    """``n`` plain Prefect tasks in one flow run on ``task_runner``, submitted as prefect-tune's
    controller submits trials: at most ``in_flight`` at once, the next as soon as one ends."""

    @flow(name="bench-floor-prefect-tasks", task_runner=task_runner, persist_result=False)
    def floor_flow() -> list[float]:
        runnable = trivial_task.with_options(tags=tags) if tags else trivial_task
        done: queue.Queue[Any] = queue.Queue()
        running: list[Any] = []
        out: list[float] = []
        for i in range(n + in_flight):
            if len(running) >= in_flight or (i >= n and running):
                finished = done.get()
                running.remove(finished)
                out.append(finished.result())
            if i < n:
                future = runnable.submit(float(i))
                future.add_done_callback(done.put)
                running.append(future)
        return out

    return floor_flow()


def _filesystem(url: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    protocol, _ = fsspec.core.split_protocol(url)
    if protocol in (None, "file"):
        return LocalFileSystem(auto_mkdir=True), url.split("://", 1)[-1]
    return fsspec.core.url_to_fs(url, **options)


def put_checkpoints(
    root_url: str, options: dict[str, Any], index: int, checkpoints: int, size: int, keep: int
) -> dict[str, float]:
    """What a W3 trial does with raw fsspec: write ``checkpoints`` files of ``size`` bytes to a
    local temporary directory (not timed) and ``put`` each to storage, deleting all but the last
    ``keep`` (timed).

    Returns:
        ``{"bytes": ..., "put_s": seconds spent in put + delete}``.
    """
    fs, root = _filesystem(root_url, options)
    base = f"{root.rstrip('/')}/trial_{index:05d}"
    spent = 0.0
    for step in range(checkpoints):
        local = tempfile.mkdtemp(prefix="bench-floor-ckpt-")
        try:
            path = write_checkpoint_dir(local, size)
            start = time.perf_counter()
            fs.put(path, f"{base}/checkpoint_{step:06d}/model.bin")
            if step >= keep:
                fs.rm(f"{base}/checkpoint_{step - keep:06d}", recursive=True)
            spent += time.perf_counter() - start
        finally:
            shutil.rmtree(local, ignore_errors=True)
    return {"bytes": float(checkpoints * size), "put_s": spent}


def remove_tree(url: str, options: dict[str, Any]) -> None:
    fs, root = _filesystem(url, options)
    if fs.exists(root):
        fs.rm(root, recursive=True)
