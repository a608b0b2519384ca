"""What a run does first, holding the project lock: clean up after an earlier run that was
killed (its stray processes, its temporary files).

A marker `.mlmake/run.active` exists while a run holds the project lock; finding it on
taking the lock means its last holder died without cleaning up (the lock itself is a flock,
released by the kernel). Temporary files are only looked for then, so an ordinary run pays
one `stat` and one small write.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Iterator

from mlmake import atomic, orphans

MARKER = "run.active"


@dataclass(frozen=True)
class Recovered:
    """What was cleaned up: processes stopped and temporary files removed."""

    stopped: tuple[int, ...] = ()
    temps: int = 0
    interrupted: bool = False  # the last run of this project did not end cleanly


@contextmanager
def session(state_dir: str, shared_dir: str, root: str, outs: Iterable[str],
            notice: Callable[[str], None]) -> Iterator[Recovered]:
    """Run the block as the holder of the project lock: first stop strays and sweep temps
    left by a dead holder, then mark the run active until the block ends."""
    marker = os.path.join(state_dir, MARKER)
    interrupted = os.path.exists(marker)
    stopped: list[int] = []
    for d in {os.path.join(shared_dir, "procs"), os.path.join(state_dir, "procs")}:
        stopped += orphans.stop_strays(d, lambda pids: notice(
            f"stopping {len(pids)} process(es) left running by an earlier mlmake run that "
            f"was killed (pid {', '.join(map(str, pids[:5]))}"
            f"{', …' if len(pids) > 5 else ''}) before building"))
    temps = 0
    if interrupted:
        temps = sweep(state_dir, shared_dir, root, outs)
        if temps:
            notice(f"an earlier mlmake run was interrupted; removed {temps} temporary "
                   "file(s) it left")
    try:
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError:
        marker = ""
    try:
        yield Recovered(tuple(stopped), temps, interrupted)
    finally:
        if marker:
            try:
                os.unlink(marker)
            except OSError:
                pass


def sweep(state_dir: str, shared_dir: str, root: str, outs: Iterable[str]) -> int:
    """Remove the temporary files of dead writers: in the store, the run cache and the
    state directories, beside the lock, and beside and inside the outs."""
    n = 0
    for d in dict.fromkeys([shared_dir, state_dir]):
        for sub in ("cache", "runcache", "remote-index"):
            if os.path.isdir(os.path.join(d, sub)):
                n += atomic.sweep(os.path.join(d, sub))
        n += atomic.sweep(d, recursive=False)
    n += atomic.sweep(root, recursive=False, owned=False)
    parents: set[str] = set()
    for out in outs:
        full = os.path.join(root, out)
        parents.add(os.path.dirname(full))
        if os.path.isdir(full) and not os.path.islink(full):
            n += atomic.sweep(full, owned=False)
    for p in parents - {root}:
        n += atomic.sweep(p, recursive=False, owned=False)
    return n
