"""Garbage collection: keep exactly the objects the chosen lock files reference."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlmake import git, sources
from mlmake.errors import MlmakeError, StoreError
from mlmake.lockfile import Lock
from mlmake.model import OutRecord
from mlmake.runs import RunStore
from mlmake.runcache import RunCache, parse_entry
from mlmake.store import Store


@dataclass(frozen=True)
class GcItem:
    """What removed objects were: an out `path` of `target` recorded at `commit` ("" when
    only the run cache knew it), with how many objects and bytes it held."""

    path: str
    target: str
    commit: str
    objects: int
    bytes: int


@dataclass
class GcResult:
    """Objects kept and removed (or that would be, in a dry run) and bytes freed; `items`
    names the removed objects by out, target and commit (sizes summed)."""

    kept: int = 0
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    runcache_removed: int = 0
    locks: int = 0
    items: list[GcItem] = field(default_factory=list)


def gc(root: str, lock_path: str, store: Store, runcache: RunCache, all_commits: bool,
       dry_run: bool, runs: RunStore | None = None, kept: list[Lock] | None = None
       ) -> GcResult:
    """Remove objects no chosen lock references: the work tree's lock, plus with
    `all_commits` the lock of every commit reachable from a branch, tag or HEAD. Run-cache
    entries whose objects are gone are dropped too. Each removed object is named by the
    out that recorded it (any commit's lock, else a run-cache entry and its run record).
    `kept`: more locks whose objects stay (those of recorded experiments)."""
    name = os.path.basename(lock_path)
    history = git.lock_history(root, lock_path, newest_first=True) if all_commits else None
    locks = [Lock.read(lock_path), *(kept or [])]
    if history is not None:
        locks += [Lock.parse(text, name) for _, text in history]
    records = [rec for lock in locks for _, rec in sources.records(lock)]
    keep = referenced(store, records)
    result = GcResult(locks=len(locks))
    sizes: dict[str, int] = {}
    for oid in list(store.all_oids()):
        if oid in keep:
            result.kept += 1
            continue
        try:
            sizes[oid] = os.path.getsize(store.object_path(oid))
        except FileNotFoundError:
            continue
        result.removed.append(oid)
        result.bytes_freed += sizes[oid]
    gone = set(result.removed)
    if gone:
        if history is None:
            history = git.lock_history(root, lock_path, newest_first=True)
        result.items = _name(gone, sizes, store, runcache, runs, history, name)
    if not dry_run:
        for oid in result.removed:
            store.remove(oid)
    for key in list(runcache.keys()):
        outs = _runcache_outs(runcache, key)[1]
        needs = {rec.oid for rec in outs.values()}
        if not outs or any(o in gone or not store.has(o) for o in needs):
            result.runcache_removed += 1
            if not dry_run:
                runcache.remove(key)
    return result


def _runcache_outs(runcache: RunCache, key: str) -> tuple[str, dict[str, OutRecord]]:
    """(target, out records) of a run-cache entry; ("", {}) for one that cannot be read."""
    return parse_entry(runcache.raw(key)) or ("", {})


def _name(gone: set[str], sizes: dict[str, int], store: Store, runcache: RunCache,
          runs: RunStore | None, history: list[tuple[str, str]], lock_name: str
          ) -> list[GcItem]:
    """Group removed objects by (out path, target, commit): the newest commit whose lock
    recorded them, else the run-cache entry that did (and the commit of its run)."""
    owner: dict[str, tuple[str, str, str]] = {}

    def claim(target: str, path: str, rec: OutRecord, commit: str) -> None:
        try:
            oids = store.record_oids(rec)
        except StoreError:
            oids = [rec.oid]
        for oid in oids:
            if oid in gone and oid not in owner:
                owner[oid] = (path, target, commit)

    for sha, text in history:
        try:
            lock = Lock.parse(text, lock_name)
        except MlmakeError:
            continue
        for target, e in lock.entries.items():
            for path, rec in e.outs.items():
                claim(target, path, rec, sha)
        for path, src in lock.sources.items():
            claim("(data)", path, src.out, sha)
        if len(owner) == len(gone):
            break
    if len(owner) < len(gone):
        commits: dict[str, str] = {}
        if runs is not None:
            commits = {r.key: r.commit or "" for r in reversed(runs.runs(None, 100_000))
                       if r.key}
        for key in runcache.keys():
            target, outs = _runcache_outs(runcache, key)
            for path, rec in outs.items():
                claim(target, path, rec, commits.get(key, ""))
    groups: dict[tuple[str, str, str], list[str]] = {}
    for oid in sorted(gone):
        groups.setdefault(owner.get(oid, ("", "", "")), []).append(oid)
    items = [GcItem(path, target, commit, len(oids), sum(sizes.get(o, 0) for o in oids))
             for (path, target, commit), oids in groups.items()]
    return sorted(items, key=lambda i: (i.path == "", i.path, i.target, i.commit))


def referenced(store: Store, records: Iterable[OutRecord]) -> set[str]:
    """Every object the given out records need (manifests read from the store)."""
    keep: set[str] = set()
    for rec in records:
        try:
            keep.update(store.record_oids(rec))
        except StoreError:
            keep.add(rec.oid)
    return keep
