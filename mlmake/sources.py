"""Data sources: raw data no target produces, stored by hash and recorded in Mlfile.lock.

A source's record (model.SourceRecord) is an out record, stored and linked exactly like a
target's out, kept under the lock's top-level "sources", plus `url`, `version` and `options`
for an imported one. Everything that moves outs (push, pull, checkout, get, gc)
reaches sources through `records`. A build never fetches a source from its origin: `ensure`
links the recorded version from the local store or the remote cache, or says how to get it.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mlmake.errors import RemoteError, StoreError, UsageError
from mlmake.hashing import FileState, Hasher, Scan, StatCache, is_glob
from mlmake.lockfile import Lock
from mlmake.model import MANIFEST_SUFFIX, OutRecord, SourceRecord
from mlmake.store import Store, Taken, remove_path


# -- records ------------------------------------------------------------------------------------
def shown(path: str, rec: SourceRecord | OutRecord) -> str:
    """A source path as users write it: directories with a trailing slash."""
    return path + "/" if rec.is_dir else path


def records(lock: Lock) -> list[tuple[str, OutRecord]]:
    """Every (path, out record) a lock holds: its targets' outs, then its data sources."""
    pairs = [(out, rec) for _, e in sorted(lock.entries.items())
             for out, rec in sorted(e.outs.items())]
    return pairs + [(p, s.out) for p, s in sorted(lock.sources.items())]


def out_records(lock: Lock) -> dict[str, OutRecord]:
    """The lock's data sources as out records (path → record), like a target's outs."""
    return {p: rec.out for p, rec in lock.sources.items()}


def source_records(lock_path: str, all_commits: bool, root: str
                   ) -> list[tuple[str, SourceRecord]]:
    """(path, record) of the work tree's lock's sources, and of every commit's with
    `all_commits`; each version once."""
    locks = [Lock.read(lock_path)]
    if all_commits:
        from mlmake import git

        locks += [Lock.parse(text, os.path.basename(lock_path))
                  for text in git.all_lock_texts(root, lock_path)]
    seen: set[tuple[str, str]] = set()
    out = []
    for lock in locks:
        for path, rec in sorted(lock.sources.items()):
            if (path, rec.hash) not in seen:
                seen.add((path, rec.hash))
                out.append((path, rec))
    return out


def versions(lock: Lock) -> dict[str, str]:
    """The version of each data source the lock records: path → content hash (what a run
    record keeps to say which data a build used)."""
    return {p: rec.hash for p, rec in sorted(lock.sources.items())}


def paths(lock: Lock) -> list[str]:
    """The paths of the lock's data sources."""
    return sorted(lock.sources)


def covers(source: str, dep: str) -> bool:
    """True when a dep reads (part of) the source: equal, inside it, containing it, or a
    glob (which may match anything)."""
    return dep == source or dep.startswith(source + "/") or source.startswith(dep + "/") \
        or is_glob(dep)


# -- add ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Added:
    """What `add` did to one path: "added", "updated" (a new version) or "unchanged"."""

    path: str
    status: str
    hash: str
    files: int
    size: int
    kind: str


def add(root: str, lock_path: str, store: Store, hasher: Hasher, targets: Iterable[str],
        outs: Iterable[str]) -> list[Added]:
    """Store each path's content and record it as a data source in the lock.

    Files move into the store by a hard link where the filesystem allows (no second copy)
    and are linked back read-only; a path whose content matches its record costs one stat
    per file. Paths that a target produces are refused: they are outs, not sources."""
    rels = [_relpath(root, p) for p in targets]
    produced = list(outs)
    for rel in rels:
        _check_not_out(rel, produced)
        if not os.path.lexists(os.path.join(root, rel)):
            raise UsageError(f"'{rel}' does not exist: nothing to add.")
    lock = Lock.read(lock_path)
    hasher = Hasher(hasher.root, hasher.cache, forked=True)  # see Hasher
    done = []
    taken: Taken = []  # what a failure undoes, for every path
    try:
        for rel in rels:
            old = lock.sources.get(rel)
            try:
                rec, changed = _store(root, rel, store, hasher, old, taken)
            except OSError as exc:
                where = os.path.relpath(exc.filename, root) if exc.filename else rel
                raise UsageError(f"cannot read '{where}' to add '{rel}': {exc.strerror}. "
                                 f"Make it readable or move it out of '{rel}', then run "
                                 f"`mlmake add {rel}` again.") from None
            status = "added" if old is None else "updated" if changed else "unchanged"
            if old is None or changed or old.imported:
                lock.sources[rel] = SourceRecord(rec)  # a local copy of an import: local
            done.append(Added(rel, status, rec.hash, rec.files or 1, rec.size or 0, rec.kind))
        lock.write()
    except BaseException:
        store.disown(taken)
        raise
    return done


def _store(root: str, rel: str, store: Store, hasher: Hasher, old: SourceRecord | None,
           taken: Taken) -> tuple[OutRecord, bool]:
    """Hash `rel`, put it in the store unless its recorded version is already there, and
    link it back; (its out record, whether it differs from `old`). The links it makes are
    noted in `taken` (Store.disown undoes them).

    A tree is walked and read once (Hasher.scan: in forked workers), its files moved into
    the store in bulk (Store.adopt: one sync, then a chmod and a link per file), and the
    stat signature of the result recorded from what is known (Hasher.settle), so adding it
    again unchanged costs one stat per file."""
    full = os.path.join(root, rel)
    st = os.stat(full)
    if stat_mod.S_ISDIR(st.st_mode):
        manifest = old is not None and old.is_dir and store.has(old.hash + MANIFEST_SUFFIX)
        if manifest and old is not None and hasher.known(rel) == old.hash:
            return old.out, False  # the stat-signature fast path
        def same(digest: str) -> bool:  # recorded and stored already
            return manifest and old is not None and old.hash == digest

        scan, states = _scan_adopting(root, rel, store, hasher, same, taken)
        if same(scan.digest):
            assert old is not None
            rec = old.out
        else:
            rec = OutRecord(scan.digest, "dir", sum(s.st_size for s in scan.stats),
                            len(scan.entries))
            # last: a manifest names only complete objects
            store.add_manifest(scan.entries, scan.digest)
        hasher.settle(rel, scan.digest, [(e.path, state) for e, state
                                         in zip(scan.entries, states, strict=True)])
    else:
        oid = hasher.file(rel, st)
        if old is not None and old.hash == oid and store.has(oid):
            return old.out, False
        rec = OutRecord(oid, "file", st.st_size, executable=bool(st.st_mode & 0o111))
        store.adopt([(full, oid, rec.executable, st)], taken=taken)
    return rec, old is None or old.hash != rec.hash


def _scan_adopting(root: str, rel: str, store: Store, hasher: Hasher,
                   same: Callable[[str], bool], taken: Taken
                   ) -> tuple[Scan, list[FileState]]:
    """Hash the tree at `rel` and make its files their own objects (unless `same(digest)`
    says it is stored already); the state each file is left in.

    Where the store takes files by hard link, they are linked in batch by batch as the
    workers hash them, so that the linking overlaps the hashing; each link made is noted in
    `taken`. Elsewhere (copies, reflinks) they are stored once all are hashed."""
    full = os.path.join(root, rel)
    if not store.adopting(full):
        scan = hasher.scan(rel)
        if same(scan.digest):
            return scan, [(s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode) for s in scan.stats]
        return scan, store.adopt([(f"{full}/{e.path}", e.hash, e.executable, s)
                                  for e, s in zip(scan.entries, scan.stats, strict=True)],
                                 taken=taken)
    base = os.path.join(root, "")  # the tree's files' paths as the hasher gives them
    states: dict[str, FileState] = {}
    later: list[tuple[str, str, bool, os.stat_result]] = []  # objects stored already

    def each(batch: list[tuple[str, str, os.stat_result]]) -> None:
        files = [(base + p, d, bool(st.st_mode & 0o111), st) for p, d, st in batch]
        for f, state in zip(files, store.adopt_new(files, taken), strict=True):
            if state is None:
                later.append(f)
            else:
                states[f[0]] = state

    scan = hasher.scan(rel, each)
    for f, state in zip(later, store.adopt(later, sync=False), strict=True):
        states[f[0]] = state
    store.wait_shards()  # when no file needed a new object
    top = os.path.join(base, rel, "")
    return scan, [states[top + e.path] for e in scan.entries]


def _relpath(root: str, path: str) -> str:
    """`path` (absolute, or relative to the current directory) as a project path."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, root).replace(os.sep, "/")
    if rel == "." or rel.startswith("../") or rel == "..":
        raise UsageError(f"'{path}' is not inside the project {root}; to track data that "
                         "lives elsewhere, use `mlmake import URL PATH`.")
    if rel.split("/")[0] in (".git", ".mlmake"):
        raise UsageError(f"'{rel}' belongs to Git or mlmake and cannot be a data source.")
    return rel


def _check_not_out(rel: str, outs: list[str]) -> None:
    for out in outs:
        if covers(out, rel) and not is_glob(rel):
            raise UsageError(f"'{rel}' overlaps the out '{out}' of a target: outs are "
                             "versioned by the target that produces them. Track raw data "
                             "that no target produces.")


# -- status -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataChange:
    """A source whose work-tree content is not the recorded version: "changed" (with what
    changed) or "missing"."""

    path: str
    kind: str
    old: str
    new: str | None = None
    detail: str = ""
    imported: bool = False

    def describe(self) -> str:
        """One human line with the fix."""
        if self.kind == "missing":
            how = "`mlmake` or `mlmake pull` brings back the recorded version"
            return f"data {self.path} missing ({self.old[:8]} recorded): {how}"
        detail = f": {self.detail}" if self.detail else ""
        verb = f"mlmake update {self.path} for a new version from its origin, or " \
            if self.imported else ""
        return (f"data {self.path} changed{detail} — run {verb}mlmake add {self.path} to "
                "record it")

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "recorded": self.old, "now": self.new,
                "detail": self.detail, "message": self.describe()}


def changes(root: str, lock: Lock, hasher: Hasher, store: Store) -> list[DataChange]:
    """The sources whose work-tree content differs from the lock's record."""
    found = []
    for rel, rec in sorted(lock.sources.items()):
        now = hasher.path(rel)
        if now == rec.hash:
            continue
        name = shown(rel, rec)
        imported = rec.imported
        if now is None:
            found.append(DataChange(name, "missing", rec.hash, imported=imported))
            continue
        found.append(DataChange(name, "changed", rec.hash, now,
                                _what_changed(rel, rec, hasher, store), imported))
    return found


def _what_changed(rel: str, rec: SourceRecord, hasher: Hasher, store: Store) -> str:
    """`3 files added, 1 modified` for a directory whose recorded manifest is known."""
    if not rec.is_dir or not os.path.isdir(os.path.join(hasher.root, rel)):
        return "modified"
    try:
        before = store.manifest(rec.hash)
    except StoreError:
        before = None
    if before is None:
        return ""
    _, entries = hasher.tree(rel, manifest=True)
    old = {e.path: e.hash for e in before}
    new = {e.path: e.hash for e in entries}
    counts = [(len(new.keys() - old.keys()), "added"), (len(old.keys() - new.keys()), "removed"),
              (sum(1 for p in new.keys() & old.keys() if new[p] != old[p]), "modified")]
    parts = [f"{n} {'file' if n == 1 else 'files'} {what}" if not i else f"{n} {what}"
             for i, (n, what) in enumerate(c for c in counts if c[0])]
    return ", ".join(parts)


# -- bringing sources into a work tree ----------------------------------------------------------
class MissingSourceError(StoreError):
    """A source the build needs is in neither the work tree, the local cache nor the remote."""

    def __init__(self, path: str, rec: SourceRecord, remote: str | None) -> None:
        self.path = path
        where = f"the local cache or remote '{remote}'" if remote else \
            "the local cache (and no remote is configured)"
        fix = f"`mlmake update {path}` downloads what its origin holds now and records it" \
            if rec.imported else f"`mlmake add {path}` records the data you have"
        super().__init__(
            f"data source '{path}' ({rec.hash[:8]} recorded in Mlfile.lock) is not in the "
            f"work tree, {where}. Push it from a clone that has it (`mlmake push`), or put "
            f"the data there: {fix}. A build never downloads a source from its origin.")


Fetch = Callable[[list[tuple[str, SourceRecord]]], None]


def ensure(root: str, lock: Lock, store: Store, wanted: Callable[[str], bool] | None,
           fetch: Fetch | None, remote_name: str | None = None) -> list[str]:
    """Link the recorded version of every wanted source that is absent from the work tree,
    from the local store, else through `fetch` (the remote cache: verified downloads);
    MissingSourceError when neither has it. A source present in the work tree is left as
    it is (its content is what the targets' keys cover). Returns the paths restored."""
    todo = [(p, rec) for p, rec in sorted(lock.sources.items())
            if not os.path.lexists(os.path.join(root, p)) and (wanted is None or wanted(p))]
    lacking = [(p, rec) for p, rec in todo if _missing(store, rec)]
    if lacking and fetch is not None:
        fetch(lacking)
    for p, rec in todo:
        if _missing(store, rec):
            raise MissingSourceError(shown(p, rec), rec, remote_name)
    for p, rec in todo:
        store.restore(p, rec.out)
    return [p for p, _ in todo]


def _missing(store: Store, rec: SourceRecord) -> bool:
    try:
        return bool(store.missing(rec.out))
    except StoreError:
        return True


# -- the remote cache ---------------------------------------------------------------------------
def push(remote: Any, store: Store, recs: list[tuple[str, SourceRecord]], result: Any,
         progress: Any = None) -> None:
    """Upload the objects of source records; counts are added to `result` (a PushResult),
    sources the local store lacks to its `missing`."""
    oids: list[str] = []
    for path, rec in recs:
        try:
            need = store.record_oids(rec.out)
        except StoreError:
            need = []
        if not need or not all(store.has(o) for o in need):
            result.missing.append(path)
            continue
        oids += need
    if not oids:
        return
    moved = remote.push_objects(store, oids, progress)
    result.pushed += moved.objects
    result.nbytes += moved.nbytes
    result.present += moved.present
    result.replaced += moved.replaced


def fetch(remote: Any, store: Store, recs: list[tuple[str, SourceRecord]],
          progress: Any = None) -> tuple[int, int, int, list[str]]:
    """Download the objects of source records into the local store, each verified
    (CorruptRemoteObjectError refuses a bad one); (objects, bytes, present, paths missing)."""
    manifests = {rec.out.oid: path for path, rec in recs if rec.is_dir}
    remote.fetch_objects(store, manifests)
    missing: list[str] = []
    wanted, executable, owner = store.wanted([(p, rec.out) for p, rec in recs], missing)
    moved = remote.fetch_objects(store, wanted, executable, progress)
    missing += sorted({owner[o] for o in moved.missing})
    return moved.objects, moved.nbytes, moved.present, missing


def pull(remote: Any, store: Store, recs: list[tuple[str, SourceRecord]], result: Any,
         progress: Any = None) -> None:
    """`fetch` with the counts added to `result` (a PullResult)."""
    if not recs:
        return
    objects, nbytes, present, missing = fetch(remote, store, recs, progress)
    result.fetched += objects
    result.nbytes += nbytes
    result.present += present
    result.missing += [m for m in missing if m not in result.missing]


# -- imports ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Imported:
    """What `import_url` or `update` did: "imported", "updated" or "unchanged"."""

    path: str
    url: str
    status: str
    hash: str
    version: str
    files: int
    size: int


def import_url(root: str, lock_path: str, store: Store, url: str, path: str,
               options: dict[str, Any], outs: Iterable[str]) -> Imported:
    """Download `url` (a local path outside the project or any fsspec URL) to the project
    path `path`, store it and record it with the URL and the version seen."""
    rel = _relpath(root, path)
    _check_not_out(rel, list(outs))
    url = _absolute(url)
    if _inside(root, url):
        raise UsageError(f"'{url}' is inside the project: track it with `mlmake add`.")
    lock = Lock.read(lock_path)
    old = lock.sources.get(rel)
    rec = _download(root, store, url, rel, options, None)
    lock.sources[rel] = rec
    lock.write()
    status = "imported" if old is None else "updated" if old.hash != rec.hash \
        else "unchanged"
    return _imported(rel, rec, status)


def update(root: str, lock_path: str, store: Store, targets: Iterable[str]) -> list[Imported]:
    """Ask each imported source's origin for its version; download and record a new one."""
    lock = Lock.read(lock_path)
    rels = [_relpath(root, p) for p in targets] or \
        [p for p, r in sorted(lock.sources.items()) if r.imported]
    done = []
    for rel in rels:
        old = lock.sources.get(rel)
        if old is None or old.url is None:
            what = "is not a data source" if old is None else "was added, not imported"
            raise UsageError(f"'{rel}' {what}: only `mlmake import`ed data has an origin to "
                             "update from. Record local edits with `mlmake add`.")
        rec = _download(root, store, old.url, rel, dict(old.options), old)
        status = "updated" if rec.hash != old.hash else "unchanged"
        if rec != old:
            lock.sources[rel] = rec
        done.append(_imported(rel, rec, status))
    lock.write()
    return done


def _imported(rel: str, rec: SourceRecord, status: str) -> Imported:
    return Imported(shown(rel, rec), rec.url or "", status, rec.hash, rec.version or "",
                    rec.out.files or 1, rec.out.size or 0)


def _absolute(url: str) -> str:
    if "://" in url:
        return url
    return os.path.abspath(os.path.expanduser(url))


def _inside(root: str, url: str) -> bool:
    if "://" in url and not url.startswith("file://"):
        return False
    full = os.path.abspath(url.removeprefix("file://"))
    return full == root or full.startswith(root.rstrip("/") + "/")


def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    import fsspec

    from mlmake.remotefs import scrub

    try:
        return fsspec.core.url_to_fs(url, **options)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise RemoteError(f"cannot read {url}: its scheme needs a package that is not "
                          f"installed ({scrub(str(exc))}).") from None
    except (ValueError, TypeError) as exc:
        raise RemoteError(f"cannot open {url}: {scrub(str(exc))}. Check its options.") \
            from None


def _version(fs: Any, path: str) -> str | None:
    """The origin's version of `path` without downloading it: a version id or ETag (for a
    directory, a digest of its files' ETags), None where the filesystem has neither."""
    from mlmake.hashing import hash_bytes

    def tag(info: dict[str, Any]) -> str | None:
        for k in ("VersionId", "version_id", "ETag", "etag"):
            if info.get(k):
                return str(info[k]).strip('"')
        return None

    info = fs.info(path)
    if info.get("type") != "directory":
        return tag(info)
    found = fs.find(path, detail=True)
    tags = []
    for name, i in sorted(found.items()):
        t = tag(i)
        if t is None:
            return None
        tags.append(f"{name[len(path):]}\0{t}")
    return "tree:" + hash_bytes("\n".join(tags).encode())


def _download(root: str, store: Store, url: str, rel: str, options: dict[str, Any],
              old: SourceRecord | None) -> SourceRecord:
    """Fetch `url` into the store and link it at `rel`; its source record. Nothing is
    downloaded when the origin's version is the recorded one."""
    from mlmake.remotefs import scrub, transport_errors

    fs, fpath = _filesystem(url, options)
    errors = transport_errors()
    try:
        version = _version(fs, fpath)
    except FileNotFoundError:
        raise RemoteError(f"{url} does not exist (or cannot be seen with these "
                          "credentials).") from None
    except errors as exc:
        raise RemoteError(f"cannot read {url}: {scrub(str(exc), options.items())}") from None
    if old is not None and version is not None and old.version == version \
            and not _missing(store, old):
        if not os.path.lexists(os.path.join(root, rel)):
            store.restore(rel, old.out)
        return old
    staging = os.path.join(os.path.dirname(store.path), "tmp", f"import-{os.getpid()}")
    remove_path(staging)
    os.makedirs(staging, exist_ok=True)
    try:
        local = os.path.join(staging, "data")
        try:
            if fs.isdir(fpath):
                fs.get(fpath.rstrip("/") + "/", local, recursive=True)
                os.makedirs(local, exist_ok=True)
            else:
                fs.get(fpath, local)
        except errors as exc:
            raise RemoteError(f"cannot download {url}: {scrub(str(exc), options.items())}") \
                from None
        out = _keep(staging, store)
    finally:
        remove_path(staging)
    rec = SourceRecord(out, url, version or out.hash, tuple(sorted(options.items())))
    if old is not None and old.out == out and os.path.lexists(os.path.join(root, rel)):
        return rec
    store.restore(rel, out)
    return rec


def _keep(staging: str, store: Store) -> OutRecord:
    """Move the downloaded `staging/data` into the store (hard links where possible)."""
    hasher = Hasher(staging, StatCache(None))
    full = os.path.join(staging, "data")
    if os.path.isdir(full):
        digest, entries = hasher.tree("data", manifest=True)
        size = sum(os.path.getsize(os.path.join(full, e.path)) for e in entries)
        store.add_files([(os.path.join(full, e.path), e.hash, e.executable)
                         for e in entries])
        store.add_manifest(entries)
        return OutRecord(digest, "dir", size, len(entries))
    st = os.stat(full)
    oid = hasher.file("data", st)
    store.add_file(full, oid, bool(st.st_mode & 0o111))
    return OutRecord(oid, "file", st.st_size, executable=bool(st.st_mode & 0o111))


__all__ = ["Added", "DataChange", "Imported", "MissingSourceError", "add",
           "changes", "covers", "ensure", "fetch", "import_url", "out_records", "paths",
           "pull", "push", "records", "shown", "source_records", "update", "versions"]
