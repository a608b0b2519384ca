"""Content-addressed objects: writing them atomically, verifying them, listing them.

Objects live under .mlmake/cache/ in dvc-objects' layout (`ab/cdef…`), addressed by xxh3-128;
a directory's manifest is the object `<tree hash>.dir` listing (path, hash, exec). Objects are
read-only. An object is verified against its name before it is used: a stat signature recorded
when it was written or last verified makes that free for untouched objects. The links between
objects and the work tree are the Store's (mlmake.store).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

from mlmake import atomic
from mlmake.errors import CorruptObjectError, MissingObjectError, StoreError, \
    store_write_error
from mlmake.hashing import Entry, StatCache, hash_file, tree_digest
from mlmake.links import reflink as _reflink, unlink_quiet as _unlink
from mlmake.model import MANIFEST_SUFFIX

RO = 0o444  # an object's mode
RO_EXEC = 0o555  # an executable object's


class Objects:
    """Objects under `path`, addressed by their xxh3-128; `root` is the work tree their
    files come from."""

    def __init__(self, path: str, root: str, stat_cache: StatCache,
                 link_types: tuple[str, ...] = ("reflink", "hardlink", "copy")) -> None:
        self.path = path
        self.root = root
        self.stats = stat_cache
        self.link_types = link_types
        self._link: str | None = None
        self._made: set[str] = set()

    @property
    def odb(self) -> Any:
        """dvc-objects' ObjectDB over this store (its layout and listing)."""
        from dvc_objects.db import ObjectDB
        from dvc_objects.fs.local import LocalFileSystem

        return ObjectDB(LocalFileSystem(), self.path)

    # -- objects ----------------------------------------------------------------------------
    def object_path(self, oid: str) -> str:
        return f"{self.path}{os.sep}{oid[:2]}{os.sep}{oid[2:]}"  # (join is slow in hot loops)

    def has(self, oid: str) -> bool:
        return os.path.exists(self.object_path(oid))

    def _stat_key(self, oid: str) -> str:
        return f"\x00obj/{oid}"

    def verify(self, oid: str, out: str = "") -> os.stat_result:
        """Raise CorruptObjectError (removing the object) unless it hashes to `oid`; returns
        the object's stat (a hard link shares it)."""
        path = self.object_path(oid)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise MissingObjectError(oid, out or oid) from None
        key = self._stat_key(oid)
        if self.stats.get(key, st) == oid:
            return st
        found = hash_file(path)
        if found != oid:
            self._set_aside(oid, found)
            raise CorruptObjectError(oid, out or oid, found)
        self.stats.put(key, st, oid, self.stats_now())
        return st

    def stats_now(self) -> int:
        return time.time_ns()

    def add_file(self, src: str, oid: str, executable: bool, move: bool = True,
                 sync: bool = True) -> None:
        """Put the file at `src` into the store as `oid` (moved when allowed, else copied).

        The object appears atomically and complete: it is written under a unique temporary
        name, fsynced, made read-only and renamed, so a crash at any instant leaves either no
        object or the whole one (what a lock entry may name). A full disk or a read-only
        cache raises StoreError naming the path and the space needed, leaving nothing.
        `sync=False` leaves the fsync to the caller, before anything durable names it.
        """
        staged = self._stage(src, oid, executable, move)
        if staged is not None:
            if sync:
                atomic.fsync_file(staged)
            self._commit(staged, oid, src)

    def add_files(self, files: list[tuple[str, str, bool]], move: bool = True) -> None:
        """add_file for many (src, oid, executable) at once: all staged, one filesystem sync,
        then all renamed (a 1,000-file directory out costs one sync, not 1,000 fsyncs)."""
        staged: list[tuple[str, str, str]] = []
        try:
            for src, oid, executable in files:
                tmp = self._stage(src, oid, executable, move)
                if tmp is not None:
                    staged.append((tmp, oid, src))
            if staged:
                atomic.sync_fs(self.path)
            while staged:
                tmp, oid, src = staged.pop()
                self._commit(tmp, oid, src)
        finally:
            for tmp, _, _ in staged:
                _unlink(tmp)

    def _stage(self, src: str, oid: str, executable: bool, move: bool) -> str | None:
        """A read-only temporary copy (or link) of `src` beside the object `oid`; None when
        the object is already stored."""
        dest = self.object_path(oid)
        if os.path.exists(dest):
            return None
        tmp = atomic.temp_name(dest)
        try:
            self._mkdir(os.path.dirname(dest))
            linked = False
            if move:
                try:
                    os.link(src, tmp)
                    linked = True
                except OSError:
                    pass
            if not linked and self._link == "reflink":
                try:
                    _reflink(src, tmp)  # no second copy of the data either
                    linked = True
                except OSError:
                    pass
            if not linked:
                shutil.copyfile(src, tmp)
            os.chmod(tmp, RO_EXEC if executable else RO)
        except OSError as exc:
            _unlink(tmp)
            raise self._write_error(exc, src) from None
        return tmp

    def _commit(self, tmp: str, oid: str, src: str) -> None:
        dest = self.object_path(oid)
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            _unlink(tmp)
            raise self._write_error(exc, src) from None
        st = os.stat(dest)
        self.stats.put(self._stat_key(oid), st, oid, self.stats_now())

    def add_bytes(self, oid: str, data: bytes, executable: bool = False) -> None:
        """Put `data` into the store as `oid` (unique temporary name, fsync, rename)."""
        dest = self.object_path(oid)
        if os.path.exists(dest):
            return
        try:
            self._mkdir(os.path.dirname(dest))
            atomic.atomic_write(dest, data, RO_EXEC if executable else RO)
        except OSError as exc:
            raise self._write_error(exc, dest, len(data)) from None

    def _write_error(self, exc: OSError, src: str, size: int | None = None) -> StoreError:
        return store_write_error(exc, self.path, self.root, src, size)

    def sweep_temps(self) -> int:
        """Remove temporary files that killed writers left in the store."""
        return atomic.sweep(self.path) if os.path.isdir(self.path) else 0

    def add_manifest(self, entries: list[Entry], digest: str | None = None) -> str:
        """Store a directory manifest; returns the tree hash it is named by (`digest`, when
        the caller has it already)."""
        digest = digest or tree_digest(entries)
        data = json.dumps(sorted(entries), separators=(",", ":")).encode()  # [path, hash, x]
        self.add_bytes(digest + MANIFEST_SUFFIX, data)
        return digest

    def manifest(self, tree_oid: str) -> list[Entry] | None:
        """The entries of a directory out, verified against its hash; None if not stored."""
        path = self.object_path(tree_oid + MANIFEST_SUFFIX)
        try:
            with open(path, "rb") as fh:
                raw = json.loads(fh.read())
            entries = [Entry(p, h, bool(x)) for p, h, x in raw]
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            self.remove(tree_oid + MANIFEST_SUFFIX)
            raise CorruptObjectError(tree_oid + MANIFEST_SUFFIX, tree_oid, "unreadable") \
                from None
        found = tree_digest(entries)
        if found != tree_oid:
            self.remove(tree_oid + MANIFEST_SUFFIX)
            raise CorruptObjectError(tree_oid + MANIFEST_SUFFIX, tree_oid, found)
        return entries

    def _set_aside(self, oid: str, found: str) -> None:
        """Take a corrupt object out from under its name; its bytes are kept as the object
        they really are (often an edit written through a hard link: the user's only copy)."""
        path = self.object_path(oid)
        if len(found) != len(oid) or self.has(found):
            self.remove(oid)
            return
        self._mkdir(os.path.dirname(self.object_path(found)))
        try:
            os.replace(path, self.object_path(found))
        except OSError:
            self.remove(oid)

    def keep(self, out: str) -> str:
        """Put the work tree's current content of `out` into the store (files moved in by
        a hard link where possible, a manifest for a directory) without changing the work
        tree; returns its hash. Used before an edited out is replaced."""
        from mlmake.hashing import Hasher

        full = os.path.join(self.root, out)
        hasher = Hasher(self.root, self.stats)
        if os.path.isdir(full):
            digest, entries = hasher.tree(out, manifest=True)
            for e in entries:
                self.add_file(os.path.join(full, e.path), e.hash, e.executable)
            self.add_manifest(entries)
            return digest
        st = os.stat(full)
        oid = hasher.file(out, st)
        self.add_file(full, oid, bool(st.st_mode & 0o111))
        return oid

    def remove(self, oid: str) -> None:
        try:
            os.unlink(self.object_path(oid))
        except FileNotFoundError:
            pass

    def all_oids(self) -> Iterator[str]:
        """Every object in the store (dvc-objects' listing)."""
        if not os.path.isdir(self.path):
            return iter(())
        return (oid for oid in self.odb.all() if not atomic.is_temp(oid))

    def _mkdir(self, d: str) -> None:
        if d not in self._made:
            os.makedirs(d, exist_ok=True)
            self._made.add(d)
