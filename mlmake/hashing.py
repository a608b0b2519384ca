"""Content hashes (xxh3-128) of bytes, files, trees and target keys, with a stat cache.

Every digest here is part of the on-disk contract (lock files, caches, remotes): the tagged
structures below carry a format version and are pinned by tests, so a change fails loudly.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import glob as globmod
import json
import marshal
import os
import shutil
import stat as stat_mod
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import xxhash

from mlmake.errors import UsageError
from mlmake.statcache import RACY_NS, StatCache

KEY_FORMAT = 1
TREE_FORMAT = 1
_CHUNK = 256 << 10  # within a core's L2 cache: the hash reads what the read just wrote
_PARALLEL_BYTES = 32 << 20
_FORK_FILES = 1024  # a tree this large is statted and hashed in forked workers (Hasher.scan)
_local = threading.local()


class Entry(NamedTuple):
    """One file of a tree: path relative to the tree, content hash, executable bit."""

    path: str
    hash: str
    executable: bool


def hash_bytes(data: bytes) -> str:
    """xxh3-128 of `data` as 32 hex digits."""
    return xxhash.xxh3_128_hexdigest(data)


def hash_file(path: str) -> str:
    """xxh3-128 of a file's content, read in 256 KiB chunks into a buffer kept per thread
    (a fresh buffer per file costs more than hashing a 100 KB file: its pages are
    faulted in, then unmapped)."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(_CHUNK)
    view = memoryview(buf)
    h = xxhash.xxh3_128()
    fd = os.open(path, os.O_RDONLY)
    try:
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
    except OSError as exc:  # name the file, as a failed open does
        raise type(exc)(exc.errno, exc.strerror, path) from None
    finally:
        os.close(fd)
    return h.hexdigest()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: work over many files allocates tuples by the
    hundred thousand, and each full collection would walk them all again (a quarter of the
    time `add` of 10,000 files took). Nothing such work makes is a cycle; refcounts free it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _hash_files(paths: list[str]) -> list[str]:
    return [hash_file(p) for p in paths]


def hash_parallel(paths: list[str],
                  each: Callable[[list[int], list[str]], None] | None = None
                  ) -> list[str] | None:
    """hash_file of many files in forked worker processes, one per CPU (forked_map); None
    where forking is not safe. A file a worker could not read is read here (raising
    what reading it raises). `each(indices, digests)` sees the digests as they come."""
    from mlmake.forked import forked_map

    def got(indices: list[int], found: list[Any]) -> None:
        done = [(i, d) for i, d in zip(indices, found, strict=True) if type(d) is str]
        if each is not None and done:
            each([i for i, _ in done], [d for _, d in done])

    found = forked_map(hash_file, paths, got)
    if found is None:
        return None
    redo = [i for i, d in enumerate(found) if type(d) is not str]
    for i in redo:
        found[i] = hash_file(paths[i])
    if each is not None and redo:
        each(redo, [found[i] for i in redo])
    return found


def tree_digest(entries: Iterable[Entry]) -> str:
    """Hash of a directory manifest: sorted (path, hash, exec) lines under a versioned tag."""
    lines = "".join([f"{p}\x00{h}\x00{'x' if x else '-'}\n" for p, h, x in sorted(entries)])
    return hash_bytes(f"mlmake/tree\x00{TREE_FORMAT}\n{lines}".encode())


def glob_digest(files: dict[str, str]) -> str:
    """Hash of the files a glob matched: their project paths and content hashes."""
    parts = [b"mlmake/glob\x00%d\n" % TREE_FORMAT]
    for path in sorted(files):
        parts.append(f"{path}\x00{files[path]}\n".encode())
    return hash_bytes(b"".join(parts))


def canonical(value: Any) -> str:
    """Deterministic JSON of a value (sorted keys, no spaces), the input of every key hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def target_key(cmd: str, wdir: str, deps: dict[str, str], params: dict[str, Any],
               env: str | None, outs: Iterable[str]) -> str:
    """The key of a target: what it runs and every input that can change its outs."""
    payload = ["mlmake/target-key", KEY_FORMAT, cmd, wdir, sorted(deps.items()),
               sorted((k, canonical(v)) for k, v in params.items()), env or "", sorted(outs)]
    return hash_bytes(canonical(payload).encode())


def is_glob(pattern: str) -> bool:
    """True when a dep pattern has glob magic."""
    return globmod.has_magic(pattern)


_FIND = shutil.which("find") if sys.platform.startswith("linux") else None
_FIND_FORMAT = "%H\\0%P\\0%i\\0%s\\0%T@\\0%m\\0%y\\n"


def _split_find(out: bytes, rels: list[str]) -> dict[str, str] | None:
    """Cut one find output into the runs of its starting points (printed in order)."""
    bounds: list[int] = []
    pos = 0
    for rel in rels:
        head = f"./{rel}".encode() + b"\x00\x00"
        if not bounds:
            i = 0 if out.startswith(head) else -1
        else:
            i = out.find(b"\n" + head, pos)
            i = i + 1 if i >= 0 else -1
        if i < 0:
            return None
        bounds.append(i)
        pos = i
    bounds.append(len(out))
    return {rel: "find:" + hash_bytes(out[bounds[k]:bounds[k + 1]])
            for k, rel in enumerate(rels)}


def _py_signature(files: list[tuple[str, os.stat_result]]) -> str:
    """The stat signature of a walked tree: its files' paths, inodes, sizes, mtimes and
    modes (Hasher.settle computes the same from FileStates)."""
    return "py:" + hash_bytes(marshal.dumps(
        [(p, s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode) for p, s in files]))


@functools.cache
def _mtime_ns_at_14() -> bool:
    """Whether os.stat_result can be built from its ten fields, its float times, st_atime_ns
    and st_mtime_ns, in that order, as CPython lays it out (else: by name, as pickle does,
    three times slower)."""
    return os.stat_result((*range(10), 0.0, 0.0, 0.0, 0, 12345)).st_mtime_ns == 12345


class Scan(NamedTuple):
    """A directory tree as hashed: its digest, its sorted entries and each entry's stat."""

    digest: str
    entries: list[Entry]
    stats: list[os.stat_result]


FileState = tuple[int, int, int, int]  # (inode, size, mtime_ns, st_mode) of a file
Hashed = Callable[[list[tuple[str, str, os.stat_result]]], None]  # (path, digest, stat)s


class Hasher:
    """Hashes project paths (files, trees, globs) through a StatCache.

    `forked`: new files totalling 32 MiB or more are hashed by `hash_parallel` (forked
    workers) when the process is single-threaded, as `mlmake add` is; else by threads."""

    def __init__(self, root: str, cache: StatCache | None = None, forked: bool = False) -> None:
        self.root = root
        self.cache = cache or StatCache(None)
        self.now_ns = time.time_ns()
        self.forked = forked
        self._sigs: dict[str, str] = {}

    def prefetch(self, rels: Iterable[str]) -> None:
        """Compute the stat signatures of several trees at once (one `find` for all), so a
        check over many directory deps costs about one stat per file, done in C."""
        dirs = [r for r in dict.fromkeys(rels)
                if r not in self._sigs and os.path.isdir(self.abspath(r))]
        if len(dirs) > 1:
            self._sigs.update(self.signatures(dirs))

    def signatures(self, rels: list[str]) -> dict[str, str]:
        """Stat signatures of directory trees: names, inodes, sizes, mtimes and modes of
        everything below them, as GNU find prints them. Any change a content hash could see
        changes the signature; {} where find is not available (callers fall back). Many
        trees are split over one find process per CPU."""
        if _FIND is None or not rels:
            return {}
        import tempfile

        nproc = min(len(rels), os.cpu_count() or 1, 4) if len(rels) >= 8 else 1
        chunks = [rels[i::nproc] for i in range(nproc)]
        running = []
        try:
            for chunk in chunks:
                buf = tempfile.TemporaryFile()  # a file, not a pipe: no read loop
                proc = subprocess.Popen(
                    [_FIND, "-L", *(f"./{r}" for r in chunk), "-printf", _FIND_FORMAT],
                    cwd=self.root, stdout=buf, stderr=subprocess.DEVNULL)
                running.append((chunk, proc, buf))
            result: dict[str, str] = {}
            for chunk, proc, buf in running:
                if proc.wait() != 0:
                    return {}  # a loop or a vanished path: walk in Python instead
                buf.seek(0)
                part = _split_find(buf.read(), chunk)
                if part is None:
                    return {}
                result.update(part)
            return result
        except OSError:
            return {}
        finally:
            for _, proc, buf in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                buf.close()

    def abspath(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def file(self, rel: str, st: os.stat_result | None = None) -> str:
        """Content hash of the file at project path `rel`; a pipe, socket or device (whose
        read may never end) is refused."""
        st = st or os.stat(self.abspath(rel))
        if not stat_mod.S_ISREG(st.st_mode):
            raise UsageError(f"'{rel}' is a pipe, socket or device, not a file: mlmake hashes "
                             "files and directories only. Name a file or a directory instead.")
        digest = self.cache.get(rel, st, bulk=False)
        if digest is None:
            digest = hash_file(self.abspath(rel))
            self.cache.put(rel, st, digest, self.now_ns, bulk=False)
        return digest

    def path(self, rel: str) -> str | None:
        """Hash of a file or a directory tree at `rel`, or None when nothing is there."""
        try:
            st = os.stat(self.abspath(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat_mod.S_ISDIR(st.st_mode):
            return self.tree(rel)[0]
        return self.file(rel, st)

    def tree(self, rel: str, manifest: bool = False) -> tuple[str, list[Entry]]:
        """Hash of the directory at `rel`; with `manifest`, also its sorted entries.

        Fast path: the stat signature of the whole tree is compared with the cached one, so
        an unchanged tree costs one stat per file and no per-file lookups.
        """
        sig = self._sigs.pop(rel, None) or self.signatures([rel]).get(rel)
        cached = self.cache.tree(rel)
        if sig is not None and cached is not None and cached[0] == sig and not manifest:
            return cached[1], []
        files = self._walk(rel)
        if sig is None:
            sig = _py_signature(files)
        entries = self._hash_many(rel, files)
        digest = tree_digest(entries)
        newest = max((s.st_mtime_ns for _, s in files), default=0)
        if self.now_ns - newest >= RACY_NS:
            self.cache.trees[rel] = (sig, digest)
            self.cache.dirty = True
        return digest, entries

    def known(self, rel: str) -> str | None:
        """The tree's cached digest when its stat signature is unchanged (one stat per
        file), else None."""
        cached = self.cache.tree(rel)
        if cached is None:
            return None
        if cached[0].startswith("py:"):  # recorded by `settle`
            sig: str | None = _py_signature(self._walk(rel))
        else:
            sig = self._sigs.pop(rel, None) or self.signatures([rel]).get(rel)
        return cached[1] if sig == cached[0] else None

    def scan(self, rel: str, each: Hashed | None = None) -> Scan:
        """Hash the directory at `rel` file by file (through the stat cache), keeping each
        file's stat; records no tree signature (see `settle`). `each` is called with the
        files (project path, digest, stat) in batches as they are hashed, so that the
        caller's work on them overlaps the hashing of the rest."""
        lazy: list[str] | None = [] if self.forked else None
        files = self._walk(rel, lazy)
        visited = self._visit_forked(rel, lazy, each) if lazy and len(lazy) >= _FORK_FILES \
            else None
        if visited is None and lazy:
            files = sorted(files + self._stat_all(rel, lazy))
        entries = self._hash_many(rel, files, each)
        stats = [st for _, st in files]
        if visited is not None:
            if entries:  # a few symlinked files besides: merge in path order
                both = sorted(zip(entries + visited[0], stats + visited[1], strict=True))
                entries, stats = [e for e, _ in both], [st for _, st in both]
            else:
                entries, stats = visited
        return Scan(tree_digest(entries), entries, stats)

    def _stat_all(self, rel: str, names: list[str]) -> list[tuple[str, os.stat_result]]:
        base = os.path.join(self.abspath(rel), "")
        found = []
        for name in names:
            try:
                found.append((name, os.stat(base + name)))
            except FileNotFoundError:  # gone since the walk, as if the walk had missed it
                continue
        return found

    def _visit_forked(self, rel: str, names: list[str], each: Hashed | None
                      ) -> tuple[list[Entry], list[os.stat_result]] | None:
        """Stat and hash (through the stat cache) the files `names` of the tree at `rel` in
        forked workers (forked_map): the entries and stats, in path order; None where
        forking is not safe. The stats come back as tuples (os.stat_result's ten fields and
        st_mtime_ns) and are rebuilt here as os.stat_result."""
        from mlmake.forked import forked_map

        names.sort()
        prefix = rel + "/" if rel not in ("", ".") else ""
        base = self.root.rstrip(os.sep) + os.sep + prefix
        get, put_many, now_ns = self.cache.get, self.cache.put_many, self.now_ns
        stats: list[os.stat_result | None] = [None] * len(names)
        digests = [""] * len(names)

        def visit(name: str) -> tuple[str, tuple[float, ...], int]:
            st = os.stat(base + name)
            if not stat_mod.S_ISREG(st.st_mode):  # no longer a file since the walk
                raise OSError(errno.EISDIR if stat_mod.S_ISDIR(st.st_mode) else errno.EINVAL,
                              "not a file", base + name)
            return get(prefix + name, st) or hash_file(base + name), tuple(st), st.st_mtime_ns

        positional = _mtime_ns_at_14()

        def got(indices: list[int], found: list[Any]) -> None:
            batch = []
            for i, res in zip(indices, found, strict=True):
                if res is not None:  # else redone below, here
                    st = os.stat_result(res[1] + (0.0, 0.0, 0.0, 0, res[2])) if positional \
                        else os.stat_result(res[1], {"st_mtime_ns": res[2]})
                    stats[i], digests[i] = st, res[0]
                    batch.append((prefix + names[i], res[0], st))
            put_many(batch, now_ns)
            if each is not None:
                each(batch)

        if forked_map(visit, names, got) is None:
            return None
        for i in [i for i, st in enumerate(stats) if st is None]:
            try:
                got([i], [visit(names[i])])
            except FileNotFoundError:  # gone since the walk: left out, as the walk would
                continue
        return ([Entry(n, d, bool(st.st_mode & 0o111))
                 for n, d, st in zip(names, digests, stats, strict=True) if st is not None],
                [st for st in stats if st is not None])

    def settle(self, rel: str, digest: str, files: list[tuple[str, FileState]]) -> bool:
        """Record `digest` as the content of the tree at `rel` whose files (sorted paths in
        the tree) are now in the given states, so that checking it again costs one stat
        per file and no read. The signature is the one a Python walk computes (`known`
        walks for it; a check that uses find records its own the first time). False when
        a file is too recent to be trusted (as in `tree`)."""
        if any(self.now_ns - f[2] < RACY_NS for _, f in files):
            return False
        self.cache.trees[rel] = ("py:" + hash_bytes(marshal.dumps(
            [(p, *f) for p, f in files])), digest)
        self.cache.dirty = True
        return True

    def glob(self, pattern: str) -> tuple[str, dict[str, str]]:
        """Hash of the files matched by a glob pattern (recursive `**` allowed)."""
        matches = sorted(globmod.glob(pattern, root_dir=self.root, recursive=True))
        found: dict[str, str] = {}
        for m in matches:
            full = self.abspath(m)
            if os.path.isdir(full):
                found[m + "/"] = self.tree(m)[0]
            elif os.path.isfile(full):
                found[m] = self.file(m)
        return glob_digest(found), found

    def dep(self, pattern: str) -> str | None:
        """Hash of a dep: a file, a directory or a glob; None when it matches nothing."""
        if is_glob(pattern):
            digest, found = self.glob(pattern)
            return digest if found else None
        return self.path(pattern)

    def _walk(self, rel: str, lazy: list[str] | None = None
              ) -> list[tuple[str, os.stat_result]]:
        """Files under `rel`, sorted, with their stats. With `lazy`, the regular files (known
        as such without a stat) are left there instead, by name in no order, to be statted
        by the caller.

        Symlinks are followed, except a link to a directory that encloses it (a loop), which
        is left out like any other entry that is not a file.
        """
        out: list[tuple[str, os.stat_result]] = []
        base = self.abspath(rel)
        try:
            top = os.stat(base)
        except (FileNotFoundError, NotADirectoryError):
            return out
        # each directory to visit with the (device, inode) of itself and its ancestors
        stack: list[tuple[str, frozenset[tuple[int, int]]]] = [
            ("", frozenset({(top.st_dev, top.st_ino)}))]
        while stack:
            sub, chain = stack.pop()
            try:
                it = os.scandir(os.path.join(base, sub) if sub else base)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with it:
                for de in it:
                    name = f"{sub}/{de.name}" if sub else de.name
                    if de.is_dir(follow_symlinks=True):
                        try:
                            st = de.stat()
                        except FileNotFoundError:
                            continue
                        ident = (st.st_dev, st.st_ino)
                        if ident not in chain:
                            stack.append((name, chain | {ident}))
                    elif lazy is not None and de.is_file(follow_symlinks=False):
                        lazy.append(name)
                    else:
                        try:
                            st = de.stat()
                        except FileNotFoundError:
                            continue
                        if stat_mod.S_ISREG(st.st_mode):  # not a pipe (its read would wait
                            out.append((name, st))  # forever), socket or device
        out.sort()
        return out

    def _hash_many(self, rel: str, files: list[tuple[str, os.stat_result]],
                   each: Hashed | None = None) -> list[Entry]:
        prefix = rel + "/" if rel not in ("", ".") else ""
        todo: list[tuple[int, str, os.stat_result]] = []
        digests: list[str | None] = []
        for i, (p, st) in enumerate(files):
            d = self.cache.get(prefix + p, st)
            digests.append(d)
            if d is None:
                todo.append((i, prefix + p, st))
        if each is not None and len(todo) < len(files):
            each([(prefix + p, d, st) for (p, st), d in zip(files, digests, strict=True)
                  if d is not None])

        def got(ks: list[int], found: list[str]) -> None:
            batch = []
            for k, d in zip(ks, found, strict=True):
                i, p, st = todo[k]
                digests[i] = d
                batch.append((p, d, st))
            self.cache.put_many(batch, self.now_ns)
            if each is not None:
                each(batch)

        if todo:
            size = sum(st.st_size for _, _, st in todo)
            base = self.root.rstrip(os.sep) + os.sep
            paths = [base + p for _, p, _ in todo]
            big = size >= _PARALLEL_BYTES
            if not (big and self.forked and hash_parallel(paths, got) is not None):
                if big and len(todo) > 1:
                    from concurrent.futures import ThreadPoolExecutor

                    workers = min(8, (os.cpu_count() or 2) * 2)
                    # batches, not one task per file: a thread hand-off costs about what
                    # hashing a 100 KB file does
                    step = max(1, min(256, len(paths) // (workers * 4)))
                    with ThreadPoolExecutor(workers) as pool:
                        results = [d for batch in pool.map(
                            _hash_files, [paths[i:i + step]
                                          for i in range(0, len(paths), step)])
                            for d in batch]
                else:
                    results = _hash_files(paths)
                got(list(range(len(todo))), results)
        return [Entry(p, d or "", bool(st.st_mode & 0o111))
                for (p, st), d in zip(files, digests, strict=True)]
