"""The remote as one build uses it: run-cache lookups, downloads of reused outs, uploads."""

from __future__ import annotations

import threading
from typing import Any
from collections.abc import Iterable

from mlmake import events as ev
from mlmake.errors import RemoteError, StoreError
from mlmake.lockfile import LockEntry
from mlmake.model import OutRecord
from mlmake.remote import CorruptRemoteObjectError, Remote
from mlmake.runcache import RunCache, outs_of
from mlmake.store import Store


class BuildRemote:
    """A remote as one build uses it; also the build's run cache (`get`/`put`), layered over
    the local one. Called from worker threads.

    Lookups and downloads stop at the first failure to reach the remote (one warning), and so
    do uploads; a corrupt object is refused per target and that target runs instead.
    """

    def __init__(self, remote: Remote, store: Store, local: RunCache, reporter: ev.Reporter,
                 lookup: bool = True, push: bool = False) -> None:
        self.remote = remote
        self.name = remote.name
        self.store = store
        self.local = local
        self.reporter = reporter
        self.lookup = lookup
        self.push = push
        self._hits: dict[str, bytes] = {}
        self._misses: set[str] = set()
        self._lock = threading.Lock()
        self._checked = False
        self._down = False

    # -- run cache --------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, OutRecord] | None:
        """Out records for `key`: the local run cache's, else the remote's (whose directory
        manifests are fetched, so dependents' keys can be computed without the files)."""
        recs = self.local.get(key)
        if recs is not None or not self.lookup:
            return recs
        with self._lock:
            if key in self._hits:
                return outs_of(self._hits[key])
            if key in self._misses:
                return None
        raw = self._call(self.remote.runcache_get, key)
        outs = outs_of(raw)
        if outs is not None:
            manifests = {r.oid: out for out, r in outs.items() if r.is_dir}
            try:
                self._call(self.remote.fetch_objects, self.store, manifests)
            except CorruptRemoteObjectError:
                pass
            if not all(self.store.has(o) for o in manifests):
                outs = None  # a directory out that cannot be described: not usable
        with self._lock:
            if outs is None:
                self._misses.add(key)
            else:
                self._hits[key] = raw  # type: ignore[assignment]
        return outs

    def put(self, key: str, target: str, outs: dict[str, OutRecord]) -> None:
        self.local.put(key, target, outs)

    def raw(self, key: str) -> bytes | None:
        return self.local.raw(key)

    def source(self, key: str | None) -> str:
        """"local", or this remote's name when `key`'s entry came from it."""
        with self._lock:
            return self.name if key in self._hits else "local"

    def adopt(self, key: str | None) -> None:
        """Keep a remote entry in the local run cache once its outs are local."""
        with self._lock:
            raw = self._hits.get(key) if key else None
        if raw is not None and key is not None and self.local.raw(key) is None:
            self.local.put_raw(key, raw)

    # -- objects ----------------------------------------------------------------------------
    def available(self, outs: dict[str, OutRecord]) -> bool:
        """True when every object of `outs` is in the local store or on the remote."""
        try:
            missing = {o for rec in outs.values() for o in self.store.missing(rec)}
        except StoreError:
            return False
        if not missing:
            return True
        if not self.lookup:
            return False
        there = self._call(self.remote.present, missing)
        return there is not None and missing <= there

    def fetch(self, outs: dict[str, OutRecord]) -> bool:
        """Download the objects of `outs` that the local store lacks; True when something
        came from the remote. CorruptRemoteObjectError names a refused object."""
        if not self.lookup:
            return False
        records = sorted(outs.items())
        if not any(self.store.missing(rec) for _, rec in records):
            return False
        manifests = {rec.oid: out for out, rec in records if rec.is_dir}
        if self._call(self.remote.fetch_objects, self.store, manifests) is None:
            return False
        wanted, executable, _ = self.store.wanted(records, [])
        moved = self._call(self.remote.fetch_objects, self.store, wanted, executable)
        return bool(moved and moved.objects)

    def prefetch(self, entries: Iterable[LockEntry]) -> None:
        """Fetch the directory manifests the lock records (small), so a fresh clone can plan
        with them before any out is downloaded."""
        if not self.lookup:
            return
        manifests = {rec.oid: out for e in entries for out, rec in e.outs.items()
                     if rec.is_dir}
        manifests = {o: label for o, label in manifests.items() if not self.store.has(o)}
        if manifests:
            try:
                self._call(self.remote.fetch_objects, self.store, manifests)
            except CorruptRemoteObjectError:
                pass  # planning falls back to the work tree; the target is rebuilt

    def upload(self, target: str, key: str | None, outs: dict[str, OutRecord]) -> None:
        """Push one target's objects and run-cache entry right after it succeeded."""
        if not self.push or key is None or self._down:  # (a down remote warned already)
            return
        need, whole = self.store.held(outs, [])
        raw = self.local.raw(key)
        if not whole or raw is None:
            return
        try:
            self.remote.push_objects(self.store, need)
            self.remote.runcache_put({key: raw})
        except RemoteError as exc:
            with self._lock:
                if not self.push:
                    return
                self.push = False
            self.reporter.emit(ev.Notice(f"{exc} Not pushing the rest of this build; push it "
                                         "later with `mlmake push`.", "warning"))

    # -- failures ---------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any) -> Any:
        """fn(*args), or None once the remote failed (the first failure warns)."""
        if self._down:
            return None
        try:
            if not self._checked:
                self.remote.check()
                self._checked = True
            return fn(*args)
        except CorruptRemoteObjectError:
            raise
        except RemoteError as exc:
            with self._lock:
                first = not self._down
                self._down = True
            if first:
                self.reporter.emit(ev.Notice(f"{exc} Building without it.", "warning"))
            return None

    def close(self) -> None:
        self.remote.close()
