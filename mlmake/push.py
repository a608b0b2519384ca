"""`mlmake push`: upload the objects that lock entries reference, then their run-cache entries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlmake.lockfile import LockEntry
from mlmake.remote import Progress, Remote
from mlmake.runcache import RunCache, outs_of
from mlmake.store import Store

if TYPE_CHECKING:
    from mlmake.exp_store import RefSync


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
    experiments: RefSync | None = None  # the experiment refs, set by Project.push


def push(remote: Remote, store: Store, runcache: RunCache,
         entries: list[tuple[str, LockEntry]], progress: Progress | None = None,
         extra: Sequence[tuple[str, LockEntry]] = ()) -> PushResult:
    """Upload the objects of `entries` and the run-cache entries of their keys; objects
    first, so a run-cache entry on the remote always finds its objects there.

    `extra` entries (experiments') go the same way as far as the local cache holds their
    objects: a clone that fetched only an experiment's ref lacks them, and that is no
    miss to report."""
    t0 = time.monotonic()
    res = PushResult(remote.name)
    remote.check()
    oids: set[str] = set()
    complete: set[str] = set()
    for listed, noted in ((entries, res.missing), (extra, [])):
        for _, e in listed:
            need, whole = store.held(e.outs, noted)
            oids.update(need)
            if whole:
                complete.add(e.key)
    raws: dict[str, bytes] = {}
    for target, e in [*entries, *extra]:
        if e.key not in complete or e.key in raws:
            continue
        raw = runcache.raw(e.key)
        if raw is None:
            runcache.put(e.key, target, e.outs)  # a lock entry is a run-cache entry too
            raw = runcache.raw(e.key)
        outs = outs_of(raw)
        if raw is None or outs is None:
            continue
        more, whole = store.held(outs, [])
        if whole:
            oids.update(more)
            raws[e.key] = raw
    moved = remote.push_objects(store, oids, progress)
    res.pushed, res.nbytes, res.present = moved.objects, moved.nbytes, moved.present
    res.replaced = moved.replaced
    res.runcache = remote.runcache_put(raws)
    res.duration = time.monotonic() - t0
    return res
