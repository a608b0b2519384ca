"""Triggered runs of published endpoints: a request checked against its endpoint and the params at
its rev, then built in an isolated Git worktree under .mlmake/worktrees/ that shares the
project's object store, run cache and run records (never its work tree, index or lock)."""

from __future__ import annotations

import glob as globmod
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mlmake.errors import GitError, MlmakeError, UsageError
from mlmake.hashing import is_glob

if TYPE_CHECKING:
    from mlmake.graph import Graph
    from mlmake.model import Pipeline
    from mlmake.runs import RunStore

T = TypeVar("T")

WORKTREES = "worktrees"
FINAL = ("succeeded", "failed", "interrupted")
STOPPED = "the service stopped before this run finished"
# Git's worktree records are shared by every thread and process on the repository: one
# `worktree add` or `remove` at a time (threads here, processes through a file lock).
_GIT_LOCK = threading.Lock()


class Rejected(UsageError):
    """A trigger that cannot be queued: an unknown endpoint (`status` 404), or a param, value
    or rev the endpoint does not accept (400). `detail` names what was wrong."""

    def __init__(self, message: str, status: int = 400, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Request:
    """A checked trigger: what to build (the endpoint's targets at `commit`) and how."""

    id: str
    endpoint: str
    targets: tuple[str, ...]
    params: dict[str, Any]
    rev: str
    commit: str
    trigger: str
    queued: float


def new_run_id() -> str:
    """An opaque, sortable run id (`20250101-120000-1a2b3c4d`), unique enough to name a
    worktree directory."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


# -- checking a trigger ------------------------------------------------------------------------
def check(pipeline: Pipeline, endpoint: str, params: object, rev: object, trigger: str,
          commit_of: Callable[[str], str], params_at: Callable[[str], dict[str, Any]]
          ) -> Request:
    """Validate a trigger against the endpoint and the params at its rev (`commit_of(rev)`
    names the commit, GitError otherwise; `params_at(commit)` gives its flattened params);
    Rejected names the first problem. Nothing is recorded or queued here."""
    from mlmake.params import flatten

    spec = pipeline.endpoints.get(endpoint)
    if spec is None:
        known = sorted(pipeline.endpoints)
        raise Rejected(f"unknown endpoint '{endpoint}'; this project publishes "
                       f"{', '.join(known) or 'none'}.", 404, endpoint=endpoint,
                       endpoints=known)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise Rejected("\"params\" must be a JSON object of dotted param names to values.",
                       field="params")
    params = flatten(params)  # {"train": {"lr": 0.1}} means {"train.lr": 0.1}
    if rev is None:
        rev = spec.rev
    if not isinstance(rev, str) or not rev.strip():
        raise Rejected("\"rev\" must be a branch, tag or commit name.", field="rev")
    try:
        commit = commit_of(rev)
    except GitError:
        raise Rejected(f"unknown rev '{rev}': no branch, tag or commit has that name.",
                       rev=rev) from None
    values: dict[str, Any] | None = None
    for key, value in params.items():
        if not any(key == a or key.startswith(a + ".") for a in spec.params):
            raise Rejected(f"param '{key}' is not allowed by endpoint '{endpoint}'; it "
                           f"allows {', '.join(spec.params) or 'no params'}.", param=key,
                           allowed=list(spec.params))
        if values is None:
            values = params_at(commit)
        if key not in values:
            if any(k.startswith(key + ".") for k in values):
                raise Rejected(f"param '{key}' is a table at rev '{rev}'; override its "
                               "keys one by one (e.g. train.lr).", param=key, rev=rev)
            raise Rejected(f"param '{key}' is not in the params files at rev '{rev}'.",
                           param=key, rev=rev)
        want, got = _kind(values[key]), _kind(value)
        if got != want and not (want == "number" and got == "integer"):
            raise Rejected(f"param '{key}' must be {_article(want)}, like its value "
                           f"{values[key]!r} at rev '{rev}', not {_article(got)}.",
                           param=key, expected=want, got=got)
    return Request(id=new_run_id(), endpoint=endpoint, targets=spec.targets,
                   params=dict(params), rev=rev, commit=commit, trigger=trigger,
                   queued=time.time())


def params_at(root: str, mlfile: str, rev: str) -> dict[str, Any]:
    """The flattened params (dotted key → value) of the project at `root` as committed at
    `rev`, read from Git objects: the params files that its Mlfile (`mlfile`, relative to
    `root`) names there, read by the Mlfile parser, else the default files; merged in order.
    A file that is absent or does not parse adds nothing."""
    from mlmake import git
    from mlmake import mlfile as mlfile_mod
    from mlmake import params as params_mod

    commit, blobs = git.read_files_at(root, rev, [mlfile])
    files: tuple[str, ...] | None = None
    text = blobs[mlfile]
    if text is not None:
        try:
            files = mlfile_mod.params_files(text.decode("utf-8"), os.path.join(root, mlfile))
        except (MlmakeError, UnicodeDecodeError):
            files = None
    if files is None:
        files = params_mod.DEFAULT_FILES
    _, data = git.read_files_at(root, commit, files)
    merged: dict[str, Any] = {}
    for f in files:
        raw = data.get(f)
        if raw is None:
            continue
        try:
            params_mod.merge(merged, params_mod.read(raw, f))
        except MlmakeError:
            continue
    return params_mod.flatten(merged)


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "table"
    return "null" if v is None else type(v).__name__


def _article(kind: str) -> str:
    return {"integer": "an integer", "null": "null"}.get(kind, f"a {kind}")


# -- recording ---------------------------------------------------------------------------------
def record_queued(runs: RunStore, req: Request) -> None:
    """Record a checked request as a queued build, with its params and endpoint (the build
    keeps them when it starts under the same id)."""
    runs.start_build(req.id, req.trigger, req.commit, req.queued, list(req.targets), "local",
                     params=req.params, endpoint=req.endpoint, status="queued")


def repo_root(root: str) -> str:
    """The top of the Git work tree holding the project at `root`; a UsageError outside Git,
    since triggered runs build commits."""
    from mlmake import git

    top = git.workdir(root)
    if top is None:
        raise UsageError(f"'{root}' is not inside a Git repository; triggered runs build "
                         "commits. Run `git init` and commit the project.")
    return top


def recover(root: str, state_dir: str, runs: RunStore) -> list[str]:
    """Clean up after a service that died: remove its leftover worktrees and mark the runs
    it had queued or was building as interrupted. Returns their ids."""
    from mlmake import git

    top = repo_root(root)
    found: list[str] = []
    base = os.path.join(state_dir, WORKTREES)
    leftovers = sorted(os.listdir(base)) if os.path.isdir(base) else []
    for name in leftovers:
        with _worktree_lock(state_dir):
            git.remove_worktree(top, os.path.join(base, name))
        b = runs.build(name)
        if b is not None and b["status"] not in FINAL:
            found.append(name)
    for b in runs.builds(500):
        if b["status"] == "queued":
            found.append(b["id"])
    for rid in dict.fromkeys(found):
        runs.update_build(rid, status="interrupted", finished=time.time(), message=STOPPED)
    return found


# -- building ----------------------------------------------------------------------------------
def build(req: Request, root: str, state_dir: str, runs: RunStore,
          run: Callable[[str], T]) -> T | None:
    """Build `req` in a fresh worktree of its commit under `state_dir`/worktrees/ID (this
    thread), record how it ended, and remove the worktree.

    `root` is the project directory in the user's work tree; `run(wroot)` builds the same
    directory inside the worktree, recording the build under `req.id`, and what it returns
    is returned. An MlmakeError is recorded on the run as its failure, not raised (None is
    returned); anything else propagates once the run is marked interrupted and the worktree
    is gone.
    """
    runs.update_build(req.id, status="running", started=time.time())
    try:
        return in_worktree(root, state_dir, req.commit, req.id, run)
    except MlmakeError as exc:
        runs.update_build(req.id, status="failed", finished=time.time(), message=str(exc))
        return None
    finally:
        b = runs.build(req.id) or {}
        if b.get("status") not in FINAL:  # stopped before its build was recorded
            runs.update_build(req.id, status="interrupted", finished=time.time(),
                              message=STOPPED)


def in_worktree(root: str, state_dir: str, commit: str, wid: str, run: Callable[[str], T],
                area: str = WORKTREES) -> T:
    """Check `commit` out in a fresh Git worktree at `state_dir`/`area`/`wid`, call
    `run(wroot)` with the project directory inside it, and remove the worktree whatever
    happens; returns what `run` returns."""
    from mlmake import git

    top = repo_root(root)
    wt = os.path.join(state_dir, area, wid)
    with _worktree_lock(state_dir):
        os.makedirs(os.path.dirname(wt), exist_ok=True)
        git.add_worktree(top, wt, commit)
    try:
        return run(os.path.normpath(os.path.join(wt, os.path.relpath(root, top))))
    finally:
        with _worktree_lock(state_dir):
            git.remove_worktree(top, wt)


@contextmanager
def _worktree_lock(state_dir: str) -> Iterator[None]:
    from mlmake.filelock import file_lock

    os.makedirs(os.path.join(state_dir, WORKTREES), exist_ok=True)
    with _GIT_LOCK, file_lock(os.path.join(state_dir, WORKTREES + ".lock")):
        yield


def seed_stat_cache(src: str, dst: str) -> None:
    """Start the worktree's stat cache (`dst`) from the project's (`src`): files linked in
    from the work tree keep their inode, size and mtime, so they are not hashed again."""
    if os.path.exists(src):
        try:
            shutil.copyfile(src, dst)
        except OSError:
            pass


def link_untracked(root: str, source_root: str, graph: Graph, names: set[str],
                   sources: Iterable[str] = ()) -> list[str]:
    """Symlink into the worktree project at `root` the deps of the targets `names` that the
    commit lacks and no target produces, from the project's work tree (`source_root`).
    The data `sources` the rev records are not linked: they come from the cache, as that
    rev has them. Returns what it linked."""
    outs = [o for t in graph.targets.values() for o in t.all_outs] + list(sources)
    linked: list[str] = []

    def inside_out(rel: str) -> bool:
        return any(rel == o or rel.startswith(o + "/") for o in outs)

    def link(rel: str) -> None:
        if inside_out(rel):
            return
        src = os.path.join(source_root, rel)
        dst = os.path.join(root, rel)
        if not os.path.lexists(src):
            return
        if not os.path.lexists(dst):
            if os.path.isdir(src) and any(o.startswith(rel + "/") for o in outs):
                os.makedirs(dst, exist_ok=True)  # holds an out: link file by file below
            else:
                os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
                os.symlink(src, dst)
                linked.append(rel)
                return
        if os.path.isdir(src) and os.path.isdir(dst) and not os.path.islink(dst):
            for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
                sub = os.path.relpath(dirpath, source_root).replace(os.sep, "/")
                dirnames[:] = [d for d in dirnames if not inside_out(f"{sub}/{d}")]
                for f in filenames:
                    r = f"{sub}/{f}"
                    d = os.path.join(root, r)
                    if not os.path.lexists(d) and not inside_out(r):
                        os.makedirs(os.path.dirname(d), exist_ok=True)
                        os.symlink(os.path.join(source_root, r), d)
                        linked.append(r)

    for name in sorted(names):
        for dep in graph.targets[name].deps:
            if is_glob(dep):
                for m in sorted(globmod.glob(dep, root_dir=source_root, recursive=True)):
                    link(m.replace(os.sep, "/"))
            else:
                link(dep)
    return linked
