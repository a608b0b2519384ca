"""The stat cache: what each file hashed to, by path and stat, so unchanged files are not
read again; and the stat signatures of whole trees."""

from __future__ import annotations

import marshal
import os
from collections.abc import Iterable
from typing import Any

FORMAT = 1  # of both files
RACY_NS = 100_000_000  # a file modified this recently may change again within one mtime tick


class StatCache:
    """Remembers (inode, size, mtime_ns) → hash per path so unchanged files are not re-read.

    Two marshal files: `path` holds tree signatures and the entries of files hashed on
    their own (small, read on every check); `path.files` the entries of files inside trees
    and of store objects (`bulk`), read only when a tree changed. Both are written
    atomically when something changed. Entries for files modified in the last moments are
    not trusted (they may change again within one timestamp tick), as Git does for its
    index.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._files: dict[str, tuple[int, int, int, str]] | None = None if path else {}
        self.trees: dict[str, tuple[str, str]] = {}
        self.direct: dict[str, tuple[int, int, int, str]] = {}
        self.dirty = False  # trees or direct entries changed
        self.files_dirty = False
        if path:
            data = _load(path)
            if _valid_small(data):
                self.trees, self.direct = data[1], data[2]

    @property
    def files(self) -> dict[str, tuple[int, int, int, str]]:
        if self._files is None:
            data = _load(f"{self.path}.files")
            ok = type(data) is tuple and len(data) == 2 and data[0] == FORMAT \
                and type(data[1]) is dict
            self._files = data[1] if ok else {}
        return self._files

    def get(self, rel: str, st: os.stat_result, bulk: bool = True) -> str | None:
        hit = (self.files if bulk else self.direct).get(rel)
        if type(hit) is tuple and len(hit) == 4 and hit[0] == st.st_ino \
                and hit[1] == st.st_size and hit[2] == st.st_mtime_ns and type(hit[3]) is str:
            return hit[3]
        return None

    def tree(self, rel: str) -> tuple[str, str] | None:
        hit = self.trees.get(rel)
        if type(hit) is tuple and len(hit) == 2 and type(hit[1]) is str:
            return hit
        return None

    def put(self, rel: str, st: os.stat_result, digest: str, now_ns: int,
            bulk: bool = True) -> None:
        if now_ns - st.st_mtime_ns < RACY_NS:
            return
        entry = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
        if bulk:
            self.files[rel] = entry
            self.files_dirty = True
        else:
            self.direct[rel] = entry
            self.dirty = True

    def put_many(self, found: Iterable[tuple[str, str, os.stat_result]], now_ns: int) -> None:
        """`put` (bulk) of many (path, digest, stat) at once."""
        files = self.files
        settled = now_ns - RACY_NS
        for rel, digest, st in found:
            if st.st_mtime_ns <= settled:
                files[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
        self.files_dirty = True

    def save(self) -> None:
        if not self.path:
            return
        if self.files_dirty and self._files is not None:
            _dump(f"{self.path}.files", (FORMAT, self._files))
            self.files_dirty = False
        if self.dirty:
            _dump(self.path, (FORMAT, self.trees, self.direct))
            self.dirty = False


def _valid_small(data: Any) -> bool:
    """The small stat-cache file has this format's number and layout throughout (it is
    small, so checking every entry is cheap; the large one is checked entry by entry)."""
    return (type(data) is tuple and len(data) == 3 and data[0] == FORMAT
            and type(data[1]) is dict and type(data[2]) is dict
            and all(type(v) is tuple and len(v) == 2 and type(v[0]) is str
                    and type(v[1]) is str for v in data[1].values())
            and all(type(v) is tuple and len(v) == 4 and type(v[3]) is str
                    for v in data[2].values()))


def _load(path: str) -> Any:
    try:
        with open(path, "rb") as fh:
            return marshal.loads(fh.read())  # load(fh) reads piecemeal: 15x slower
    except (OSError, EOFError, ValueError, TypeError):
        return None


def _dump(path: str, data: Any) -> None:
    from mlmake.atomic import atomic_write

    try:
        # not fsynced: a cache, and each entry true of the state it names whenever written
        atomic_write(path, marshal.dumps(data), sync=False)
    except OSError:
        pass  # only a cache: the next check hashes again
