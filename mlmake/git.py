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


def lock_text_at(root: str, lock_path: str, rev: str) -> tuple[str, str]:
    """(full sha, text of the lock file) at `rev`; the text is '' when the commit has none."""
    repo = open_repo(root)
    if repo is None:
        raise GitError(f"'{root}' is not inside a Git repository, so revision '{rev}' means "
                       "nothing here. Run `git init` and commit the project.")
    commit = resolve(repo, rev)
    data = read_blob(repo, commit, workdir_relpath(repo, lock_path))
    return str(commit.id), (data or b"").decode("utf-8")


def file_at(root: str, path: str, rev: str) -> bytes | None:
    """Bytes of the work-tree path `path` as committed at `rev` (None when absent)."""
    repo = open_repo(root)
    if repo is None:
        raise GitError(f"'{root}' is not inside a Git repository.")
    return read_blob(repo, resolve(repo, rev), workdir_relpath(repo, path))


def all_lock_texts(root: str, lock_path: str) -> list[str]:
    """The lock file's text in every commit reachable from any branch, tag or HEAD."""
    pygit2 = _pygit2()
    repo = open_repo(root)
    if repo is None:
        return []
    rel = workdir_relpath(repo, lock_path)
    tips = set()
    for name in repo.references:
        try:
            obj = repo.references[name].peel(pygit2.Commit)
        except (ValueError, KeyError, Exception):  # noqa: BLE001 - refs to non-commits
            continue
        tips.add(obj.id)
    if not repo.head_is_unborn:
        tips.add(repo.head.target)
    seen_commits: set[Any] = set()
    seen_blobs: set[Any] = set()
    texts = []
    for tip in tips:
        walker = repo.walk(tip, pygit2.enums.SortMode.NONE)
        for commit in walker:
            if commit.id in seen_commits:
                continue
            seen_commits.add(commit.id)
            try:
                entry = commit.tree[rel]
            except KeyError:
                continue
            if entry.id in seen_blobs:
                continue
            seen_blobs.add(entry.id)
            texts.append(repo[entry.id].data.decode("utf-8"))
    return texts


def read_files_at(path: str, rev: str, relpaths: list[str] | tuple[str, ...]
                  ) -> tuple[str, dict[str, bytes | None]]:
    """The full sha `rev` names and the bytes of each of `relpaths` in that commit.

    `relpaths` are relative to `path` (a directory inside a work tree, e.g. a project root in a
    subdirectory of the repository); a path that is absent, or not a file, maps to None. Nothing
    is checked out: the blobs are read from the object database.
    """
    repo = open_repo(path)
    if repo is None:
        raise GitError(f"cannot read revision '{rev}': '{path}' is not inside a Git "
                       "repository. Run `git init` and commit, or compare `workspace` only.")
    commit = resolve(repo, rev)
    prefix = workdir_relpath(repo, path)
    out: dict[str, bytes | None] = {}
    for rel in relpaths:
        full = f"{prefix}/{rel}" if prefix else rel
        try:
            out[rel] = read_blob(repo, commit, full)
        except (KeyError, ValueError):
            out[rel] = None
    return str(commit.id), out


def head_is_unborn(path: str) -> bool:
    """True when `path` is in a Git repository that has no commit yet."""
    repo = open_repo(path)
    return repo is not None and bool(repo.head_is_unborn)
