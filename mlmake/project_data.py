"""DataMixin: `Project`'s data sources: tracking, importing and updating them, and linking
them into the work tree before a build."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mlmake.hashing import Hasher, StatCache, gc_paused
from mlmake.lockfile import Lock
from mlmake.project_state import ProjectState

if TYPE_CHECKING:
    from mlmake.model import SourceRecord
    from mlmake.plan import Checker


class DataMixin(ProjectState):
    """Data sources: files the lock records by hash that no target produces."""

    # -- data sources -----------------------------------------------------------------------
    def add(self, paths: tuple[str, ...] | list[str]) -> list[Any]:
        """Track files or directories as data sources: stored by hash, linked back read-only,
        Git-ignored and recorded in the lock (mlmake.sources.Added per path)."""
        from mlmake import sources

        with self._project_lock(True), gc_paused():
            stats = StatCache(self.state_path("statcache"))
            try:
                return sources.add(self.root, self.lock_path, self.store(stats),
                                   Hasher(self.root, stats), paths, self._all_outs())
            finally:
                stats.save()
                self._update_gitignore()

    def import_data(self, url: str, path: str, options: dict[str, Any] | None = None) -> Any:
        """Download `url` (a path outside the project or any fsspec URL) to `path` and track
        it as a data source with its URL and the version seen (sources.Imported)."""
        from mlmake import sources

        with self._project_lock(True):
            store = self.store()
            try:
                return sources.import_url(self.root, self.lock_path, store, url, path,
                                          dict(options or {}), self._all_outs())
            finally:
                store.stats.save()
                self._update_gitignore()

    def update_data(self, paths: tuple[str, ...] | list[str] = ()) -> list[Any]:
        """Ask the origin of imported sources (default: all) for a new version and record it."""
        from mlmake import sources

        with self._project_lock(True):
            store = self.store()
            try:
                return sources.update(self.root, self.lock_path, store, paths)
            finally:
                store.stats.save()

    def _data_changes(self, lock: Lock, checker: Checker) -> list[Any]:
        if not lock.sources:
            return []
        from mlmake import sources

        return sources.changes(self.root, lock, checker.hasher, checker.store)

    def _link_sources(self, names: set[str], use_remote: bool, remote: str | None,
                      wait: bool, restore: bool) -> list[str]:
        """The data sources' paths; with `restore`, those that `names` read and the work tree
        lacks are first linked from the cache, else fetched from the remote cache (never
        from their origin)."""
        lock = Lock.read(self.lock_path)
        if not lock.sources:
            return []
        from mlmake import sources

        if not restore:
            return sources.paths(lock)
        deps = [d for n in names for d in self.graph.targets[n].deps]
        absent = [p for p in lock.sources if not os.path.lexists(os.path.join(self.root, p))
                  and any(sources.covers(p, d) for d in deps)]
        if not absent:
            return sources.paths(lock)
        with self._project_lock(wait):
            store = self.store()
            r = self.remote(remote) if use_remote else None
            try:
                def fetch(recs: list[tuple[str, SourceRecord]]) -> None:
                    sources.fetch(r, store, recs)

                sources.ensure(self.root, lock, store, lambda p: p in absent,
                               fetch if r is not None else None, r.name if r is not None else None)
            finally:
                store.stats.save()
                if r is not None:
                    r.close()
        return sources.paths(lock)
