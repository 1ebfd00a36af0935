"""Storage writes that fail half-way through a checkpoint upload, inside a worker process.

Importing this module wraps the file-upload primitive of local storage (prefect-tune's own
``copy_file``: its local disk and NFS uploads do not go through fsspec) and of s3fs
(``S3FileSystem._put_file``) in the importing process. Nothing changes until a trainable calls :func:`arm`: then the upload of a file whose
destination contains the armed marker, once ``after_files`` such files have gone through, writes
the first half of its bytes to the destination and raises ``OSError(EIO)`` — what a full disk or
a connection dropped mid-transfer gives. Everything before and after that one write is the
product's own code path on the real backend (the local disk, or the moto S3 server).
"""

from __future__ import annotations

import errno
import threading
from typing import Any

from prefect_tune.storage import _filesystem

_lock = threading.Lock()
# destination marker -> files that may still be uploaded before one fails
_armed: dict[str, int] = {}


def arm(marker: str, after_files: int) -> None:
    """Makes the next upload into a destination containing ``marker`` fail half-way, after
    ``after_files`` files of that upload succeeded. Fires once."""
    with _lock:
        _armed[marker] = after_files


def _fires(destination: str) -> bool:
    with _lock:
        for marker, remaining in _armed.items():
            if marker in destination:
                if remaining > 0:
                    _armed[marker] = remaining - 1
                    return False
                del _armed[marker]
                return True
    return False


def _injected(destination: str) -> OSError:
    return OSError(errno.EIO, f"injected fault: storage write failed half-way ({destination})")


_copy_file = _filesystem.copy_file


def _faulty_copy_file(source: str, target: str) -> None:
    if _fires(target):
        with open(source, "rb") as src, open(target, "wb") as dst:
            data = src.read()
            dst.write(data[: len(data) // 2])
        raise _injected(target)
    _copy_file(source, target)


_filesystem.copy_file = _faulty_copy_file

try:
    import s3fs
except ImportError:  # pragma: no cover - s3fs is a test dependency
    s3fs = None

if s3fs is not None:
    _s3_put_file = s3fs.S3FileSystem._put_file

    async def _faulty_s3_put_file(self: Any, lpath: str, rpath: str, *args, **kwargs):
        if _fires(str(rpath)):
            with open(lpath, "rb") as source:
                data = source.read()
            await self._pipe_file(rpath, data[: len(data) // 2])
            raise _injected(str(rpath))
        return await _s3_put_file(self, lpath, rpath, *args, **kwargs)

    s3fs.S3FileSystem._put_file = _faulty_s3_put_file  # type: ignore[method-assign]

__all__ = ["arm"]
