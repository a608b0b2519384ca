"""Target processes that outlive their mlmake: tying them to it, and stopping what a killed
run left behind.

Each child is started with `PR_SET_PDEATHSIG` (Linux), so the command's shell dies with the
thread that forked it: the scheduler's worker thread, which waits for the child and so lives
as long as it does. What the shell itself started (its own children, in its process group) is
not covered by that signal; it carries `MLMAKE_RUN_TOKEN` in its environment instead, and the
running mlmake records its token under `.mlmake/procs/`. A later run finding a token whose
process is gone stops every process still carrying it before it builds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable

ENV = "MLMAKE_RUN_TOKEN"
_PR_SET_PDEATHSIG = 1
_WAIT_S = 5.0

try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the token sweep alone stops strays
    _prctl = None


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 and fields[0] != b"Z" else None


TOKEN = f"{os.getpid()}-{_start_time(os.getpid()) or int(time.time())}"


def token() -> str:
    """This process's token (recomputed after a fork)."""
    global TOKEN
    if not TOKEN.startswith(f"{os.getpid()}-"):
        TOKEN = f"{os.getpid()}-{_start_time(os.getpid()) or int(time.time())}"
    return TOKEN


def child_setup() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die (SIGKILL) when the thread that forked it
    exits, and exits at once if mlmake died before the signal was armed."""
    if _prctl is None:
        return None
    prctl = _prctl
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)

    return setup


_users: dict[str, int] = {}
_mutex = threading.Lock()


def register(procs_dir: str) -> str:
    """Record this process's token under `procs_dir` (before its first child starts);
    returns the record's path. Counted: executors of one process (`mlmake serve`) share
    the record, which goes with the last `release`."""
    path = os.path.join(procs_dir, token())
    with _mutex:
        if _users.get(path, 0) == 0 or not os.path.exists(path):
            os.makedirs(procs_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(f"{os.getpid()}\n")
        _users[path] = _users.get(path, 0) + 1
    return path


def release(path: str) -> None:
    """One executor of this process is done with the record at `path`."""
    with _mutex:
        n = _users.get(path, 0) - 1
        if n > 0:
            _users[path] = n
            return
        _users.pop(path, None)
        unregister(path)


def unregister(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def stop_strays(procs_dir: str, on_found: Callable[[list[int]], None] | None = None
                ) -> list[int]:
    """Kill every process still carrying the token of an mlmake that is gone (and wait for
    them to be gone), then drop those records; returns the pids stopped."""
    try:
        names = os.listdir(procs_dir)
    except OSError:
        return []
    dead = []
    for name in names:
        pid, _, start = name.partition("-")
        if not pid.isdigit():
            continue
        alive = _start_time(int(pid))
        if alive is not None and (alive == start or not start):
            continue  # that mlmake still runs (a build in a worktree sharing this state)
        dead.append(name)
    if not dead:
        return []
    victims = _carrying({f"{ENV}={t}".encode() for t in dead})
    if victims and on_found is not None:
        on_found(victims)
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + _WAIT_S
    while victims and time.monotonic() < deadline:
        if all(_start_time(p) is None for p in victims):
            break
        time.sleep(0.02)
    for name in dead:
        unregister(os.path.join(procs_dir, name))
    return victims


def _carrying(needles: set[bytes]) -> list[int]:
    """Live processes whose environment holds one of `needles` (`NAME=value`)."""
    found = []
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for e in entries:
        if not e.isdigit() or int(e) == me:
            continue
        try:
            with open(f"/proc/{e}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if needles.intersection(env) and _start_time(int(e)) is not None:
            found.append(int(e))
    return found
