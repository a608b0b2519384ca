"""Atomic file writes: a unique temporary name in the same directory, fsync, rename."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` so that a crash leaves the old content or the new one."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".", suffix=".mlmake-tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
