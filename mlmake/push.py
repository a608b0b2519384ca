"""`mlmake push`: upload the objects that lock entries reference, then their run-cache entries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mlmake.lockfile import LockEntry
from mlmake.remote import Progress, Remote
from mlmake.runcache import RunCache, outs_of
from mlmake.store import Store


@dataclass
class PushResult:
    """What `push` moved: objects uploaded and already there, run-cache entries uploaded,
    outs that could not be pushed because the local cache lacks them."""

    remote: str
    pushed: int = 0
    nbytes: int = 0
    present: int = 0
    runcache: int = 0
    missing: list[str] = field(default_factory=list)
    duration: float = 0.0
    replaced: list[str] = field(default_factory=list)  # corrupt remote copies re-uploaded


def push(remote: Remote, store: Store, runcache: RunCache,
         entries: list[tuple[str, LockEntry]], progress: Progress | None = None
         ) -> PushResult:
    """Upload the objects of `entries` and the run-cache entries of their keys; objects
    first, so a run-cache entry on the remote always finds its objects there."""
    t0 = time.monotonic()
    res = PushResult(remote.name)
    remote.check()
    oids: set[str] = set()
    complete: set[str] = set()
    for _, e in entries:
        need, whole = store.held(e.outs, res.missing)
        oids.update(need)
        if whole:
            complete.add(e.key)
    raws: dict[str, bytes] = {}
    for target, e in entries:
        if e.key not in complete:
            continue
        raw = runcache.raw(e.key)
        if raw is None:
            runcache.put(e.key, target, e.outs)  # a lock entry is a run-cache entry too
            raw = runcache.raw(e.key)
        outs = outs_of(raw)
        if raw is None or outs is None:
            continue
        extra, whole = store.held(outs, [])
        if whole:
            oids.update(extra)
            raws[e.key] = raw
    moved = remote.push_objects(store, oids, progress)
    res.pushed, res.nbytes, res.present = moved.objects, moved.nbytes, moved.present
    res.replaced = moved.replaced
    res.runcache = remote.runcache_put(raws)
    res.duration = time.monotonic() - t0
    return res
