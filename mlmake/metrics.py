"""Metrics and params across commits: their files read at Git revisions or in the work tree, shown
side by side and diffed key by key."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake.errors import MlfileError, UsageError
from mlmake.params import decode, flatten

if TYPE_CHECKING:
    from mlmake.model import Pipeline

# (rev, paths) -> (the full sha `rev` names, each path's bytes at it or None when absent)
FilesAt = Callable[[str, list[str]], "tuple[str, dict[str, bytes | None]]"]

WORKSPACE = "workspace"
KINDS = ("metrics", "params")


class _Absent:
    """The value of a key whose file (or the key itself) does not exist at a revision."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Snapshot:
    """The metrics (or params) files at one revision: path → flattened keys, None when absent.

    `commit` is the full sha the revision named, None for the work tree (or an unborn HEAD).
    """

    rev: str
    commit: str | None
    files: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # lenient: path → why it is None

    def as_json(self) -> dict[str, dict[str, Any] | None]:
        """JSON-ready form: path → {dotted key: value}, null for a file that is absent."""
        return {p: (dict(v) if v is not None else None) for p, v in self.files.items()}


@dataclass(frozen=True, slots=True)
class Row:
    """One key of one file compared across two revisions; `change` is new − old for numbers."""

    path: str
    key: str
    old: Any
    new: Any
    change: int | float | None

    @property
    def changed(self) -> bool:
        return not _same(self.old, self.new)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form; an absent value is null."""
        return {"path": self.path, "key": self.key, "old": _plain(self.old),
                "new": _plain(self.new), "change": self.change}


@dataclass(frozen=True)
class Diff:
    """Rows comparing `old` with `new` (revision names as given, or `workspace`)."""

    old: Snapshot
    new: Snapshot
    rows: list[Row]

    def as_json(self) -> dict[str, Any]:
        """`{"old": REV, "new": REV, "rows": [{path, key, old, new, change}, ...]}`."""
        return {"old": self.old.rev, "new": self.new.rev,
                "rows": [r.as_json() for r in self.rows]}


def files(pipeline: Pipeline, kind: str = "metrics") -> list[str]:
    """The project-relative files compared: every target's metrics, or the params files."""
    if kind == "params":
        return list(dict.fromkeys(pipeline.params_files))
    if kind != "metrics":
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return list(dict.fromkeys(m for t in pipeline.targets.values() for m in t.metrics))


def show(root: str, paths: list[str], files_at: FilesAt,
         revs: tuple[str, ...] | list[str] = (), lenient: bool = False) -> list[Snapshot]:
    """`paths` at each revision (default: the work tree only); see `snapshot`."""
    return [snapshot(root, rev, paths, files_at, lenient)
            for rev in (tuple(revs) or (WORKSPACE,))]


def diff(root: str, paths: list[str], files_at: FilesAt,
         revs: tuple[str, ...] | list[str] = (), kind: str = "metrics",
         all_rows: bool = False, unborn: bool = False) -> Diff:
    """Compare `paths` (files of `kind`) between two revisions, DVC style.

    No revision: HEAD (every file absent when the repository is `unborn`, without a commit
    yet) against the work tree; one: REV against the work tree; two: A against B. Only keys
    whose value differs are listed unless `all_rows`.
    """
    revs = tuple(revs)
    if len(revs) > 2:
        raise UsageError(f"{kind} diff takes at most two revisions, got {len(revs)}: "
                         f"{' '.join(revs)}.")
    if not revs:
        old = Snapshot("HEAD", None, {p: None for p in paths}) if unborn else \
            snapshot(root, "HEAD", paths, files_at)
        new = snapshot(root, WORKSPACE, paths, files_at)
    elif len(revs) == 1:
        old = snapshot(root, revs[0], paths, files_at)
        new = snapshot(root, WORKSPACE, paths, files_at)
    else:
        old = snapshot(root, revs[0], paths, files_at)
        new = snapshot(root, revs[1], paths, files_at)
    return Diff(old, new, compare(old, new, all_rows))


def compare(old: Snapshot, new: Snapshot, all_rows: bool = False) -> list[Row]:
    """Rows for every key of either snapshot (changed ones only unless `all_rows`), files in
    order."""
    rows: list[Row] = []
    for path in dict.fromkeys([*old.files, *new.files]):
        a = old.files.get(path) or {}
        b = new.files.get(path) or {}
        for key in sorted(set(a) | set(b)):
            row = Row(path, key, a.get(key, ABSENT), b.get(key, ABSENT),
                      _change(a.get(key, ABSENT), b.get(key, ABSENT)))
            if all_rows or row.changed:
                rows.append(row)
    return rows


def snapshot(root: str, rev: str, paths: list[str], files_at: FilesAt,
             lenient: bool = False) -> Snapshot:
    """Parse `paths` as they are at `rev` (`workspace`: the work tree under `root`), read
    through `files_at` without checking anything out. A file that does not parse is an
    MlfileError, or with `lenient` absent, its error kept in `Snapshot.errors`."""
    if rev == WORKSPACE:
        raw: dict[str, bytes | None] = {p: _read_workspace(root, p) for p in paths}
        commit = None
    else:
        commit, raw = files_at(rev, paths)
    parsed: dict[str, dict[str, Any] | None] = {}
    errors: dict[str, str] = {}
    for p, data in raw.items():
        try:
            parsed[p] = None if data is None else parse(data, p, rev)
        except MlfileError as exc:
            if not lenient:
                raise
            parsed[p] = None
            errors[p] = str(exc)
    return Snapshot(rev, commit, parsed, errors)


def parse(data: bytes, path: str, rev: str = WORKSPACE) -> dict[str, Any]:
    """Flattened keys of a JSON, YAML or TOML file (by extension; others: JSON, else YAML),
    read by the one params reader (mlmake.params).

    A file holding a bare value (`0.93`) has the single key "".
    """
    where = path if rev == WORKSPACE else f"{path} (at {rev})"
    value = decode(data, path, where)
    if isinstance(value, dict):
        return flatten(value)
    if value is None:
        return {}
    return {"": value}


def _read_workspace(root: str, rel: str) -> bytes | None:
    try:
        with open(os.path.join(root, rel), "rb") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _change(old: Any, new: Any) -> int | float | None:
    """new − old for two numbers, without float noise (0.9 − 0.8 is 0.1); else None."""
    if not (_number(old) and _number(new)):
        return None
    d = new - old
    if isinstance(d, float) and math.isfinite(d):
        d = float(f"{d:.12g}")
    return d


def _same(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT:
        return a is b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b or (_number(a) and _number(b) and a == b)


def _plain(v: Any) -> Any:
    return None if v is ABSENT else v
