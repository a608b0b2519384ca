"""Mlfile.lock: per target, the inputs of its key and the hash of every out (JSON, stable)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from mlmake.atomic import atomic_write
from mlmake.errors import MlfileError
from mlmake.model import OUT_KINDS, OutRecord, SourceRecord, outs_json

LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockEntry:
    """What a target was last built from and what it produced."""

    key: str
    cmd: str
    deps: dict[str, str]
    params: dict[str, Any]
    env: str | None
    outs: dict[str, OutRecord]

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "cmd": self.cmd, "deps": self.deps,
                             "params": self.params, "outs": outs_json(self.outs)}
        if self.env:
            d["env"] = self.env
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LockEntry":
        """An entry of a lock whose shape `_check_targets` accepted."""
        return cls(key=d["key"], cmd=d.get("cmd", ""), deps=dict(d.get("deps", {})),
                   params=dict(d.get("params", {})), env=d.get("env"),
                   outs={k: OutRecord.from_json(v) for k, v in d.get("outs", {}).items()})


class LockChangedError(MlfileError):
    """The lock file changed on disk during a build (a checkout of another commit)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} was replaced while this build ran (a git checkout or pull?); "
                         "the results are kept in the run cache and were not written into "
                         "the new lock. Run mlmake again to record them.", name)
        self.exit_code = 1


@dataclass
class Lock:
    """The whole lock file in memory; `write` replaces the file atomically."""

    path: str
    entries: dict[str, LockEntry] = field(default_factory=dict)
    _written: str = ""
    sources: dict[str, SourceRecord] = field(default_factory=dict)  # data: mlmake.sources

    @classmethod
    def read(cls, path: str) -> "Lock":
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return cls(path)
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: str) -> "Lock":
        """Parse lock JSON (from the work tree or a Git blob)."""
        name = os.path.basename(path)
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise MlfileError(f"invalid JSON in the lock file: {exc.msg}. Restore it from Git "
                              "(`git checkout -- Mlfile.lock`) or delete it to rebuild.",
                              name, exc.lineno, exc.colno) from None
        if not isinstance(data, dict):
            raise MlfileError("the lock file is malformed: expected a JSON object with "
                              "\"version\" and \"targets\". Restore it from Git or delete it "
                              "to rebuild.", name)
        version = data.get("version", LOCK_FORMAT)
        if not isinstance(version, int) or isinstance(version, bool):
            raise MlfileError(f"the lock file is malformed: \"version\" is {json.dumps(version)}, "
                              "not an integer. Restore it from Git or delete it to rebuild.",
                              name)
        if version > LOCK_FORMAT:
            raise MlfileError(f"lock format {version} is newer than this mlmake understands "
                              f"({LOCK_FORMAT}); upgrade mlmake.", name)
        targets = data.get("targets", {})
        problem = _check_targets(targets)
        if problem is not None:
            where, what = problem
            raise MlfileError(f"the lock file is malformed: {what}. Restore it from Git "
                              "(`git checkout -- Mlfile.lock`) or delete it to rebuild.", name,
                              _line_of(text, where))
        entries = {k: LockEntry.from_json(v) for k, v in targets.items()}
        sources = data.get("sources", {})
        bad = _check_sources(sources)
        if bad is not None:
            raise MlfileError(f"the lock file is malformed: {bad}. Restore it from Git "
                              "(`git checkout -- Mlfile.lock`).", name)
        return cls(path, entries, text,
                   {k: SourceRecord.from_json(v) for k, v in sources.items()})

    def render(self, keep: set[str] | None = None) -> str:
        """The file's text: `json.dumps(..., indent=2, sort_keys=True)` byte for byte, built
        from per-entry fragments that are cached, so rewriting a large lock stays cheap."""
        cache = self.__dict__.setdefault("_fragments", {})
        parts = []
        for name, e in sorted(self.entries.items()):
            if keep is not None and name not in keep:
                continue
            hit = cache.get(name)
            if hit is None or hit[0] is not e:
                body = json.dumps(e.as_json(), indent=2, sort_keys=True, ensure_ascii=False)
                hit = (e, json.dumps(name, ensure_ascii=False) + ": "
                       + body.replace("\n", "\n    "))
                cache[name] = hit
            parts.append("    " + hit[1])
        targets = "{\n" + ",\n".join(parts) + "\n  }" if parts else "{}"
        sources = "".join(  # one line per data source, so a new version is a one-line diff
            ("{\n" if i == 0 else ",\n") + "    " + json.dumps(p, ensure_ascii=False) + ": "
            + json.dumps(r.as_json(), sort_keys=True, ensure_ascii=False)
            for i, (p, r) in enumerate(sorted(self.sources.items())))
        sources = f'  "sources": {sources}\n  }},\n' if sources else ""
        return f'{{\n{sources}  "targets": {targets},\n  "version": {LOCK_FORMAT}\n}}\n'

    def write(self, keep: set[str] | None = None) -> bool:
        """Write atomically (temp file + rename) when the content changed; True if written.

        Raises LockChangedError, writing nothing, when the file on disk is no longer what
        this Lock read or last wrote (a `git checkout` or `git pull` replaced it meanwhile):
        the lock of another commit must not receive this build's results, which stay in the
        run cache for the next run to reuse."""
        return self.write_text(self.render(keep))

    def write_text(self, text: str) -> bool:
        """`write` of a text rendered before (a build renders under its mutex and writes
        outside it)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                on_disk: str | None = fh.read()
        except FileNotFoundError:
            on_disk = None
        if on_disk is not None and on_disk != self._written:
            raise LockChangedError(os.path.basename(self.path))
        if text == on_disk:
            return False
        atomic_write(self.path, text, durable=True)
        self._written = text
        return True


def lock_entries(lock_path: str, names: set[str] | None, all_commits: bool,
                 root: str) -> list[tuple[str, LockEntry]]:
    """(target, entry) of the work tree's lock, and of every commit's with `all_commits`,
    for the targets in `names` (all when None); an entry recorded twice is listed once."""
    locks = [Lock.read(lock_path)]
    if all_commits:
        from mlmake import git

        locks += [Lock.parse(text, os.path.basename(lock_path))
                  for text in git.all_lock_texts(root, lock_path)]
    out = []
    seen: set[tuple[str, str, tuple[tuple[str, OutRecord], ...]]] = set()
    for lock in locks:
        for n, e in sorted(lock.entries.items()):
            if names is not None and n not in names:
                continue
            sig = (n, e.key, tuple(sorted(e.outs.items())))
            if sig not in seen:
                seen.add(sig)
                out.append((n, e))
    return out


def _check_targets(targets: Any) -> tuple[list[str], str] | None:
    """The first field of the lock's targets with a wrong type: (its JSON path, what is
    wrong), or None when every entry has the shape LockEntry needs."""
    def kind(v: Any) -> str:
        return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                type(None): "null"}.get(type(v), "a number")

    if not isinstance(targets, dict):
        return ["targets"], f"\"targets\" is {kind(targets)}, not an object"
    for name, e in targets.items():
        if not isinstance(e, dict):
            return [name], f"target '{name}' is {kind(e)}, not an object"
        if not isinstance(e.get("key"), str):
            return [name, "key"], f"target '{name}' has no string \"key\""
        for f, want in (("cmd", str), ("deps", dict), ("params", dict), ("outs", dict)):
            if f in e and not isinstance(e[f], want):
                return [name, f], (f"\"{f}\" of target '{name}' is {kind(e[f])}, not "
                                   f"{'a string' if want is str else 'an object'}")
        if e.get("env") is not None and not isinstance(e["env"], str):
            return [name, "env"], f"\"env\" of target '{name}' is {kind(e['env'])}"
        for dep, h in e.get("deps", {}).items():
            if not isinstance(h, (str, type(None))):
                return [name, "deps", dep], (f"dep '{dep}' of target '{name}' has a hash "
                                             f"that is {kind(h)}, not a string")
        for out, rec in e.get("outs", {}).items():
            if not isinstance(rec, dict):
                return [name, "outs", out], f"out '{out}' of target '{name}' is {kind(rec)}"
            if not isinstance(rec.get("hash"), str):
                return [name, "outs", out, "hash"], (
                    f"the hash of out '{out}' of target '{name}' is "
                    f"{kind(rec.get('hash'))}, not a string")
            if rec.get("type", "file") not in OUT_KINDS:
                return [name, "outs", out, "type"], (
                    f"the type of out '{out}' of target '{name}' is "
                    f"{json.dumps(rec.get('type'))}, not \"file\" or \"dir\"")
            for f in ("size", "files"):
                v = rec.get(f)
                if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                    return [name, "outs", out, f], (
                        f"the {f} of out '{out}' of target '{name}' is {kind(v)}, not an "
                        "integer")
    return None


def _check_sources(sources: Any) -> str | None:
    """What is wrong with the lock's data sources (path → source record), or None."""
    if not isinstance(sources, dict):
        return "\"sources\" is not an object"
    for path, rec in sources.items():
        try:
            SourceRecord.from_json(rec)
        except (TypeError, ValueError) as exc:
            return f"data source '{path}': {exc}"
    return None


def _line_of(text: str, where: list[str]) -> int | None:
    """The line of the lock text where the JSON path `where` (target, field, …) begins:
    each key is looked for after the line of the one before it."""
    lines = text.splitlines()
    at, found = 0, None
    for k in ["targets", *where]:
        needle = json.dumps(k, ensure_ascii=False) + ":"
        for i in range(at, len(lines)):
            if needle in lines[i] or json.dumps(k) + ":" in lines[i]:
                at, found = i, i + 1
                break
        else:
            break
    return found
