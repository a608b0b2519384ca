"""Bringing back the outputs a commit recorded: into the work tree, or one path to a file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mlmake import git, sources
from mlmake.errors import GitError, StoreError, UsageError
from mlmake.hashing import Hasher
from mlmake.lockfile import Lock
from mlmake.model import OutRecord
from mlmake.store import MANIFEST_SUFFIX, MissingObjectError, Store


@dataclass
class CheckoutResult:
    """What `checkout` did: outs restored, already right, and those not in the cache."""

    commit: str
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # committed to Git: left to Git
    metrics_written: list[str] = field(default_factory=list)  # written as committed at the rev


class ModifiedOutError(StoreError):
    """Outs in the work tree were edited by hand; checkout will not overwrite them."""

    exit_code = UsageError.exit_code  # the user's edits stop it, not a fault of the cache

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        shown = ", ".join(f"'{p}'" for p in paths[:5]) + (" …" if len(paths) > 5 else "")
        super().__init__(f"{shown} {'was' if len(paths) == 1 else 'were'} modified in the work "
                         "tree and would be overwritten. Save your changes elsewhere, or pass "
                         "--force to overwrite.")


def lock_at(root: str, lock_path: str, rev: str | None) -> tuple[str, Lock]:
    """The lock recorded at `rev` (full sha, Lock); an empty Lock when the commit has none.
    With no `rev`, the work tree's lock ("workspace")."""
    if rev is None:
        return "workspace", Lock.read(lock_path)
    sha, text = git.lock_text_at(root, lock_path, rev)
    return sha, Lock.parse(text, os.path.basename(lock_path))


def checkout(root: str, lock_path: str, rev: str | None, store: Store, hasher: Hasher,
             targets: set[str] | None, force: bool, upstream: set[str] | None = None,
             data: bool = False) -> CheckoutResult:
    """Restore the cached outs recorded in `rev`'s lock; tracked files are never touched.

    An out is replaced only when it is missing or its content is in the cache (so nothing
    is lost); anything else is a user edit and refuses the whole checkout (unless `force`)
    before a single file changes. `upstream`: names whose outs come along with `targets`
    where `rev` records them (the targets' upstreams in the current Mlfile). The data
    sources `rev` records come along when no targets are named, or with `data`.
    """
    sha, old = lock_at(root, lock_path, rev)
    wanted = None if targets is None else targets | (upstream or set())
    chosen = {n: e for n, e in old.entries.items()
              if wanted is None or n in wanted or n.split("@")[0] in wanted}
    if targets is not None:
        unknown = {t for t in targets if t not in chosen and
                   not any(n.split("@")[0] == t for n in chosen)}
        if unknown:
            raise UsageError(f"commit {sha[:10]} records no target named "
                             f"{', '.join(sorted(unknown))}.")
    result = CheckoutResult(sha)
    todo: list[tuple[str, OutRecord]] = []
    modified: list[str] = []
    groups = [entry.outs for entry in chosen.values()]
    if targets is None or data:
        groups.append(sources.out_records(old))
    for outs in groups:
        for out, rec in sorted(outs.items()):
            if rec.metric:
                result.metrics.append(out)
                continue  # committed to Git: git checkout owns it
            now = hasher.path(out)
            if now == rec.hash:
                result.unchanged.append(out)
                continue
            saved = store.has(now) or store.has(now + MANIFEST_SUFFIX) if now else True
            if not saved and not force:
                modified.append(out)
                continue
            todo.append((out, rec))
    if modified:
        raise ModifiedOutError(modified)
    for out, rec in todo:
        try:
            store.restore(out, rec)  # verifies every object before touching the work tree
        except MissingObjectError:
            result.missing.append(out)
            continue
        result.restored.append(out)
    return result


def checkout_metrics(root: str, sha: str, paths: list[str], force: bool
                     ) -> tuple[list[str], list[str]]:
    """Write the metrics files `paths` as committed at `sha` (they live in Git, so
    `checkout` leaves them alone); returns (written, absent at `sha`).

    A file whose content is neither HEAD's nor `sha`'s holds uncommitted work: it refuses
    the whole step (unless `force`) before a single file changes.
    """
    _, wanted = git.read_files_at(root, sha, paths)
    try:
        _, head = git.read_files_at(root, "HEAD", paths)
    except GitError:
        head = {}
    todo: list[tuple[str, bytes]] = []
    absent: list[str] = []
    modified: list[str] = []
    for p in sorted(paths):
        data = wanted.get(p)
        if data is None:
            absent.append(p)
            continue
        full = os.path.join(root, p)
        try:
            with open(full, "rb") as fh:
                now: bytes | None = fh.read()
        except FileNotFoundError:
            now = None
        if now == data:
            continue
        if now is not None and now != head.get(p) and not force:
            modified.append(p)
            continue
        todo.append((p, data))
    if modified:
        raise ModifiedOutError(modified)
    from mlmake.atomic import atomic_write

    for p, data in todo:
        full = os.path.join(root, p)
        os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
        atomic_write(full, data)
    return [p for p, _ in todo], absent


def get(root: str, lock_path: str, rev: str, path: str, dest: str, store: Store) -> str:
    """Write the file or directory `path` as it was at `rev` to `dest`; returns the source:
    "cache" for a recorded out, "git" for a tracked file."""
    rel = os.path.normpath(path).replace(os.sep, "/").rstrip("/")
    sha, old = lock_at(root, lock_path, rev)
    for outs in [e.outs for e in old.entries.values()] + [sources.out_records(old)]:
        for out, rec in outs.items():
            if rel == out or rel.startswith(out + "/"):
                if rec.metric:
                    break
                inner = "" if rel == out else rel[len(out) + 1:]
                store.export(rec, dest, inner)
                return "cache"
    data = git.file_at(root, os.path.join(root, rel), rev)
    if data is None:
        raise UsageError(f"'{rel}' is neither an output recorded in {rev} ({sha[:10]}) nor a "
                         "file committed there.")
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    with open(dest, "wb") as fh:
        fh.write(data)
    return "git"
