"""Garbage collection: keep exactly the objects the chosen lock files reference."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from mlmake import git
from mlmake.lockfile import Lock
from mlmake.runcache import RunCache
from mlmake.store import MANIFEST_SUFFIX, Store, referenced


@dataclass
class GcResult:
    """Objects kept and removed (or that would be, in a dry run) and bytes freed."""

    kept: int = 0
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    runcache_removed: int = 0
    locks: int = 0


def gc(root: str, lock_path: str, store: Store, runcache: RunCache, all_commits: bool,
       dry_run: bool) -> GcResult:
    """Remove objects no chosen lock references: the work tree's lock, plus with
    `all_commits` the lock of every commit reachable from a branch, tag or HEAD. Run-cache
    entries whose objects are gone are dropped too."""
    locks = [Lock.read(lock_path)]
    if all_commits:
        locks += [Lock.parse(text, os.path.basename(lock_path))
                  for text in git.all_lock_texts(root, lock_path)]
    records = [rec for lock in locks for e in lock.entries.values() for rec in e.outs.values()]
    keep = referenced(store, records)
    result = GcResult(locks=len(locks))
    gone: set[str] = set()
    for oid in list(store.all_oids()):
        if oid in keep:
            result.kept += 1
            continue
        path = store.object_path(oid)
        try:
            result.bytes_freed += os.path.getsize(path)
        except FileNotFoundError:
            continue
        result.removed.append(oid)
        gone.add(oid)
        if not dry_run:
            store.remove(oid)
    for key in list(runcache.keys()):
        raw = runcache.raw(key)
        try:
            outs = json.loads(raw or b"{}").get("outs", {})
        except ValueError:
            outs = {}
        needs = {rec["hash"] + (MANIFEST_SUFFIX if rec.get("type") == "dir" else "")
                 for rec in outs.values()}
        if not outs or any(o in gone or not store.has(o) for o in needs):
            result.runcache_removed += 1
            if not dry_run:
                runcache.remove(key)
    return result
