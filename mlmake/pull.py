"""`mlmake pull`: download the objects that lock entries reference, and their run-cache entries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake.lockfile import LockEntry
from mlmake.remote import Progress, Remote
from mlmake.runcache import RunCache, outs_of
from mlmake.store import Store

if TYPE_CHECKING:
    from mlmake.exp_store import RefSync


@dataclass
class PullResult:
    """What `pull` fetched, the outs the remote lacks, and what the checkout restored."""

    remote: str
    fetched: int = 0
    nbytes: int = 0
    present: int = 0
    runcache: int = 0
    missing: list[str] = field(default_factory=list)
    checkout: Any = None  # a checkout.CheckoutResult, set by the caller that restores
    duration: float = 0.0
    experiments: RefSync | None = None  # the experiment refs fetched, set by Project.pull


def pull(remote: Remote, store: Store, runcache: RunCache,
         entries: list[tuple[str, LockEntry]], progress: Progress | None = None
         ) -> PullResult:
    """Download the objects of `entries` and the run-cache entries of their keys into the
    local store; every object is verified before it is stored. Links nothing."""
    t0 = time.monotonic()
    res = PullResult(remote.name)
    remote.check()
    records = [(out, rec) for _, e in entries for out, rec in sorted(e.outs.items())]
    remote.fetch_objects(store, {rec.oid: out for out, rec in records if rec.is_dir})
    wanted, executable, owner = store.wanted(records, res.missing)
    moved = remote.fetch_objects(store, wanted, executable, progress)
    res.fetched, res.nbytes, res.present = moved.objects, moved.nbytes, moved.present
    res.missing += sorted({owner[o] for o in moved.missing})
    keys = {e.key for _, e in entries if runcache.raw(e.key) is None}
    for key, raw in remote.runcache_get_many(keys).items():
        if outs_of(raw) is not None:
            runcache.put_raw(key, raw)
            res.runcache += 1
    res.duration = time.monotonic() - t0
    return res
