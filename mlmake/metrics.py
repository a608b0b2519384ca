"""Metrics and params across commits: their files read at Git revisions or in the work tree, shown
side by side and diffed key by key."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake.errors import MlfileError, UsageError
from mlmake.params import flatten, parse_toml

if TYPE_CHECKING:
    from mlmake.project import Project

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


def files(project: Project, kind: str = "metrics") -> list[str]:
    """The project-relative files compared: every target's metrics, or the params files."""
    if kind == "params":
        return list(dict.fromkeys(project.pipeline.params_files))
    if kind != "metrics":
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return list(dict.fromkeys(m for t in project.pipeline.targets.values() for m in t.metrics))


def show(project: Project, revs: tuple[str, ...] | list[str] = (),
         kind: str = "metrics") -> list[Snapshot]:
    """The files of `kind` at each revision (default: the work tree only)."""
    paths = files(project, kind)
    return [snapshot(project, rev, paths) for rev in (tuple(revs) or (WORKSPACE,))]


def diff(project: Project, revs: tuple[str, ...] | list[str] = (), kind: str = "metrics",
         all_rows: bool = False) -> Diff:
    """Compare the files of `kind` between two revisions, DVC style.

    No revision: HEAD against the work tree; one: REV against the work tree; two: A against B.
    Only keys whose value differs are listed unless `all_rows`.
    """
    revs = tuple(revs)
    if len(revs) > 2:
        raise UsageError(f"{kind} diff takes at most two revisions, got {len(revs)}: "
                         f"{' '.join(revs)}.")
    paths = files(project, kind)
    if not revs:
        old = _head_or_empty(project, paths)
        new = snapshot(project, WORKSPACE, paths)
    elif len(revs) == 1:
        old = snapshot(project, revs[0], paths)
        new = snapshot(project, WORKSPACE, paths)
    else:
        old = snapshot(project, revs[0], paths)
        new = snapshot(project, revs[1], paths)
    return Diff(old, new, compare(old, new, all_rows))


def compare(old: Snapshot, new: Snapshot, all_rows: bool = False) -> list[Row]:
    """Rows for every key of either snapshot (changed ones only unless `all_rows`), files in order."""
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


def snapshot(project: Project, rev: str, paths: list[str]) -> Snapshot:
    """Parse `paths` as they are at `rev` (`workspace`: the work tree), without checking out."""
    if rev == WORKSPACE:
        raw: dict[str, bytes | None] = {p: _read_workspace(project.root, p) for p in paths}
        commit = None
    else:
        from mlmake import git

        commit, raw = git.read_files_at(project.root, rev, paths)
    return Snapshot(rev, commit, {p: (None if data is None else parse(data, p, rev))
                                  for p, data in raw.items()})


def parse(data: bytes, path: str, rev: str = WORKSPACE) -> dict[str, Any]:
    """Flattened keys of a JSON, YAML or TOML file (by extension; others: JSON, else YAML).

    A file holding a bare value (`0.93`) has the single key "".
    """
    where = path if rev == WORKSPACE else f"{path} (at {rev})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MlfileError("not UTF-8 text; metrics and params files must be JSON, YAML or "
                          "TOML.", where) from None
    ext = os.path.splitext(path)[1].lower()
    value: Any
    if ext == ".toml":
        value = parse_toml(text, where)
    elif ext in (".yaml", ".yml"):
        value = _yaml(text, where)
    elif ext == ".json":
        value = _json(text, where)
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = _yaml(text, where)
    if isinstance(value, dict):
        return flatten(value)
    if value is None:
        return {}
    return {"": value}


def _head_or_empty(project: Project, paths: list[str]) -> Snapshot:
    """HEAD, or every file absent when the repository has no commit yet."""
    from mlmake import git

    if git.head_is_unborn(project.root):
        return Snapshot("HEAD", None, {p: None for p in paths})
    return snapshot(project, "HEAD", paths)


def _read_workspace(root: str, rel: str) -> bytes | None:
    try:
        with open(os.path.join(root, rel), "rb") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MlfileError(f"invalid JSON: {exc.msg}", where, exc.lineno, exc.colno) from None


def _yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MlfileError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", where,
                          mark.line + 1 if mark else None,
                          mark.column + 1 if mark else None) from None


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
