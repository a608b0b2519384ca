"""Exclusive advisory locks on files (flock), shared by the project lock, hooks and envs."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator

_POLL = 0.05


@contextmanager
def file_lock(path: str, wait: bool = True, timeout: float | None = None,
              on_wait: Callable[[str], None] | None = None,
              record_pid: bool = False) -> Iterator[bool]:
    """Hold an exclusive flock on `path` while the block runs; yields whether it is held.

    Without `wait` it yields False at once when another holder has it; with `timeout` it
    waits at most that many seconds. `on_wait(holder)` is called once before waiting, with
    the pid the holder recorded (`record_pid`) or "?". Threads conflict too: each call opens
    its own file description.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        got = _try(fd)
        if not got and wait:
            if on_wait is not None:
                on_wait(_holder(fd))
            if timeout is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
                got = True
            else:
                deadline = time.monotonic() + timeout
                while not got and time.monotonic() < deadline:
                    time.sleep(_POLL)
                    got = _try(fd)
        if got and record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield got
    finally:
        os.close(fd)


def holder(path: str) -> str:
    """The pid recorded by whoever holds (or last held) the lock at `path`, or "?"."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(64).strip() or "?"
    except FileNotFoundError:
        return "?"


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True


def _holder(fd: int) -> str:
    return os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
