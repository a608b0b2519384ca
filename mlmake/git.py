"""Git access through pygit2: the only module that imports it."""

from __future__ import annotations

import os
from typing import Any

from mlmake.errors import GitError


def _pygit2() -> Any:
    import pygit2

    return pygit2


def open_repo(path: str) -> Any | None:
    """The repository containing `path`, or None outside Git."""
    pygit2 = _pygit2()
    found = pygit2.discover_repository(path)
    if not found:
        return None
    return pygit2.Repository(found)


def head_commit(path: str) -> str | None:
    """Full sha of HEAD of the repository containing `path` (None: no repo or no commit)."""
    try:
        repo = open_repo(path)
    except Exception:  # noqa: BLE001 - pygit2 raises bare GitError/KeyError types
        return None
    if repo is None or repo.head_is_unborn:
        return None
    return str(repo.head.target)


def resolve(repo: Any, rev: str) -> Any:
    """The commit object that `rev` names; GitError naming it otherwise."""
    try:
        obj = repo.revparse_single(rev)
        return obj.peel(_pygit2().Commit)
    except (KeyError, ValueError, Exception) as exc:  # noqa: BLE001
        raise GitError(f"unknown revision '{rev}': {exc}. Use a branch, tag or commit "
                       "that exists (`git log --oneline`).") from None


def read_blob(repo: Any, commit: Any, relpath: str) -> bytes | None:
    """Bytes of `relpath` (relative to the repo work dir) in `commit`, or None if absent."""
    try:
        entry = commit.tree[relpath]
    except KeyError:
        return None
    obj = repo[entry.id]
    return obj.data if hasattr(obj, "data") else None


def workdir_relpath(repo: Any, path: str) -> str:
    """`path` relative to the repository's work dir, POSIX style."""
    base = os.path.realpath(repo.workdir)
    rel = os.path.relpath(os.path.realpath(path), base)
    return "" if rel == "." else rel.replace(os.sep, "/")
