"""Experiments: the work tree's code built with other params in isolated worktrees that share
the cache, queued singly or as grids, run N at a time, and kept, branched, removed or shared.

A layer over Project, as serve/ is: it orchestrates builds of other commits through Project's
methods (build_commit, checkout, push_locks, ...); nothing in the engine imports it."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake import events as ev
from mlmake import exp_store
from mlmake.errors import MlmakeError, UsageError
from mlmake.exp_store import Experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from mlmake.lockfile import Lock
    from mlmake.project import BuildResult, Project

Progress = Callable[[str, ev.Event], None]  # (experiment name, build event), from any thread


@dataclass(frozen=True)
class Queued:
    """An experiment waiting in .mlmake/exps/queue: what to build and from which code."""

    name: str
    base: str
    code: str | None
    overrides: dict[str, Any]
    targets: tuple[str, ...]
    queued: float

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "code": self.code,
                "overrides": self.overrides, "targets": list(self.targets),
                "queued": self.queued}


@dataclass
class ShareResult:
    """What `push`/`pull` of experiments moved: their names, the cache transfer (None
    when no mlmake remote is configured: the refs alone travelled) and what happened to
    the refs (an exp_store.RefSync)."""

    experiments: list[str] = field(default_factory=list)
    cache: Any = None
    refs: exp_store.RefSync | None = None


# -- -S KEY=VALUE and grids --------------------------------------------------------------------
def parse_sets(sets: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """The override sets that `-S KEY=V1,V2 …` options make: their Cartesian product, in
    order (one empty set when there are none). A value is read as TOML (`0.1`, `true`,
    `"a,b"`, `[1, 2]`), else as a string."""
    axes: dict[str, list[Any]] = {}
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"-S {item}: expected KEY=VALUE (e.g. -S train.lr=0.01, or a "
                             "comma list -S train.lr=0.01,0.1 for a grid).")
        axes.setdefault(key, []).extend(_value(v) for v in _split(text))
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def _split(text: str) -> list[str]:
    """Split at commas outside quotes and brackets."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def _value(text: str) -> Any:
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _kind(v: Any) -> str:
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                    (str, "a string"), (list, "a list"), (dict, "a table")):
        if isinstance(v, t):
            return name
    return "null"


def check_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Refuse a param the params files lack, or a value of another type than the file's
    (an integer may stand for a number)."""
    for key, value in overrides.items():
        if key not in values:
            if any(k.startswith(key + ".") for k in values):
                raise UsageError(f"param '{key}' is a table; set its keys one by one "
                                 f"(e.g. -S {key}.x=1).")
            raise UsageError(f"param '{key}' is not in the params files; known params: "
                             f"{', '.join(sorted(values)) or 'none'}.")
        want, got = _kind(values[key]), _kind(value)
        if got != want and not (want == "a number" and got == "an integer"):
            raise UsageError(f"param '{key}' must be {want}, like its value "
                             f"{values[key]!r} in the params files, not {got} ({value!r}).")


class _Forward:
    def __init__(self, name: str, progress: Progress) -> None:
        self.name, self.progress = name, progress

    def emit(self, event: ev.Event) -> None:
        self.progress(self.name, event)


# -- the experiments of a project --------------------------------------------------------------
class Experiments:
    """The experiments of `project`: queue, run, list, apply, branch, remove, share."""

    def __init__(self, project: Project) -> None:
        from mlmake import git

        self.project = project
        root = git.workdir(project.root)
        if root is None:
            raise UsageError(f"'{project.root}' is not inside a Git repository; experiments "
                             "are recorded in Git. Run `git init` and commit the project.")
        self.repo_root = root
        self._active: dict[str, Project] = {}
        self._lock = threading.Lock()

    # -- queueing --------------------------------------------------------------------------
    def queue(self, sets: tuple[str, ...] | list[str] = (), name: str | None = None,
              targets: tuple[str, ...] | list[str] = ()) -> list[Queued]:
        """Queue one experiment per override set of `sets` (a grid for comma lists) on a
        snapshot of the work tree as it is now; nothing runs."""
        from mlmake import params as params_mod

        grid = parse_sets(sets)
        p = self.project
        values = params_mod.flatten(params_mod.load(p.root, p.pipeline.params_files))
        for overrides in grid:
            check_overrides(values, overrides)
        p.requested(tuple(targets))  # unknown targets are refused before anything is queued
        base, code = exp_store.snapshot(self.repo_root, p.state_path("exps"))
        taken = {e.name for e in self.recorded()} | {q.name for q in self.queued()}
        out: list[Queued] = []
        for i, overrides in enumerate(grid):
            n = (f"{name}-{i + 1}" if len(grid) > 1 else name) if name else _new_name(taken)
            if n in taken:
                raise UsageError(f"an experiment named '{n}' exists already; pick another "
                                 "--name or remove it (`mlmake exp remove`).")
            exp_store.check_name(self.repo_root, n)
            taken.add(n)
            q = Queued(n, base, code, overrides, tuple(targets), time.time())
            from mlmake.atomic import atomic_write

            atomic_write(os.path.join(self._queue_dir(), f"{q.queued:.6f}-{n}.json"),
                         json.dumps(q.as_json(), indent=2, default=str))
            out.append(q)
        return out

    def _queue_dir(self, sub: str = "queue") -> str:
        path = self.project.state_path("exps", sub)
        os.makedirs(path, exist_ok=True)
        return path

    def queued(self) -> list[Queued]:
        """The experiments waiting to run, oldest first."""
        out = []
        for f in sorted(os.listdir(self._queue_dir())):
            q = self._read_queued(os.path.join(self._queue_dir(), f))
            if q is not None:
                out.append(q)
        return out

    @staticmethod
    def _read_queued(path: str) -> Queued | None:
        try:
            with open(path) as fh:
                d = json.load(fh)
        except (OSError, ValueError):
            return None
        return Queued(d["name"], d["base"], d.get("code"), dict(d.get("overrides") or {}),
                      tuple(d.get("targets") or ()), float(d.get("queued", 0)))

    # -- running ---------------------------------------------------------------------------
    def run(self, sets: tuple[str, ...] | list[str] = (), name: str | None = None,
            targets: tuple[str, ...] | list[str] = (), jobs: int = 1,
            executor: str | None = None, progress: Progress | None = None,
            address: str | None = None) -> list[Experiment]:
        """Queue the experiments of `sets` and run them (`jobs` at a time); returns them
        recorded, in queue order."""
        names = [q.name for q in self.queue(sets, name, targets)]
        return self.start(jobs, executor, progress, names, address)

    def start(self, jobs: int = 1, executor: str | None = None,
              progress: Progress | None = None, names: list[str] | None = None,
              address: str | None = None) -> list[Experiment]:
        """Run the queued experiments (those of `names`, else all), `jobs` at a time, each in
        its own worktree; a target key that two of them need is built once (the key claim
        makes the second wait, then it restores the first's result from the run cache).
        `address`: the Ray cluster that the "ray" executor joins (all the experiments share
        this process's one connection to it)."""
        claimed: list[tuple[Queued, str]] = []
        qdir, rdir = self._queue_dir(), self._queue_dir("running")
        for f in sorted(os.listdir(qdir)):
            q = self._read_queued(os.path.join(qdir, f))
            if q is None or (names is not None and q.name not in names):
                continue
            try:  # the rename is the claim: two `exp start` never take the same one
                os.rename(os.path.join(qdir, f), os.path.join(rdir, f))
            except FileNotFoundError:
                continue
            claimed.append((q, os.path.join(rdir, f)))
        if not claimed:
            return []
        progress = progress or (lambda n, e: None)
        from mlmake.executors import held

        options = {"address": address} if address else {}
        with held(executor or self.project.pipeline.executor, address), \
                ThreadPoolExecutor(max(1, jobs), thread_name_prefix="mlmake-exp") as pool:
            futures = [pool.submit(self._run_one, q, path, executor, progress, options)
                       for q, path in claimed]
            try:
                return [f.result() for f in futures]
            except BaseException:
                self.cancel()
                raise

    def cancel(self) -> None:
        """Stop the experiments building now (from another thread)."""
        with self._lock:
            for wp in self._active.values():
                wp.cancel()

    def _run_one(self, q: Queued, claim: str, executor: str | None,
                 progress: Progress, options: dict[str, Any] | None = None) -> Experiment:
        from mlmake.trigger import new_run_id

        build_id = new_run_id()
        rep = _Forward(q.name, progress)
        area = os.path.join("exps", "worktrees")
        worktree = self.project.state_path(area, build_id)

        def started(wp: Project) -> None:
            with self._lock:
                self._active[q.name] = wp

        def inspect(wp: Project, result: BuildResult) -> Experiment:
            return wp.record_experiment(worktree, q.name, q.base, q.code, q.overrides,
                                        q.targets, build_id,
                                        "succeeded" if result.ok else "failed")

        try:
            return self.project.build_commit(q.code or q.base, q.targets, q.overrides,
                                             build_id, inspect, reporter=rep,
                                             executor=executor, started=started, area=area,
                                             executor_options=options)
        except MlmakeError as exc:
            rep.emit(ev.Notice(str(exc), "error"))
            return Experiment(q.name, "", q.base, q.code, "failed", time.time(), q.targets,
                              q.overrides, run_id=build_id, message=str(exc))
        finally:
            with self._lock:
                self._active.pop(q.name, None)
            if os.path.exists(claim):
                os.unlink(claim)

    # -- reading ---------------------------------------------------------------------------
    def recorded(self) -> list[Experiment]:
        """Every recorded experiment, oldest first."""
        return exp_store.load(self.repo_root)

    def get(self, ident: str) -> Experiment:
        """The experiment named `ident`, or whose commit starts with it."""
        exps = self.recorded()
        for e in exps:
            if e.name == ident:
                return e
        hits = [e for e in exps if len(ident) >= 4 and e.commit.startswith(ident)]
        if len(hits) == 1:
            return hits[0]
        known = ", ".join(e.name for e in exps[-8:]) or "none yet"
        raise UsageError(f"no experiment '{ident}'; `mlmake exp show` lists them "
                         f"(latest: {known}).")

    def code_diff(self, ident: str) -> str:
        """The patch of uncommitted code that experiment `ident` ran."""
        return exp_store.code_diff(self.repo_root, self.get(ident))

    # -- keeping ---------------------------------------------------------------------------
    def apply(self, ident: str, force: bool = False) -> Experiment:
        """Bring experiment `ident` into the work tree: its code, params, lock and metrics
        files (index too, so `git commit` makes it the baseline) and its outs linked from the
        cache, after fetching those it lacks from the mlmake remote; nothing runs.
        Uncommitted edits it would overwrite refuse it unless `force`."""
        from mlmake import noop

        exp = self.get(ident)
        if not force:
            lock_rel = os.path.relpath(self.project.lock_path, self.repo_root)
            dirty = exp_store.changed_paths(self.repo_root, "HEAD") - {lock_rel}
            clash = sorted(dirty & exp_store.changed_paths(self.repo_root, exp.commit))
            if clash:
                raise UsageError(f"exp apply would overwrite uncommitted changes to "
                                 f"{', '.join(clash[:5])}; commit or stash them, or pass "
                                 "--force.")
        self._fetch_outs(exp)  # before the work tree changes: a remote that fails leaves it be
        exp_store.restore(self.repo_root, exp.commit)
        noop.forget(self.project.root)
        from mlmake.project import Project

        fresh = Project(self.project.root, os.path.basename(self.project.mlfile_path),
                        shared_state=self.project.shared_state)
        fresh.checkout(force=force)
        return exp

    def branch(self, ident: str, name: str) -> Experiment:
        """Make Git branch `name` at experiment `ident`'s commit."""
        exp = self.get(ident)
        exp_store.branch(self.repo_root, exp.commit, name)
        return exp

    def remove(self, idents: tuple[str, ...] | list[str] = (), everything: bool = False,
               queued: bool = False) -> list[str]:
        """Remove experiments (by name or commit), or all of them, or the queued ones;
        returns the names removed. Their outs stay in the cache until `gc`."""
        names: list[str] = []
        waiting = {q.name: q for q in self.queued()}
        if everything or queued:
            names += self._unqueue(set(waiting))
        if everything:
            for e in self.recorded():
                exp_store.delete(self.repo_root, e.name)
                names.append(e.name)
        for ident in idents:
            if ident in waiting:
                names += self._unqueue({ident})
                continue
            e = self.get(ident)
            exp_store.delete(self.repo_root, e.name)
            names.append(e.name)
        return list(dict.fromkeys(names))

    def _unqueue(self, names: set[str]) -> list[str]:
        qdir, gone = self._queue_dir(), []
        for f in os.listdir(qdir):
            q = self._read_queued(os.path.join(qdir, f))
            if q is not None and q.name in names:
                os.unlink(os.path.join(qdir, f))
                gone.append(q.name)
        return gone

    def kept_locks(self) -> list[Lock]:
        """The lock of every recorded experiment: what `gc` keeps besides the work tree's."""
        return self.project.experiment_locks()

    # -- sharing ---------------------------------------------------------------------------
    def git_remote(self, name: str | None = None) -> str:
        """Git remote `name`, else the one experiments are shared with by default (the
        branch's upstream remote, else `origin`, else the only one)."""
        found = name or exp_store.git_remote(self.repo_root)
        if found is None:
            raise UsageError("no Git remote to share experiments with: add one (`git remote "
                             "add origin URL`) or name one (`mlmake exp push REMOTE`).")
        return found

    def push(self, git_remote: str | None = None, remote: str | None = None,
             names: tuple[str, ...] | list[str] = ()) -> ShareResult:
        """Push the outs and run-cache entries of the experiments to the mlmake remote when
        one is configured, then their refs to the Git remote (default: `git_remote()`): all
        that it lacks, never replacing another experiment of the same name there, or those
        of `names`, which replace what the remote holds under their names."""
        exps = [self.get(n) for n in names] if names else self.recorded()
        target = self.git_remote(git_remote)
        res = ShareResult([e.name for e in exps])
        # the outs first: a teammate who sees a ref finds what it needs on the remote
        res.cache = self.project.push_locks(self.kept_locks(), remote)
        res.refs = exp_store.push_refs(self.repo_root, target,
                                       [e.name for e in exps] if names else None,
                                       replace=bool(names))
        return res

    def pull(self, git_remote: str | None = None, remote: str | None = None) -> ShareResult:
        """Fetch the experiment refs of the Git remote (default: `git_remote()`) that this
        clone lacks (keeping its own of the same name), then the outs and run-cache
        entries of every experiment from the mlmake remote when one is configured (nothing
        is linked)."""
        refs = exp_store.fetch_refs(self.repo_root, self.git_remote(git_remote))
        res = ShareResult([e.name for e in self.recorded()], refs=refs)
        res.cache = self.project.pull_locks(self.kept_locks(), remote)
        return res

    def _fetch_outs(self, exp: Experiment) -> None:
        """Download the objects of `exp`'s outs that the cache lacks from the mlmake remote
        (a clone that fetched only the experiment's ref, as `mlmake pull` does), so that
        applying it runs nothing. No remote is contacted when the cache holds them all."""
        lock_rel = os.path.relpath(self.project.lock_path, self.repo_root).replace(os.sep, "/")
        lock = exp_store.lock_at(self.repo_root, exp.commit, lock_rel)
        if lock is not None:
            self.project.pull_locks([lock], lacking_only=True)


def _new_name(taken: set[str]) -> str:
    while True:
        n = "exp-" + secrets.token_hex(3)
        if n not in taken:
            return n
