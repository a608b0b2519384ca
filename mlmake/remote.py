"""A remote cache: objects and run-cache entries on a directory or any fsspec filesystem.

Layout under the remote's URL (object ids are the local store's, `.dir` manifests included):

    objects/ab/cdef…        one object per file ("loose")
    packs/<id>.pack         many small objects back to back; <id> hashes the pack's bytes
    packs/<id>.idx          JSON [[oid, offset, size], …]; written after its pack, so an index
                            always describes a complete pack
    runcache/ab/cdef…       run-cache entries, byte for byte as in .mlmake/runcache/

Invariants a reader could break:
- Nothing partial is ever visible: on filesystems that rename, every file is written under a
  temporary name in its final directory and renamed; on object stores (S3, GCS, Azure) one PUT
  (or a multipart upload, also invisible until complete) writes it. Names are content
  addressed, so two clones writing one name at once write the same bytes.
- A run-cache entry is uploaded only after every object it needs is on the remote.
- Every object read from the remote is hashed before it enters the local store; one that does
  not match its id is refused (CorruptRemoteObjectError) and never stored.
- Credentials come from the environment or the filesystem's own configuration; no message
  built here contains an option value, a URL's user:password, or a secret from the environment.

Many small objects go up as packs rather than one request each: an S3 request costs the same
for 100 bytes as for 100 KiB, and a shared directory pays a file creation per object.
"""

from __future__ import annotations

import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol
from collections.abc import Callable, Iterable

from mlmake import remotefs
from mlmake.atomic import atomic_write, temp_name
from mlmake.errors import RemoteError
from mlmake.hashing import Entry, hash_bytes, hash_file, tree_digest
from mlmake.model import MANIFEST_SUFFIX
from mlmake.remotefs import default_jobs, scrub, scrub_url, unlink

__all__ = ["CorruptRemoteObjectError", "Moved", "NullProgress", "Progress", "Remote",
           "default_jobs", "intact", "scrub", "scrub_url"]

PACK_FORMAT = 1
SMALL_OBJECT = 256 << 10   # objects up to this size may go into packs
PACK_MIN = 32              # fewer small objects than this go up loose
PACK_BYTES = 8 << 20       # a pack is closed at this size ...
PACK_OBJECTS = 4096        # ... or this many objects
RANGE_GAP = 256 << 10      # packed objects closer than this are read in one ranged request
RANGE_MAX = 32 << 20
HEAD_MAX = 16              # up to this many existence checks are asked one by one
_HEX = re.compile(r"[0-9a-f]{32}")


class CorruptRemoteObjectError(RemoteError):
    """Objects read from the remote do not hash to their ids; none of them was stored."""

    def __init__(self, remote: str, bad: list[tuple[str, str, str]]) -> None:
        self.remote = remote
        self.objects = [oid for oid, _, _ in bad]
        self.labels = [label for _, label, _ in bad]
        shown = "; ".join(f"'{label}' (object {oid[:12]}…, stored at {where})"
                          for oid, label, where in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        super().__init__(
            f"remote '{remote}' holds a corrupt copy of {shown}{more}: it does not match its "
            "hash, so it was refused and nothing was linked. Rebuild it (`mlmake -B TARGET`) "
            "and `mlmake push`, which replaces the corrupt copy, or run `mlmake doctor` in a "
            "clone that has a good copy.")


class Progress(Protocol):
    """Receives transfer progress (the CLI draws a bar; the engine never prints)."""

    def start(self, label: str, files: int, nbytes: int) -> None: ...

    def advance(self, files: int, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Ignores progress."""

    def start(self, label: str, files: int, nbytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class Moved:
    """What one transfer did: objects and bytes moved, objects already in place, failures."""

    objects: int = 0
    nbytes: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)  # oids the source does not have
    replaced: list[str] = field(default_factory=list)  # corrupt remote copies re-uploaded


# -- the remote ---------------------------------------------------------------------------------
class Remote:
    """One remote cache: existence checks, pushes and fetches of objects, run-cache entries.

    Thread-safe: builds call it from worker threads. `jobs` bounds parallel requests.
    """

    def __init__(self, name: str, url: str, options: tuple[tuple[str, Any], ...] = (),
                 root: str = ".", jobs: int | None = None, quick: bool = False,
                 index_dir: str | None = None) -> None:
        self.name = name
        self.url = url
        self.options = options
        self.display = scrub_url(url)
        self.jobs = jobs or default_jobs(url)
        self.index_dir = index_dir
        self._project_root = root
        self._quick = quick
        self._backend: Any = None
        self._lock = threading.Lock()
        self._index: dict[str, tuple[str, int, int]] | None = None  # oid → (pack, off, size)
        self._packs_seen: set[str] = set()
        self._known: set[str] = set()  # objects seen on the remote
        self._pool: ThreadPoolExecutor | None = None

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def backend(self) -> Any:
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = remotefs.connect(self.name, self.url, self.options,
                                                     self._project_root, self._quick)
        return self._backend

    def errors(self, action: str) -> _Errors:
        """A context that turns the filesystem's exceptions into one scrubbed RemoteError."""
        return _Errors(self, action)

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="mlmake-remote")
            pool = self._pool
        return list(pool.map(fn, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def check(self) -> None:
        """Raise RemoteError when the remote cannot be reached (a quick probe); a directory
        remote also drops what uploads killed mid-way left in its staging directory."""
        with self.errors("reach"):
            self.backend.probe()
            sweep = getattr(self.backend, "sweep", None)
            if sweep is not None:
                sweep()

    # -- existence --------------------------------------------------------------------------
    def packed(self, refresh: bool = False) -> dict[str, tuple[str, int, int]]:
        """oid → (pack id, offset, size) for every object in a complete pack."""
        with self.errors("list the packs of"):
            if self._index is not None and not refresh:
                return self._index
            names = set(self.backend.names("packs"))
            ids = sorted(n[:-4] for n in names if n.endswith(".idx") and n[:-4] + ".pack"
                         in names and n[:-4] not in self._packs_seen
                         and _HEX.fullmatch(n[:-4]))
            loaded = self._map(self._load_index, ids)
            with self._lock:
                index = dict(self._index or {})
                for pid, entries in zip(ids, loaded):
                    self._packs_seen.add(pid)
                    for oid, off, size in entries:
                        index.setdefault(oid, (pid, off, size))
                self._index = index
            return index

    def _load_index(self, pid: str) -> list[tuple[str, int, int]]:
        cached = os.path.join(self.index_dir, pid + ".idx") if self.index_dir else None
        data = None
        if cached and os.path.exists(cached):
            with open(cached, "rb") as fh:
                data = fh.read()
        if data is None:
            data = self.backend.read(f"packs/{pid}.idx")
        try:
            raw = json.loads(data)
            entries = [(str(o), int(off), int(n)) for o, off, n in raw["objects"]]
        except (ValueError, KeyError, TypeError):
            return []  # an unreadable index hides its pack; its objects count as absent
        if cached and not os.path.exists(cached):
            os.makedirs(self.index_dir, exist_ok=True)  # type: ignore[arg-type]
            atomic_write(cached, data, durable=True)
        return entries

    def present(self, oids: Iterable[str], area: str = "objects") -> set[str]:
        """Which of `oids` the remote holds; batched: packs by their indexes, loose files by
        listing their `ab/` prefixes (or the whole area when that is cheaper), and only a
        handful by one request each."""
        want = set(oids)
        if not want:
            return set()
        found = want & self._known  # mlmake never deletes from a remote
        want -= found
        if area == "objects" and want:
            index = self.packed()
            found |= {o for o in want if o in index}
            want -= found
        if not want:
            return found
        with self.errors("list"):
            if len(want) <= HEAD_MAX:
                items = sorted(want)
                hits = self._map(lambda o: self.backend.exists(f"{area}/{o[:2]}/{o[2:]}"),
                                 items)
                listed = {o for o, hit in zip(items, hits) if hit}
            else:
                listed = self._listed(area, want)
        found |= want & listed
        if area == "objects":
            with self._lock:
                self._known |= found
        return found

    def _listed(self, area: str, want: set[str]) -> set[str]:
        """Names under `area` (joined back into ids) in the prefixes of `want`."""
        prefixes = sorted({o[:2] for o in want})
        first = self.backend.names(f"{area}/{prefixes[0]}")
        listed = {prefixes[0] + n for n in first}
        if len(first) * 256 <= 1000 * len(prefixes):  # one whole listing takes fewer pages
            return listed | {n.replace("/", "") for n in self.backend.names(area)}
        for p, names in zip(prefixes[1:], self._map(
                lambda p: self.backend.names(f"{area}/{p}"), prefixes[1:])):
            listed |= {p + n for n in names}
        return listed

    # -- objects ----------------------------------------------------------------------------
    def push_objects(self, store: Any, oids: Iterable[str],
                     progress: Progress | None = None) -> Moved:
        """Upload the objects of `oids` the remote lacks (those the local store lacks are
        reported in `missing`). Small objects travel in packs when there are many."""
        progress = progress or NullProgress()
        moved = Moved()
        local: dict[str, int] = {}
        for oid in sorted(set(oids)):
            try:
                local[oid] = os.stat(store.object_path(oid)).st_size
            except FileNotFoundError:
                moved.missing.append(oid)
        there = self.present(local)
        for oid in sorted(there & self.suspects()):
            if not self.intact_copy(oid):  # a pull found it corrupt: replace it now
                there.discard(oid)
                moved.replaced.append(oid)
        moved.present = len(there)
        todo = {o: n for o, n in local.items() if o not in there}
        if not todo:
            return moved
        small = [o for o, n in todo.items() if n <= SMALL_OBJECT]
        packs: list[list[str]] = []
        if len(small) >= PACK_MIN and not moved.replaced:
            packs = _group(small, todo)
            packed = set(small)
            loose = [o for o in todo if o not in packed]
        else:
            loose = list(todo)
        progress.start(f"pushing to {self.name}", len(todo), sum(todo.values()))

        def send_loose(oid: str) -> None:
            self.backend.upload(f"objects/{oid[:2]}/{oid[2:]}", store.object_path(oid))
            progress.advance(1, todo[oid])

        def send_pack(members: list[str]) -> None:
            blob = bytearray()
            entries: list[tuple[str, int, int]] = []
            for oid in members:
                with open(store.object_path(oid), "rb") as fh:
                    data = fh.read()
                entries.append((oid, len(blob), len(data)))
                blob += data
            pid = hash_bytes(bytes(blob))
            self.backend.write(f"packs/{pid}.pack", bytes(blob))
            idx = json.dumps({"format": PACK_FORMAT, "objects": entries},
                             separators=(",", ":")).encode()
            self.backend.write(f"packs/{pid}.idx", idx)  # the index last: the pack is whole
            with self._lock:
                if self._index is not None:
                    for oid, off, n in entries:
                        self._index.setdefault(oid, (pid, off, n))
            progress.advance(len(members), len(blob))

        try:
            with self.errors("upload to"):
                jobs: list[Callable[[], None]] = [partial(send_pack, m) for m in packs]
                jobs += [partial(send_loose, o) for o in loose]
                self._map(lambda f: f(), jobs)
        finally:
            progress.finish()
        moved.objects = len(todo)
        moved.nbytes = sum(todo.values())
        with self._lock:
            self._known |= set(todo)
        if moved.replaced:
            self._forget_suspects(moved.replaced)
        return moved

    # -- corrupt copies -----------------------------------------------------------------------
    def _suspects_path(self) -> str | None:
        return os.path.join(self.index_dir, "corrupt") if self.index_dir else None

    def suspects(self) -> set[str]:
        """Objects a fetch from this remote found corrupt, here or in any clone (which
        leaves a marker `corrupt/<oid>` on the remote): the next push that has a good copy
        replaces them. One listing per push."""
        path = self._suspects_path()
        found: set[str] = set()
        try:
            with open(path or "", encoding="utf-8") as fh:
                found = {line.strip() for line in fh if line.strip()}
        except OSError:
            pass
        try:
            found |= {n for n in self.backend.names("corrupt") if "/" not in n}
        except FileNotFoundError:
            pass
        return found

    def note_suspects(self, oids: Iterable[str]) -> None:
        oids = set(oids)
        path = self._suspects_path()
        if path is not None:
            with self._lock:
                now = self.suspects() | oids
                os.makedirs(os.path.dirname(path), exist_ok=True)
                atomic_write(path, "".join(f"{o}\n" for o in sorted(now)))
        for oid in oids:  # so that a clone with a good copy replaces it on its next push
            try:
                self.backend.write(f"corrupt/{oid}", b"")
            except OSError:
                pass

    def _forget_suspects(self, oids: Iterable[str]) -> None:
        oids = set(oids)
        for oid in oids:
            self.backend.remove(f"corrupt/{oid}")
        path = self._suspects_path()
        if path is not None and os.path.exists(path):
            with self._lock:
                atomic_write(path, "".join(f"{o}\n" for o in sorted(self.suspects() - oids)))

    def intact_copy(self, oid: str) -> bool:
        """Whether the remote's copy of `oid` (loose, else packed) hashes to its name."""
        rel = f"objects/{oid[:2]}/{oid[2:]}"
        try:
            if self.backend.exists(rel):
                return intact(oid, self.backend.read(rel))
            where = self.packed().get(oid)
            if where is None:
                return False
            pid, off, size = where
            return intact(oid, self.backend.read(f"packs/{pid}.pack", off, off + size))
        except FileNotFoundError:
            return False

    def fetch_objects(self, store: Any, wanted: dict[str, str],
                      executable: set[str] | frozenset[str] = frozenset(),
                      progress: Progress | None = None) -> Moved:
        """Download the objects of `wanted` (oid → what it is, for messages) that the local
        store lacks. Each is hashed before it is stored; a mismatch stores nothing of it and
        raises CorruptRemoteObjectError once every other object is in. Objects the remote
        does not have are listed in `missing`."""
        progress = progress or NullProgress()
        moved = Moved()
        todo = sorted(o for o in wanted if not store.has(o))
        moved.present = len(wanted) - len(todo)
        if not todo:
            return moved
        index = self.packed()
        by_pack: dict[str, list[tuple[str, int, int]]] = {}
        loose = []
        for oid in todo:
            if oid in index:
                pid, off, size = index[oid]
                by_pack.setdefault(pid, []).append((oid, off, size))
            else:
                loose.append(oid)
        ranges = [(pid, chunk) for pid, members in by_pack.items()
                  for chunk in _coalesce(members)]
        bad: list[tuple[str, str, str]] = []
        rescue: list[tuple[str, str]] = []  # corrupt in a pack: try the loose copy a push made
        lock = threading.Lock()
        progress.start(f"fetching from {self.name}", len(todo),
                       sum(n for ms in by_pack.values() for _, _, n in ms))

        def note(n_files: int, n_bytes: int) -> None:
            with lock:
                moved.objects += n_files
                moved.nbytes += n_bytes
            progress.advance(n_files, n_bytes)

        def get_range(job: tuple[str, list[tuple[str, int, int]]]) -> None:
            pid, members = job
            start, end = members[0][1], members[-1][1] + members[-1][2]
            try:
                data = self.backend.read(f"packs/{pid}.pack", start, end)
            except FileNotFoundError:  # the pack went away under its index
                with lock:
                    moved.missing += [oid for oid, _, _ in members]
                return
            got = 0
            for oid, off, size in members:
                piece = data[off - start:off - start + size]
                if len(piece) != size or not intact(oid, piece):
                    rescue.append((oid, f"packs/{pid}.pack"))  # a loose copy may replace it
                    continue
                store.add_bytes(oid, piece, executable=oid in executable)
                got += size
            note(len(members), got)

        def get_loose(oid: str) -> None:
            rel = f"objects/{oid[:2]}/{oid[2:]}"
            dest = store.object_path(oid)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = temp_name(dest)
            try:
                try:
                    self.backend.download(rel, tmp)
                except FileNotFoundError:
                    with lock:
                        moved.missing.append(oid)
                    return
                if not (intact(oid, _read(tmp)) if oid.endswith(MANIFEST_SUFFIX)
                        else hash_file(tmp) == oid):
                    with lock:
                        bad.append((oid, wanted[oid], rel))
                    return
                size = os.path.getsize(tmp)
                store.add_file(tmp, oid, oid in executable, move=True)
            finally:
                unlink(tmp)
            note(1, size)

        try:
            with self.errors("download from"):
                jobs: list[Callable[[], None]] = [partial(get_range, r) for r in ranges]
                jobs += [partial(get_loose, o) for o in loose]
                self._map(lambda f: f(), jobs)
                for oid, where in rescue:
                    n_missing, n_bad = len(moved.missing), len(bad)
                    get_loose(oid)
                    if len(moved.missing) > n_missing or len(bad) > n_bad:
                        del moved.missing[n_missing:]
                        del bad[n_bad:]
                        bad.append((oid, wanted[oid], where))
        finally:
            progress.finish()
        if bad:
            self.note_suspects(oid for oid, _, _ in bad)
            raise CorruptRemoteObjectError(self.name, sorted(bad, key=lambda b: b[1]))
        return moved

    # -- run cache --------------------------------------------------------------------------
    def runcache_get(self, key: str) -> bytes | None:
        """The raw run-cache entry for `key`, or None when the remote has none."""
        with self.errors("read the run cache of"):
            try:
                return self.backend.read(f"runcache/{key[:2]}/{key[2:]}")
            except FileNotFoundError:
                return None

    def runcache_get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = sorted(set(keys))
        with self.errors("read the run cache of"):
            def one(k: str) -> bytes | None:
                try:
                    return self.backend.read(f"runcache/{k[:2]}/{k[2:]}")
                except FileNotFoundError:
                    return None
            got = self._map(one, keys)
        return {k: v for k, v in zip(keys, got) if v is not None}

    def runcache_put(self, entries: dict[str, bytes]) -> int:
        """Upload run-cache entries the remote lacks (their objects must be there already);
        returns how many were uploaded."""
        there = self.present(entries, area="runcache")
        todo = sorted(k for k in entries if k not in there)
        with self.errors("upload to"):
            self._map(lambda k: self.backend.write(f"runcache/{k[:2]}/{k[2:]}", entries[k]),
                      todo)
        return len(todo)


class _Errors:
    """Maps a filesystem's exceptions (OSError, botocore's, aiohttp's) to RemoteError."""

    def __init__(self, remote: Remote, action: str) -> None:
        self.remote = remote
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, (RemoteError, KeyboardInterrupt)):
            return
        if not isinstance(exc, remotefs.transport_errors()):
            return
        raise RemoteError(describe_failure(self.remote, self.action, exc)) from None


def describe_failure(remote: Remote, action: str, exc: BaseException) -> str:
    """One scrubbed sentence saying why `action` on the remote failed and what to do."""
    r = remote
    text = scrub(str(exc) or type(exc).__name__, r.options)
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text \
            or "credentials" in text.lower():
        hint = ("check the credentials in your environment or profile "
                "(AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), not in the Mlfile")
    elif isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        hint = f"check [remote.{r.name}] url"
    else:
        hint = "check the network and the remote's url and endpoint"
    return (f"cannot {action} remote '{r.name}' ({r.display}): {text}. "
            f"{hint[0].upper()}{hint[1:]}.")


def intact(oid: str, data: bytes) -> bool:
    """True when `data` is object `oid`: its xxh3-128, or for a directory manifest the tree
    digest of the entries it lists."""
    if not oid.endswith(MANIFEST_SUFFIX):
        return hash_bytes(data) == oid
    try:
        entries = [Entry(str(p), str(h), bool(x)) for p, h, x in json.loads(data)]
    except (ValueError, TypeError):
        return False
    return tree_digest(entries) == oid[:-len(MANIFEST_SUFFIX)]


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _group(small: list[str], sizes: dict[str, int]) -> list[list[str]]:
    """Small objects in oid order cut into packs (deterministic: two clones pushing the same
    objects build the same packs)."""
    packs: list[list[str]] = [[]]
    total = 0
    for oid in sorted(small):
        if packs[-1] and (total + sizes[oid] > PACK_BYTES or len(packs[-1]) >= PACK_OBJECTS):
            packs.append([])
            total = 0
        packs[-1].append(oid)
        total += sizes[oid]
    return packs


def _coalesce(members: list[tuple[str, int, int]]) -> list[list[tuple[str, int, int]]]:
    """Packed objects (oid, offset, size) grouped into ranges worth one request each."""
    out: list[list[tuple[str, int, int]]] = []
    for m in sorted(members, key=lambda m: m[1]):
        if out:
            last = out[-1]
            start, end = last[0][1], last[-1][1] + last[-1][2]
            if m[1] - end <= RANGE_GAP and m[1] + m[2] - start <= RANGE_MAX:
                last.append(m)
                continue
        out.append([m])
    return out
