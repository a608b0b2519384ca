"""Project: the Python API over an Mlfile, the one object the CLI and the server call."""

from __future__ import annotations

import errno
import fcntl
import math
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from mlmake import events as ev
from mlmake import gitignore
from mlmake import mlfile as mlfile_mod
from mlmake.build import BuildContext, Builder
from mlmake.errors import BusyError, MlfileError, UsageError
from mlmake.executors import make_executor
from mlmake.executors.base import Capacity
from mlmake.graph import Graph
from mlmake.hashing import Hasher, StatCache
from mlmake.lockfile import Lock
from mlmake.model import Outcome, Pipeline
from mlmake.plan import Checker, Plan
from mlmake.runcache import RunCache
from mlmake.runs import RunRecord, RunStore
from mlmake.store import Store

MLFILE = "Mlfile"
STATE_DIR = ".mlmake"


@dataclass
class BuildResult:
    """What `Project.run` returns: outcomes per target and the summary (or a dry-run plan)."""

    build_id: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    summary: ev.Summary = field(default_factory=ev.Summary)
    plan: Plan | None = None

    @property
    def ok(self) -> bool:
        return self.summary.failed == 0 and self.summary.blocked == 0 \
            and not self.summary.interrupted


def find_mlfile(start: str, name: str | None = None) -> str:
    """The Mlfile for `start`: `name` when given, else the nearest `Mlfile` upwards."""
    if name:
        path = name if os.path.isabs(name) else os.path.join(start, name)
        if not os.path.isfile(path):
            raise MlfileError(f"no such Mlfile: '{name}'. Check the -f argument.", name)
        return os.path.abspath(path)
    here = os.path.abspath(start)
    while True:
        candidate = os.path.join(here, MLFILE)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            raise MlfileError("no Mlfile in this directory or any parent. Run `mlmake init` "
                              "to create one, or pass -C DIR / -f FILE.", MLFILE)
        here = parent


class Project:
    """An mlmake project: an Mlfile, its lock, and the state directory beside them."""

    def __init__(self, path: str = ".", mlfile: str | None = None) -> None:
        self.mlfile_path = find_mlfile(path, mlfile)
        self.root = os.path.dirname(self.mlfile_path)
        self.lock_path = self.mlfile_path + ".lock"
        self.state_dir = os.path.join(self.root, STATE_DIR)
        self._pipeline: Pipeline | None = None
        self._graph: Graph | None = None

    # -- loading ----------------------------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = mlfile_mod.load(self.mlfile_path)
        return self._pipeline

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = Graph.build(self.pipeline)
        return self._graph

    def state_path(self, *parts: str) -> str:
        """A path inside .mlmake/, creating the directory (which ignores itself in Git)."""
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, exist_ok=True)
            with open(os.path.join(self.state_dir, ".gitignore"), "w") as fh:
                fh.write("# mlmake's cache, stat cache, logs and run records\n*\n")
        return os.path.join(self.state_dir, *parts)

    def requested(self, targets: tuple[str, ...] | list[str] = ()) -> set[str]:
        """The targets asked for (default: [project] default, else every final target)."""
        g = self.graph
        wanted = tuple(targets) or self.pipeline.default or tuple(g.roots())
        return g.resolve(wanted, self.root)

    def select(self, targets: tuple[str, ...] | list[str] = ()) -> set[str]:
        """The requested targets and everything upstream of them."""
        return self.graph.upstream_closure(self.requested(targets))

    def _checker(self, lock: Lock | None = None) -> Checker:
        stats = StatCache(self.state_path("statcache"))
        hasher = Hasher(self.root, stats)
        return Checker(self.pipeline, self.graph, lock or Lock.read(self.lock_path), hasher,
                       self.store(stats))

    def store(self, stats: StatCache | None = None) -> Store:
        """The local object store (outs linked into this project's work tree)."""
        return Store(self.state_path("cache"), self.root,
                     stats or StatCache(self.state_path("statcache")), self.pipeline.link)

    @property
    def runcache(self) -> RunCache:
        return RunCache(self.state_path("runcache"))

    @property
    def runs_store(self) -> RunStore:
        return RunStore(self.state_path("runs.db"))

    # -- queries ----------------------------------------------------------------------------
    def status(self, targets: tuple[str, ...] | list[str] = ()) -> Plan:
        """Every selected target's state and, for stale ones, why."""
        requested = self.requested(targets)
        names = self.graph.upstream_closure(requested)
        self.graph.check_inputs(names, self.root, os.path.basename(self.mlfile_path))
        checker = self._checker()
        plan = checker.plan(names, requested=requested)
        checker.hasher.cache.save()
        return plan

    def runs(self, target: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Recorded target runs, newest first."""
        return self.runs_store.runs(target, limit)

    def log(self, target: str) -> str:
        """Path of the log of `target`'s latest run that has one."""
        for rec in self.runs_store.runs(target, 50):
            if rec.log and os.path.exists(rec.log):
                return rec.log
        if target not in self.graph.targets and target not in self.graph.variants:
            self.graph.resolve([target], self.root)
        raise UsageError(f"no log for '{target}' yet: it has not run in this project.")

    # -- building ---------------------------------------------------------------------------
    def run(self, targets: tuple[str, ...] | list[str] = (), *, jobs: int | None = None,
            keep_going: bool = False, force: bool = False, dry_run: bool = False,
            executor: str | None = None, reporter: ev.Reporter | None = None,
            wait: bool = True, trigger: str = "cli",
            executor_options: dict[str, Any] | None = None) -> BuildResult:
        """Bring the selected targets up to date; failures are outcomes, not exceptions."""
        reporter = reporter or ev.NullReporter()
        pipeline, graph = self.pipeline, self.graph
        requested = self.requested(targets)
        names = graph.upstream_closure(requested)
        graph.check_inputs(names, self.root, os.path.basename(self.mlfile_path))
        if dry_run:
            plan = self._checker().plan(names, force, requested=requested)
            return BuildResult("dry-run", plan=plan)
        exec_name = executor or pipeline.executor
        runner = make_executor(exec_name, **(executor_options or {}))
        try:
            need_gpus = any(graph.targets[n].resources.gpus for n in names)
            cap = runner.capacity(need_gpus)
            if exec_name == "local":
                _check_fits(pipeline, names, cap)
            njobs = jobs or pipeline.jobs or max(1, int(cap.cpus))
            with self._project_lock(wait, reporter):
                return self._build(names, requested, runner, cap, njobs, keep_going, force,
                                   reporter, trigger)
        finally:
            runner.close()

    def _build(self, names: set[str], requested: set[str], runner: Any, cap: Capacity,
               jobs: int,
               keep_going: bool, force: bool, reporter: ev.Reporter, trigger: str
               ) -> BuildResult:
        from mlmake import git
        from mlmake.scheduler import Scheduler

        build_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        lock = Lock.read(self.lock_path)
        checker = self._checker(lock)
        runs = self.runs_store
        commit = git.head_commit(self.root)
        order = self.graph.order(names)
        runcache = self.runcache
        lookahead = checker.lookahead(names, requested, runcache, force)
        started = time.time()
        runs.start_build(build_id, trigger, commit, started, order, runner.name)
        ctx = BuildContext(build_id=build_id, pipeline=self.pipeline, graph=self.graph,
                           lock=lock, checker=checker, hasher=checker.hasher, executor=runner,
                           reporter=reporter, runs=runs,
                           log_dir=self.state_path("logs", build_id), commit=commit,
                           store=checker.store, runcache=runcache, lookahead=lookahead,
                           forced=set(names) if force else set(),
                           estimates=runs.durations(order))
        reporter.emit(ev.BuildStarted(build_id, tuple(order), (), jobs, runner.name))
        sched = Scheduler(self.graph, names, cap, jobs, keep_going, Builder(ctx).work,
                          runner.cancel_all, limit_cpus=runner.name == "local")
        interrupted = False
        try:
            outcomes = sched.run()
        except BaseException:
            interrupted = True
            outcomes = sched.outcomes
            raise
        finally:
            checker.hasher.cache.save()
            self._update_gitignore()
            summary = _summarize(outcomes, order, time.time() - started, interrupted)
            status = "interrupted" if interrupted else \
                ("succeeded" if summary.failed == 0 and summary.blocked == 0 else "failed")
            runs.update_build(build_id, finished=time.time(), status=status,
                              summary=summary.__dict__)
            result = BuildResult(build_id, outcomes, summary)
            if not interrupted:
                for n in order:
                    if outcomes.get(n) and outcomes[n].status == "blocked":
                        reporter.emit(ev.TargetFinished(outcomes[n]))
                reporter.emit(ev.BuildFinished(build_id, summary,
                                               tuple(outcomes[n] for n in order
                                                     if n in outcomes)))
        return result

    def _update_gitignore(self) -> None:
        outs = [o for t in self.pipeline.targets.values() for o in t.cached_outs]
        gitignore.update(self.root, outs)

    @contextmanager
    def _project_lock(self, wait: bool, reporter: ev.Reporter) -> Iterator[None]:
        path = self.state_path("run.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                if not wait:
                    raise BusyError(f"another mlmake run (pid {holder}) is building this "
                                    "project; wait for it or drop --no-wait.") from None
                reporter.emit(ev.Notice(f"waiting for another mlmake run (pid {holder}) to "
                                        "finish…"))
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    # -- outputs of commits -----------------------------------------------------------------
    def checkout(self, rev: str | None = None, targets: tuple[str, ...] | list[str] = (),
                 force: bool = False) -> Any:
        """Restore the outputs recorded in `rev`'s lock (default: the work tree's lock)
        without touching tracked files."""
        from mlmake.checkout import checkout

        checker = self._checker()
        with self._project_lock(True, ev.NullReporter()):
            result = checkout(self.root, self.lock_path, rev, checker.store, checker.hasher,
                              set(targets) if targets else None, force)
            checker.hasher.cache.save()
        return result

    def get(self, rev: str, path: str, dest: str) -> str:
        """Export `path` as recorded at `rev` to `dest` (a copy, never a link)."""
        from mlmake.checkout import get

        rel = os.path.relpath(os.path.abspath(path), self.root) if os.path.isabs(path) else path
        return get(self.root, self.lock_path, rev, rel, dest, self.store())

    def commit(self, targets: tuple[str, ...] | list[str] = (), force: bool = False
               ) -> list[str]:
        """Record the current outs and deps of the targets as up to date without running
        (after a cosmetic edit). Returns the targets whose lock entry changed."""
        names = self.requested(targets) if targets else self.select(())
        order = self.graph.order(names)
        for n in order:
            for out in self.graph.targets[n].all_outs:
                if not os.path.exists(os.path.join(self.root, out)):
                    raise UsageError(f"cannot commit '{n}': its out '{out}' does not exist. "
                                     f"Build it with `mlmake {n}`.")
        from mlmake.build import Builder, BuildContext
        from mlmake.executors.local import LocalExecutor

        changed: list[str] = []
        with self._project_lock(True, ev.NullReporter()):
            lock = Lock.read(self.lock_path)
            checker = self._checker(lock)
            ctx = BuildContext(build_id="commit", pipeline=self.pipeline, graph=self.graph,
                               lock=lock, checker=checker, hasher=checker.hasher,
                               executor=LocalExecutor(), reporter=ev.NullReporter(),
                               runs=self.runs_store, log_dir=self.state_path("logs"),
                               commit=None, store=checker.store, runcache=self.runcache)
            builder = Builder(ctx)
            for n in order:
                t = self.graph.targets[n]
                state = checker.state(t)
                if not state.stale and not force:
                    continue
                if state.key is None:
                    missing = [d for d, v in state.deps.items() if v is None]
                    raise UsageError(f"cannot commit '{n}': its dep '{missing[0]}' is missing.")
                outs, _, entries_of = builder.hash_outs(t)
                if t.cache:
                    builder.save(t, outs, entries_of)
                    ctx.runcache.put(state.key, n, outs)
                lock.entries[n] = state.entry(t.cmd, outs)
                changed.append(n)
            lock.write(set(self.pipeline.targets))
            checker.hasher.cache.save()
            self._update_gitignore()
        return changed

    def gc(self, all_commits: bool = False, dry_run: bool = False) -> Any:
        """Remove cache objects that the work tree's lock (or any commit's) does not need."""
        from mlmake.gc import gc

        with self._project_lock(True, ev.NullReporter()):
            return gc(self.root, self.lock_path, self.store(), self.runcache, all_commits,
                      dry_run)

    # -- scaffolding ------------------------------------------------------------------------
    @staticmethod
    def init(dest: str, template: str = "minimal") -> list[str]:
        """Copy a starter project into `dest`; refuses to overwrite an existing Mlfile."""
        src = _template_dir(template)
        if os.path.exists(os.path.join(dest, MLFILE)):
            raise UsageError(f"'{os.path.join(dest, MLFILE)}' already exists; mlmake init "
                             "never overwrites it.")
        written = []
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = os.path.relpath(dirpath, src)
            for f in filenames:
                if f.endswith((".pyc", ".pyo")) or f == "__init__.py" and rel == ".":
                    continue
                target = os.path.abspath(os.path.join(dest, rel, f))
                if os.path.exists(target):
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(os.path.join(dirpath, f), target)
                shutil.copymode(os.path.join(dirpath, f), target)
                written.append(os.path.relpath(target, dest))
        return sorted(written)


def templates() -> list[str]:
    """Names of the starter templates `init` knows."""
    base = os.path.dirname(_template_dir(None))
    return sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d, MLFILE)))


def _template_dir(name: str | None) -> str:
    import mlmake.templates as pkg

    base = os.path.dirname(os.path.abspath(pkg.__file__))
    if name is None:
        return os.path.join(base, "minimal")
    path = os.path.join(base, name)
    if not os.path.isfile(os.path.join(path, MLFILE)):
        known = sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d,
                                                                                  MLFILE)))
        raise UsageError(f"unknown template '{name}'; choose one of {', '.join(known)}.")
    return path


def _check_fits(pipeline: Pipeline, names: set[str], cap: Capacity) -> None:
    for n in sorted(names):
        t = pipeline.targets[n]
        r = t.resources
        problem = None
        if r.cpus > cap.cpus:
            problem = f"{r.cpus:g} CPUs but this machine has {cap.cpus:g}"
        elif math.ceil(r.gpus) > len(cap.gpus):
            problem = f"{r.gpus:g} GPUs but this machine has {len(cap.gpus)}"
        elif r.memory and cap.memory and r.memory > cap.memory:
            problem = (f"{r.memory / 2**30:.1f} GiB of memory but this machine has "
                       f"{cap.memory / 2**30:.1f} GiB")
        if problem:
            raise MlfileError(f"target '{n}' asks for {problem}. Lower its resources, or run "
                              "it on a cluster with `--executor ray`.",
                              os.path.basename(pipeline.path), t.line)


def _summarize(outcomes: dict[str, Outcome], order: list[str], duration: float,
               interrupted: bool) -> ev.Summary:
    counts = {"ran": 0, "reused": 0, "uptodate": 0, "failed": 0, "blocked": 0}
    for n in order:
        o = outcomes.get(n)
        if o is None:
            continue
        counts[o.status if o.status in counts else "blocked"] += 1
    return ev.Summary(counts["ran"], counts["reused"], counts["uptodate"], counts["failed"],
                      counts["blocked"], duration, interrupted)
