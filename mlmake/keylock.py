"""Per-key build claims: one builder at a time executes a given target key, across threads and
processes that share a state directory (flock on `.mlmake/keys/KEY.lock`)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable

_POLL = 0.05


class KeyClaim:
    """The right to execute target key `key`; whoever waited for it re-checks the run cache.

    The lock file is removed by its holder before release, so the directory does not grow;
    a waiter that locked a file already unlinked (its inode no longer at the path) retries.
    """

    def __init__(self, directory: str, key: str) -> None:
        self.path = os.path.join(directory, key + ".lock")
        self._fd: int | None = None

    def acquire(self, on_wait: Callable[[], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> bool:
        """Take the claim, waiting while another builder holds it; True if it had to wait.
        Gives up (returning without the claim) when `cancelled()` turns true."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        waited = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        waited = True
                        if on_wait:
                            on_wait()
                    if cancelled and cancelled():
                        os.close(fd)
                        return waited
                    time.sleep(_POLL)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return waited
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
