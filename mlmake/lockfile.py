"""Mlfile.lock: per target, the inputs of its key and the hash of every out (JSON, stable)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from mlmake.errors import MlfileError

LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockEntry:
    """What a target was last built from and what it produced."""

    key: str
    cmd: str
    deps: dict[str, str]
    params: dict[str, Any]
    env: str | None
    outs: dict[str, dict[str, Any]]  # path → {"hash", "type": file|dir, "size", "files"}

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "cmd": self.cmd, "deps": self.deps,
                             "params": self.params, "outs": self.outs}
        if self.env:
            d["env"] = self.env
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LockEntry":
        return cls(key=d["key"], cmd=d.get("cmd", ""), deps=dict(d.get("deps", {})),
                   params=dict(d.get("params", {})), env=d.get("env"),
                   outs={k: dict(v) for k, v in d.get("outs", {}).items()})


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
        try:
            entries = {k: LockEntry.from_json(v) for k, v in data.get("targets", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MlfileError("the lock file is malformed. Restore it from Git or delete it "
                              "to rebuild.", name) from None
        return cls(path, entries, text)

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
        return f'{{\n  "targets": {targets},\n  "version": {LOCK_FORMAT}\n}}\n'

    def write(self, keep: set[str] | None = None) -> bool:
        """Write atomically (temp file + rename) when the content changed; True if written.

        Raises LockChangedError, writing nothing, when the file on disk is no longer what
        this Lock read or last wrote (a `git checkout` or `git pull` replaced it meanwhile):
        the lock of another commit must not receive this build's results, which stay in the
        run cache for the next run to reuse."""
        text = self.render(keep)
        try:
            with open(self.path, encoding="utf-8") as fh:
                on_disk: str | None = fh.read()
        except FileNotFoundError:
            on_disk = None
        if on_disk is not None and on_disk != self._written:
            raise LockChangedError(os.path.basename(self.path))
        if text == on_disk:
            return False
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
        os.replace(tmp, self.path)
        self._written = text
        return True
