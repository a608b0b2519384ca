"""The no-op answer: one small file says whether `mlmake status` would find nothing to do.

When a full check finds every selected target up to date, `record` writes `.mlmake/noop`:
the question asked (command, options, interpreter, mlmake version), and the stat signature
(inode, size, mtime) of every path the answer depends on — the Mlfile, its lock and params
files, each dep (declared, implicit and the files under directory deps) and each out — plus
the paths that must stay absent and the matches of each glob. `answer`, called by the CLI
before anything else is imported, re-stats those paths; when every one is unchanged it
prints the answer itself, and otherwise the full check runs (and records again).

Only answers that need no more than this are recorded: no `always` target, no container
env (an image can change behind a tag), no GPU request, nothing racy (a file modified in
the last moments may change again within one timestamp tick).
"""

from __future__ import annotations

import marshal
import os
import sys
import time

# `typing` and `collections` cost more to import than the whole answer takes: this module
# names them for the type checker only (it treats any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

FORMAT = 1
NAME = "noop"
_RACY_NS = 2_000_000_000
_MAX_FILES = 5_000  # beyond this, the full check's C-speed tree signatures win
UP_TO_DATE = "everything is up to date"


def question(argv: list[str]) -> tuple[str, str | None, tuple[str, ...], bool] | None:
    """(directory, Mlfile option, normalized question, quiet) when `argv` asks something
    the no-op file can answer, else None."""
    directory, mlfile, quiet = ".", None, False
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-C", "--directory") and i + 1 < len(argv):
            directory, i = argv[i + 1], i + 2
            continue
        if a in ("-f", "--file") and i + 1 < len(argv):
            mlfile, i = argv[i + 1], i + 2
            continue
        if a in ("-q", "--quiet"):
            quiet, i = True, i + 1
            continue
        rest.append(a)
        i += 1
    if not rest or rest[0] != "status" or any(a not in ("--lean",) for a in rest[1:]):
        return None
    return directory, mlfile, ("status", *sorted(set(rest[1:]))), quiet


def _ident(q: tuple[str, ...], mlfile: str) -> tuple[Any, ...]:
    from mlmake import __version__

    return (FORMAT, __version__, q, os.path.abspath(mlfile), sys.version,
            os.environ.get("PYTHONPATH", ""), os.cpu_count())


def answer(argv: list[str]) -> bool:
    """Print the recorded answer to `argv` and return True when nothing it depends on
    changed; False (printing nothing) sends the CLI to the full check."""
    q = question(argv)
    if q is None:
        return False
    directory, mlfile_opt, asked, quiet = q
    mlfile = _find_mlfile(directory, mlfile_opt)
    if mlfile is None:
        return False
    path = os.path.join(os.path.dirname(mlfile), ".mlmake", NAME)
    try:
        with open(path, "rb") as fh:
            data = marshal.loads(fh.read())
    except (OSError, EOFError, ValueError, TypeError):
        return False
    if type(data) is not tuple or len(data) != 4 or data[0] != _ident(asked, mlfile):
        return False
    _, entries, trees, globs = data
    root = os.path.dirname(mlfile)
    try:
        if not _same(root, entries) or not all(_tree(root, d) == sig for d, sig in trees) \
                or not _same_globs(root, globs):
            return False
    except (TypeError, ValueError):
        return False
    if not quiet:
        sys.stdout.write(UP_TO_DATE + "\n")
    return True


def record(root: str, mlfile: str, asked: tuple[str, ...], files: Iterable[str],
           trees: Iterable[str], absent: Iterable[str], globs: dict[str, list[str]]) -> bool:
    """Write the no-op file for `asked` from the paths the answer depends on; False (and
    any old file removed) when a path is racy or missing, or the trees are too large."""
    path = os.path.join(root, ".mlmake", NAME)
    now = time.time_ns()
    entries: list[tuple[str, Any, Any, Any]] = []
    for rel in dict.fromkeys(files):
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:
            return _drop(path)
        if now - st.st_mtime_ns < _RACY_NS:
            return _drop(path)
        entries.append((rel, st.st_ino, st.st_size, st.st_mtime_ns))
    for rel in dict.fromkeys(absent):
        if os.path.lexists(os.path.join(root, rel)):
            return _drop(path)
        entries.append((rel, None, None, None))
    sigs = []
    count = 0
    for d in dict.fromkeys(trees):
        sig = _tree(root, d, _MAX_FILES - count)
        if sig is None:  # gone, or past the budget: not worth walking on every check
            return _drop(path)
        count += len(sig)
        if any(now - m < _RACY_NS for _, _, _, m in sig):
            return _drop(path)
        sigs.append((d, sig))
    from mlmake.atomic import atomic_write

    data = (_ident(asked, mlfile), tuple(entries), tuple(sigs),
            tuple((g, tuple(m)) for g, m in sorted(globs.items())))
    try:
        atomic_write(path, marshal.dumps(data))
    except OSError:
        return False
    return True


def forget(root: str) -> None:
    """Remove the no-op file (something changed that its signatures cannot see)."""
    _drop(os.path.join(root, ".mlmake", NAME))


def _drop(path: str) -> bool:
    try:
        os.unlink(path)
    except OSError:
        pass
    return False


def _same(root: str, entries: Any) -> bool:
    for rel, ino, size, mtime in entries:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:
            if ino is None:
                continue
            return False
        if ino is None or st.st_ino != ino or st.st_size != size or st.st_mtime_ns != mtime:
            return False
    return True


def _tree(root: str, rel: str, budget: int | None = None
          ) -> tuple[tuple[str, int, int, int], ...] | None:
    """Every file and directory under `rel` with its inode, size and mtime, sorted; None
    when it cannot be read or holds more than `budget` entries."""
    base = os.path.join(root, rel)
    out: list[tuple[str, int, int, int]] = []
    stack = [""]
    try:
        while stack:
            sub = stack.pop()
            with os.scandir(os.path.join(base, sub) if sub else base) as it:
                for e in it:
                    st = e.stat()
                    name = f"{sub}/{e.name}" if sub else e.name
                    out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
                    if budget is not None and len(out) > budget:
                        return None
                    if e.is_dir():
                        stack.append(name)
    except OSError:
        return None
    out.sort()
    return tuple(out)


def _same_globs(root: str, globs: Any) -> bool:
    if not globs:
        return True
    import glob as globmod

    for pattern, matches in globs:
        now = sorted(globmod.glob(pattern, root_dir=root, recursive=True))
        if tuple(now) != tuple(matches):
            return False
    return True


def _find_mlfile(start: str, name: str | None) -> str | None:
    if name:
        path = name if os.path.isabs(name) else os.path.join(start, name)
        return os.path.abspath(path) if os.path.isfile(path) else None
    here = os.path.abspath(start)
    while True:
        candidate = os.path.join(here, "Mlfile")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent
