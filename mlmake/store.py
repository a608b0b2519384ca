"""The local object store and the links between its objects and the work tree.

Outs and data sources are stored as objects (mlmake.objects) and linked back into the work
tree (hard links, reflinks or copies, as the project's `link` says); files whose objects are
new move into the store by a hard link where the filesystem allows (`adopt`), so data is never
stored twice.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import subprocess

from mlmake import atomic
from mlmake.errors import CorruptObjectError, MissingObjectError, StoreError
from mlmake.hashing import Entry, FileState, StatCache
from mlmake.links import copy_file as _copy, link as _link, remove_path, \
    unlink_quiet as _unlink
from mlmake.model import MANIFEST_SUFFIX, OutRecord
from mlmake.objects import RO as _RO, RO_EXEC as _RO_EXEC, Objects

__all__ = ["MANIFEST_SUFFIX", "CorruptObjectError", "MissingObjectError", "Store",
           "remove_path"]
Taken = list[tuple[str, str, os.stat_result]]  # adopt_new's: (path, new object or "", stat)


class Store(Objects):
    """Objects, and the links between them and the work tree under `root`."""

    def __init__(self, path: str, root: str, stat_cache: StatCache,
                 link_types: tuple[str, ...] = ("reflink", "hardlink", "copy")) -> None:
        super().__init__(path, root, stat_cache, link_types)
        self._shards: subprocess.Popen[bytes] | None = None

    # -- outs -------------------------------------------------------------------------------
    def record_oids(self, record: OutRecord) -> list[str]:
        """Every object an out record needs (manifest and files for directories)."""
        if record.is_dir:
            entries = self.manifest(record.hash)
            if entries is None:
                return [record.oid]
            return [record.oid] + [e.hash for e in entries]
        return [record.hash]

    def missing(self, record: OutRecord) -> list[str]:
        """Objects of an out record that the store lacks."""
        if record.is_dir and not self.has(record.oid):
            return [record.oid]
        return [o for o in self.record_oids(record) if not self.has(o)]

    def held(self, outs: dict[str, OutRecord], missing: list[str]) -> tuple[list[str], bool]:
        """The objects of `outs` that the store holds, and whether that is all of them;
        outs it lacks objects of are noted in `missing`."""
        need: list[str] = []
        whole = True
        for out, rec in sorted(outs.items()):
            try:
                oids = self.record_oids(rec)
            except StoreError:
                oids = []
            if not oids or not all(self.has(o) for o in oids):
                if out not in missing:
                    missing.append(out)
                whole = False
                continue
            need += oids
        return need, whole

    def wanted(self, records: list[tuple[str, OutRecord]], missing: list[str]
               ) -> tuple[dict[str, str], set[str], dict[str, str]]:
        """The objects (oid → what it is, for messages) that (out, record) pairs need once
        their directories' manifests are stored, the executable ones, and the out each
        belongs to; an out whose manifest is not stored is noted in `missing`."""
        wanted: dict[str, str] = {}
        executable: set[str] = set()
        owner: dict[str, str] = {}
        for out, rec in records:
            if rec.is_dir:
                try:
                    entries = self.manifest(rec.hash)
                except StoreError:
                    entries = None
                if entries is None:
                    if out not in missing:
                        missing.append(out)
                    continue
                for e in entries:
                    wanted.setdefault(e.hash, f"{out}/{e.path}")
                    owner.setdefault(e.hash, out)
                    if e.executable:
                        executable.add(e.hash)
            else:
                wanted.setdefault(rec.hash, out)
                owner.setdefault(rec.hash, out)
                if rec.executable:
                    executable.add(rec.hash)
        return wanted, executable, owner

    def save_out(self, out: str, record: OutRecord, entries: list[Entry] | None,
                 link: bool = True, sync: bool = True) -> None:
        """Move a freshly built out into the store and link it back into the work tree.

        The work-tree file becomes its own object (a hard link, no second copy) only when
        hard links are this store's link type; with reflinks or copies the object is a copy
        and the work tree gets its own reflink or private copy, as a restore would give.
        `sync=False` (a file out): see `adopt`."""
        full = os.path.join(self.root, out)
        if record.is_dir:
            assert entries is not None
            files = [(f"{full}/{e.path}", e.hash, e.executable) for e in entries]
        else:
            files = [(full, record.hash, record.executable)]
        if link and self._moves(os.path.dirname(full)):
            # a directory out's files are synced as a batch either way
            self.adopt([(p, oid, x, os.stat(p)) for p, oid, x in files],
                       sync=sync or record.is_dir)
        else:
            self.add_files(files, move=False)
        if record.is_dir:
            assert entries is not None
            self.add_manifest(entries)  # last: a manifest names only complete objects

    def adopt(self, files: list[tuple[str, str, bool, os.stat_result]],
              sync: bool = True, taken: Taken | None = None) -> list[FileState]:
        """Make work-tree files (path, oid, executable, their stat when hashed) their own
        objects, without a second copy where the filesystem allows; returns the state each
        path has afterwards.

        With hard links as this store's link type, each file is made read-only and linked
        into the store under its hash, or, when an equal object is already stored (and
        verifies), replaced by a link to it. One sync of the filesystem comes first: an
        object's name appears (a link is atomic) only over data already on disk, so a crash
        at any instant leaves a complete object or none. The stat cache learns each object
        from the stat it was hashed with, so a file changed since its hash is re-read before
        it is ever linked. Otherwise (reflinks, copies, another filesystem) objects are
        staged copies (`add_files`) and the work tree is left as it is. `sync=False` skips
        the sync: the caller fsyncs the objects before anything durable (the lock, a run-cache
        entry) names them, or synced them before (`adopting`). `taken`: see `adopt_new`."""
        if not files:
            return []
        if not self._moves(os.path.dirname(files[0][0])):
            self.add_files([(p, oid, x) for p, oid, x, _ in files], move=False)
            return [_state(st) for *_, st in files]
        if sync:
            self._sync(files[0][0] if len(files) == 1 else None)
        # one process: links made by forked workers were slower still (they queue on the
        # filesystem's journal)
        states = self.adopt_new(files, [] if taken is None else taken)
        return [s if s is not None else self._join(src, oid, st, _RO_EXEC if x else _RO)
                for s, (src, oid, x, st) in zip(states, files, strict=True)]

    def adopting(self, path: str) -> bool:
        """Get ready to adopt the files under `path` batch by batch as they are hashed
        (`adopt_new`): one sync first, so an object's name only ever appears over data on
        disk. False where this store keeps copies (`adopt` them once hashed)."""
        if not self._moves(path):
            return False
        self._sync(None)
        self._make_shards()
        return True

    def _make_shards(self) -> None:
        """Start making the store's missing shard directories (`ab/`) in a child process,
        while this one walks the tree and the first files are hashed: a fresh store's 256
        take as long as a walk of 10,000 files (a thread would slow the walk down by as
        much, for the GIL)."""
        try:
            have = set(os.listdir(self.path))
        except OSError:
            have = set()
        want = [f"{self.path}{os.sep}{i:02x}" for i in range(256) if f"{i:02x}" not in have]
        if len(want) < 16:  # not worth a process: made as they are needed
            return
        try:
            self._shards = subprocess.Popen(["mkdir", "-p", "--", *want], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:  # no mkdir: made as they are needed
            self._shards = None

    def wait_shards(self) -> None:
        """Wait for the shard directories `adopting` makes (`adopt_new` does). A shard
        the child could not make is made (or its error raised) as it is needed."""
        if self._shards is not None:
            if self._shards.wait() == 0:
                self._made.update(f"{self.path}{os.sep}{i:02x}" for i in range(256))
            self._shards = None

    def adopt_new(self, files: list[tuple[str, str, bool, os.stat_result]],
                  taken: Taken) -> list[FileState | None]:
        """`adopt` for files whose objects are new (hard-link stores, after `adopting` or a
        sync): each is made read-only and linked in; None for a file whose object is stored
        already (`adopt` it once nothing can fail any more). Each file it touched is noted
        in `taken`, so that `disown(taken)` undoes it."""
        self.wait_shards()
        states: list[FileState | None] = []
        known: list[tuple[str, str, os.stat_result]] = []
        made, key, chmod, link, sep = self._made, self._stat_key, os.chmod, os.link, os.sep
        try:
            for src, oid, executable, st in files:
                # made read-only before the link: an object is never writable
                mode = _RO_EXEC if executable else _RO
                try:
                    if st.st_mode & 0o7777 != mode:
                        chmod(src, mode)
                    shard = f"{self.path}{sep}{oid[:2]}"
                    if shard not in made:
                        self._mkdir(shard)
                    link(src, f"{shard}{sep}{oid[2:]}")
                except OSError as exc:  # "" names no new object
                    taken.append((src, "", st))
                    if not isinstance(exc, FileExistsError):
                        raise self._write_error(exc, src) from None
                    states.append(None)  # stored already
                    continue
                taken.append((src, oid, st))
                known.append((key(oid), oid, st))
                states.append((st.st_ino, st.st_size, st.st_mtime_ns,
                               (st.st_mode & ~0o7777) | mode))
        finally:
            self.stats.put_many(known, self.stats_now())
        return states

    def disown(self, taken: Taken) -> None:
        """Undo `adopt_new`: unlink the objects it made, and give each file back its mode
        while it is the file it was, linked from nowhere new (never an object's inode)."""
        self.wait_shards()
        for src, oid, st in reversed(taken):
            try:
                if oid and os.path.samefile(src, self.object_path(oid)):
                    os.unlink(self.object_path(oid))
                now = os.stat(src)
                if now.st_ino == st.st_ino and now.st_nlink <= st.st_nlink:
                    os.chmod(src, st.st_mode & 0o7777)
            except OSError:
                continue

    def _sync(self, path: str | None) -> None:
        """fsync one file, or (None) sync this store's whole filesystem."""
        try:
            atomic.fsync_file(path) if path is not None else atomic.sync_fs(self.path)
        except OSError as exc:
            raise self._write_error(exc, path or self.path) from None

    def _join(self, src: str, oid: str, st: os.stat_result, mode: int) -> FileState:
        """`src` holds the content of the stored object `oid`: leave it if it is that object,
        else replace it with a link to the object once the object verifies (a corrupt one is
        set aside and `src` becomes the object instead)."""
        obj = self.object_path(oid)
        for _ in range(2):
            try:
                ost = os.stat(obj)
            except FileNotFoundError:
                ost = None
            if ost is not None and ost.st_ino == st.st_ino and ost.st_dev == st.st_dev:
                return _state(ost)
            try:
                ost = self.verify(oid, src)
            except StoreError:  # corrupt (set aside) or gone: ours takes its place
                try:
                    os.link(src, obj)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise self._write_error(exc, src) from None
                self.stats.put(self._stat_key(oid), st, oid, self.stats_now())
                return (st.st_ino, st.st_size, st.st_mtime_ns, (st.st_mode & ~0o7777) | mode)
            self._place(obj, src)
            return _state(ost)
        raise StoreError(f"the cache object {oid[:12]}… keeps changing while "
                         f"'{src}' is stored; is another program writing into {self.path}?")

    def restore(self, out: str, record: OutRecord, stat_key_prefix: str = "") -> int:
        """Link an out from the store into the work tree, replacing what is there.

        Every object is verified first, so a corrupt object never reaches the work tree;
        the work tree is only touched once all objects are known good. Returns files linked.
        """
        full = os.path.join(self.root, out)
        if record.is_dir:
            entries = self.manifest(record.hash)
            if entries is None:
                raise MissingObjectError(record.oid, out)
            stats = [self.verify(e.hash, f"{out}/{e.path}") for e in entries]
            hard = self._link in (None, "hardlink") and "hardlink" in self.link_types
            remove_path(full)
            os.makedirs(full, exist_ok=True)
            made = {full}
            now = self.stats_now()
            for e, st in zip(entries, stats, strict=True):
                dest = f"{full}/{e.path}"
                parent = dest.rsplit("/", 1)[0]
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                if self._link == "hardlink":
                    os.link(self.object_path(e.hash), dest)
                else:
                    self._link_new(self.object_path(e.hash), dest)
                if hard and self._link == "hardlink":
                    self.stats.put(f"{out}/{e.path}", st, e.hash, now)  # same inode
                else:
                    self._note(f"{out}/{e.path}", dest, e.hash)
            return len(entries)
        self.verify(record.hash, out)
        remove_path(full)
        os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
        self._link_new(self.object_path(record.hash), full)
        self._note(out, full, record.hash, bulk=False)
        return 1

    def export(self, record: OutRecord, dest: str, inner: str = "") -> None:
        """Copy (never link) an out, or the part `inner` of a directory out, to `dest`."""
        if record.is_dir:
            entries = self.manifest(record.hash) or []
            if not entries and not self.has(record.oid):
                raise MissingObjectError(record.oid, dest)
            chosen = [e for e in entries if not inner or e.path == inner
                      or e.path.startswith(inner + "/")]
            if not chosen:
                raise StoreError(f"'{inner}' is not part of that output")
            single = len(chosen) == 1 and chosen[0].path == inner
            for e in chosen:
                self.verify(e.hash, e.path)
                target = dest if single else os.path.join(
                    dest, e.path[len(inner) + 1:] if inner else e.path)
                os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
                _copy(self.object_path(e.hash), target)
            return
        self.verify(record.hash, dest)
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        _copy(self.object_path(record.hash), dest)

    def unprotect(self, out: str) -> None:
        """Give an out private, writable copies of its files (before a `persist` target runs)."""
        full = os.path.join(self.root, out)
        paths = [full] if os.path.isfile(full) else [
            os.path.join(d, f) for d, _, fs in os.walk(full) for f in fs]
        for p in paths:
            st = os.lstat(p)
            if st.st_nlink > 1 or not st.st_mode & stat_mod.S_IWUSR:
                atomic.atomic_copy(p, p, (st.st_mode | 0o644) & 0o777)

    def _note(self, rel: str, path: str, oid: str, bulk: bool = True) -> None:
        try:
            self.stats.put(rel, os.stat(path), oid, self.stats_now(), bulk=bulk)
        except FileNotFoundError:
            pass

    # -- linking ----------------------------------------------------------------------------
    def _place(self, obj: str, dest: str) -> None:
        tmp = atomic.temp_name(dest)
        try:
            self._link_new(obj, tmp)
            os.replace(tmp, dest)
        except BaseException:
            _unlink(tmp)
            raise

    def _moves(self, dest_dir: str) -> bool:
        """Whether a fresh out may be moved into the store by a hard link: only when hard
        links are the link type this store uses (found once, with an empty probe file)."""
        if self._link is None and "hardlink" in self.link_types:
            self._mkdir(self.path)
            probe = atomic.temp_name(os.path.join(self.path, "probe"))
            dest = atomic.temp_name(os.path.join(dest_dir, ".mlmake-probe"))
            try:
                with open(probe, "wb"):
                    pass
                os.makedirs(dest_dir, exist_ok=True)
                self._choose(probe, dest)
            except (OSError, StoreError):
                return False
            finally:
                _unlink(dest)
                _unlink(probe)
        return self._link == "hardlink"

    def _link_new(self, obj: str, dest: str) -> None:
        if self._link is None:
            self._choose(obj, dest)
        else:
            _link(self._link, obj, dest)

    def _choose(self, obj: str, dest: str) -> str:
        """The first configured link type that works here (tried once per store); `dest` is
        left linked."""
        for kind in self.link_types:
            try:
                _link(kind, obj, dest)
            except (OSError, NotImplementedError) as exc:
                if isinstance(exc, OSError) and exc.errno == errno.EEXIST:
                    raise
                continue
            self._link = kind
            return kind
        raise StoreError(f"none of the link types {', '.join(self.link_types)} work between "
                         f"{self.path} and {os.path.dirname(dest)}; add \"copy\" to "
                         "[project] link.")

    @property
    def link_type(self) -> str | None:
        return self._link


def _state(st: os.stat_result) -> FileState:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
