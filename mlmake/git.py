"""Git access through pygit2: the only module that imports it."""

from __future__ import annotations

import os
import posixpath
from typing import Any

from mlmake.errors import GitError, RevisionError


def _pygit2() -> Any:
    import pygit2

    return pygit2


def _lookup_errors() -> tuple[type[BaseException], ...]:
    """What pygit2 raises when a name or object is not there or not what was asked for: its
    GitError family (NotFoundError, InvalidSpecError, ...), and the bare KeyError and
    ValueError its C core raises for libgit2's not-found and invalid codes."""
    return (_pygit2().GitError, KeyError, ValueError)


def _read_errors() -> tuple[type[BaseException], ...]:
    """`_lookup_errors`, and OSError for a repository that cannot be read (permissions, a
    vanished work tree)."""
    return (*_lookup_errors(), OSError)


def open_repo(path: str) -> Any | None:
    """The repository containing `path`, or None outside Git."""
    pygit2 = _pygit2()
    found = pygit2.discover_repository(path)
    if not found:
        return None
    return pygit2.Repository(found)


def head_commit(path: str) -> str | None:
    """Full sha of HEAD of the repository containing `path` (None: no repo or no commit).
    Read from the files under .git when they are plain (a build asks this before it
    starts, and pygit2 costs ~50 ms to load and unload); pygit2 answers otherwise."""
    quick = _quick_head(path)
    if quick is not None:
        return quick or None
    try:
        repo = open_repo(path)
        if repo is None or repo.head_is_unborn:
            return None
        return str(repo.head.target)
    except _read_errors():
        return None


def is_dirty(path: str, ignore: set[str] | frozenset[str] = frozenset()) -> bool | None:
    """True when a tracked file of the repository containing `path` differs from HEAD (in
    the index or the work tree), leaving out `ignore` (paths relative to `path`: what a
    build writes itself, such as the lock and metrics); None outside Git or before the
    first commit. Untracked files do not count, as for `git describe --dirty`. Asked of
    `git status` when the git command is there, else of pygit2."""
    quick = _quick_head(path)
    if quick == "":
        return None  # an unborn branch
    changed = _status_paths(path) if quick is not None else None
    if changed is not None:
        base = os.path.relpath(os.path.realpath(path), os.path.realpath(_top(path) or path))
        base = "" if base == "." else base.replace(os.sep, "/")
        skip = {posixpath.join(base, p) if base else p for p in ignore}
        return any(p not in skip and not any(p.startswith(s + "/") for s in skip)
                   for p in changed)
    try:
        repo = open_repo(path)
        if repo is None or repo.head_is_unborn:
            return None
        base = workdir_relpath(repo, path)
        skip = {posixpath.join(base, p) if base else p for p in ignore}
        changed = repo.status(untracked_files="no")
    except _read_errors():
        return None
    return any(p not in skip and not any(p.startswith(s + "/") for s in skip)
               for p in changed)


def _top(path: str) -> str | None:
    """The nearest directory at or above `path` holding a `.git` (directory or file)."""
    here = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _quick_head(path: str) -> str | None:
    """HEAD's sha read from the files of a plain repository or worktree: '' for an unborn
    branch; None when this cannot tell (no repository, reftable, anything unusual), and
    pygit2 should be asked."""
    top = _top(path)
    if top is None:
        return None
    try:
        gitdir = os.path.join(top, ".git")
        if os.path.isfile(gitdir):
            with open(gitdir, encoding="utf-8") as fh:
                line = fh.read().strip()
            if not line.startswith("gitdir: "):
                return None
            gitdir = os.path.join(top, line[len("gitdir: "):])
        common = gitdir
        if os.path.isfile(os.path.join(gitdir, "commondir")):
            with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as fh:
                common = os.path.join(gitdir, fh.read().strip())
        with open(os.path.join(gitdir, "HEAD"), encoding="utf-8") as fh:
            head = fh.read().strip()
        for _ in range(5):  # symbolic refs, followed a few levels
            if not head.startswith("ref: "):
                return head if len(head) in (40, 64) and _is_hex(head) else None
            ref = head[len("ref: "):]
            if not ref.startswith("refs/") or ref == "refs/heads/.invalid":  # (reftable)
                return None
            where = gitdir if ref.startswith(("refs/bisect/", "refs/worktree/")) else common
            try:
                with open(os.path.join(where, *ref.split("/")), encoding="utf-8") as fh:
                    head = fh.read().strip()
                continue
            except FileNotFoundError:
                packed = _packed_ref(common, ref)
                return "" if packed is None else packed
        return None
    except (OSError, UnicodeDecodeError):
        return None


def _packed_ref(common: str, ref: str) -> str | None:
    try:
        with open(os.path.join(common, "packed-refs"), encoding="utf-8") as fh:
            for line in fh:
                sha, _, name = line.rstrip("\n").partition(" ")
                if name == ref and _is_hex(sha):
                    return sha
    except FileNotFoundError:
        pass
    return None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _status_paths(path: str) -> list[str] | None:
    """Paths (from the work tree's root) of tracked files that differ from HEAD in the index
    or the work tree, from `git status`; None when the git command cannot say."""
    import shutil
    import subprocess

    exe = shutil.which("git")
    if exe is None:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # as pygit2
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never rewrite the index (a hook's git may hold it)
    try:
        r = subprocess.run([exe, "-C", path, "status", "--porcelain=v2", "-z", "-uno"],
                           capture_output=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    out: list[str] = []
    fields = r.stdout.decode("utf-8", "surrogateescape").split("\0")
    i = 0
    while i < len(fields):
        f = fields[i]
        i += 1
        kind = f[:1]
        if kind == "1":
            out.append(f.split(" ", 8)[8])
        elif kind == "2":
            out.append(f.split(" ", 9)[9])
            out.append(fields[i])  # the path it was renamed or copied from
            i += 1
        elif kind == "u":
            out.append(f.split(" ", 10)[10])
    return out


def resolve(repo: Any, rev: str) -> Any:
    """The commit object that `rev` names; RevisionError naming it otherwise."""
    try:
        obj = repo.revparse_single(rev)
        return obj.peel(_pygit2().Commit)
    except _lookup_errors() as exc:
        why = str(exc).strip().strip("'\"")
        why = f" ({why})" if why and why != rev else ""  # pygit2 often just repeats it
        raise RevisionError(f"unknown revision '{rev}'{why}. Use a branch, tag or commit "
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
        raise RevisionError(f"'{root}' is not inside a Git repository, so revision '{rev}' "
                            "means nothing here. Run `git init` and commit the project.")
    commit = resolve(repo, rev)
    data = read_blob(repo, commit, workdir_relpath(repo, lock_path))
    return str(commit.id), (data or b"").decode("utf-8")


def file_at(root: str, path: str, rev: str) -> bytes | None:
    """Bytes of the work-tree path `path` as committed at `rev` (None when absent)."""
    repo = open_repo(root)
    if repo is None:
        raise RevisionError(f"'{root}' is not inside a Git repository.")
    return read_blob(repo, resolve(repo, rev), workdir_relpath(repo, path))


def all_lock_texts(root: str, lock_path: str) -> list[str]:
    """The lock file's text in every commit reachable from any branch, tag or HEAD."""
    return [text for _, text in lock_history(root, lock_path)]


def lock_history(root: str, lock_path: str, newest_first: bool = False
                 ) -> list[tuple[str, str]]:
    """(commit sha, lock text) for each distinct lock file in every commit reachable from
    any branch, tag or HEAD; the sha is the first commit met that holds that text (with
    `newest_first`, the newest one)."""
    pygit2 = _pygit2()
    repo = open_repo(root)
    if repo is None:
        return []
    rel = workdir_relpath(repo, lock_path)
    tips = set()
    for name in repo.references:
        try:
            obj = repo.references[name].peel(pygit2.Commit)
        except _lookup_errors():  # a ref to a tree or blob, or one deleted meanwhile
            continue
        tips.add(obj.id)
    if not repo.head_is_unborn:
        tips.add(repo.head.target)
    seen_commits: set[Any] = set()
    seen_blobs: set[Any] = set()
    found: list[tuple[str, str]] = []
    order = pygit2.enums.SortMode.TIME if newest_first else pygit2.enums.SortMode.NONE
    for tip in tips:
        walker = repo.walk(tip, order)
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
            found.append((str(commit.id), repo[entry.id].data.decode("utf-8")))
    return found


def read_files_at(path: str, rev: str, relpaths: list[str] | tuple[str, ...]
                  ) -> tuple[str, dict[str, bytes | None]]:
    """The full sha `rev` names and the bytes of each of `relpaths` in that commit.

    `relpaths` are relative to `path` (a directory inside a work tree, e.g. a project root in a
    subdirectory of the repository); a path that is absent, or not a file, maps to None. Nothing
    is checked out: the blobs are read from the object database.
    """
    repo = open_repo(path)
    if repo is None:
        raise RevisionError(f"cannot read revision '{rev}': '{path}' is not inside a Git "
                            "repository. Run `git init` and commit, or compare `workspace` "
                            "only.")
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


def rev_sha(path: str, rev: str) -> str:
    """The full sha of the commit `rev` names in the repository containing `path`."""
    repo = open_repo(path)
    if repo is None:
        raise RevisionError(f"'{path}' is not inside a Git repository, so revision '{rev}' "
                            "means nothing here. Run `git init` and commit the project.")
    return str(resolve(repo, rev).id)


def workdir(path: str) -> str | None:
    """The work tree root of the repository containing `path` (None outside Git)."""
    repo = open_repo(path)
    return None if repo is None or repo.workdir is None else os.path.realpath(repo.workdir)


def history(path: str, limit: int) -> tuple[str | None, list[dict[str, Any]]]:
    """The current branch (None when HEAD is detached) and its last `limit` commits along
    first parents, newest first, each as {sha, subject, author, time (epoch seconds)}."""
    repo = open_repo(path)
    if repo is None or repo.head_is_unborn:
        return None, []
    branch = None if repo.head_is_detached else repo.head.shorthand
    out: list[dict[str, Any]] = []
    commit = repo[repo.head.target]
    while commit is not None and len(out) < limit:
        out.append({"sha": str(commit.id), "subject": commit.message.split("\n", 1)[0],
                    "author": commit.author.name, "time": commit.commit_time})
        commit = commit.parents[0] if commit.parents else None
    return branch, out


def add_worktree(path: str, dest: str, sha: str) -> None:
    """Check out commit `sha` into a new detached worktree at `dest` (git worktree add);
    the repository's own work tree, index and HEAD are not touched."""
    import subprocess

    # no hooks: an installed post-checkout hook must not act on this throwaway checkout
    r = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach",
                        "--quiet", dest, sha], cwd=path, capture_output=True, text=True)
    if r.returncode != 0:
        raise GitError(f"cannot create a worktree for {sha[:12]} at '{dest}': "
                       f"{r.stderr.strip() or r.stdout.strip()}")


def remove_worktree(path: str, dest: str) -> None:
    """Remove the worktree at `dest` and Git's record of it (its files go whatever state
    they are in; the object store they may link to is elsewhere)."""
    import shutil
    import subprocess

    r = subprocess.run(["git", "worktree", "remove", "--force", "--force", dest], cwd=path,
                       capture_output=True, text=True)
    if r.returncode != 0 or os.path.lexists(dest):
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=path, capture_output=True, text=True)


def git_dir(path: str) -> str | None:
    """The Git directory of the work tree containing `path` (a worktree's own one), or None."""
    repo = open_repo(path)
    return None if repo is None else str(repo.path)


def parents(path: str, rev: str) -> list[str]:
    """Full shas of the parents of commit `rev` in the repository containing `path`."""
    repo = open_repo(path)
    if repo is None:
        raise RevisionError(f"'{path}' is not inside a Git repository.")
    return [str(p) for p in resolve(repo, rev).parent_ids]
