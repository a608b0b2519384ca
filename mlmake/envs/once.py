"""Building an environment once: a per-env thread gate with a failure memo, and a file lock
that serialises builds across mlmake processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from mlmake.envs import Log
from mlmake.errors import EnvError

T = TypeVar("T")
LOCKS = ".locks"


def lock_path(envs_dir: str, key: str) -> str:
    """The lock file of one env build, `.mlmake/envs/.locks/KEY.lock`."""
    os.makedirs(os.path.join(envs_dir, LOCKS), exist_ok=True)
    safe = key.replace("/", "_").replace(":", "-")
    return os.path.join(envs_dir, LOCKS, safe + ".lock")


@contextmanager
def file_lock(path: str, log: Log | None = None, name: str = "",
              wait: bool = True) -> Iterator[bool]:
    """Hold the lock of one env build; yields False at once when `wait` is off and another
    run holds it."""
    from mlmake.filelock import file_lock as lock

    def waiting(_pid: str) -> None:
        if log is not None:
            log(f"mlmake: waiting for environment '{name}' (another mlmake run is "
                "building it)…")

    with lock(path, wait, on_wait=waiting) as got:
        yield got


class _Gate:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failure: tuple[float, str, list[str]] | None = None


_gates: dict[str, _Gate] = {}
_gates_lock = threading.Lock()


def build_once(key: str, name: str, lock: str, log: Log, record: Log,
               existing: Callable[[], T | None], build: Callable[[Log], T]) -> T:
    """`existing()` when it finds the env, else `build(log)`, run by one thread and one
    process at a time.

    Threads that waited while the build failed get the same failure (its output replayed to
    `record`) instead of trying again; a later call tries again.
    """
    asked = time.monotonic()
    with _gates_lock:
        gate = _gates.setdefault(key, _Gate())
    if gate.lock.locked():
        log(f"mlmake: waiting for environment '{name}' (being built for another target)…")
    with gate.lock:
        if gate.failure is not None and gate.failure[0] >= asked:
            _, message, lines = gate.failure
            log(f"mlmake: environment '{name}' failed to build for another target; its "
                "output follows in this log")
            for line in lines:
                record(line)
            raise EnvError(message)
        with file_lock(lock, log, name):
            found = existing()
            if found is not None:
                return found
            captured: list[str] = []

            def tee(line: str) -> None:
                captured.append(line)
                log(line)

            try:
                return build(tee)
            except EnvError as exc:
                gate.failure = (time.monotonic(), str(exc), captured)
                raise
