"""Project: the Python API over an Mlfile, the one object the CLI and the server call."""

from __future__ import annotations

import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from mlmake import events as ev
from mlmake import gitignore
from mlmake import mlfile as mlfile_mod
from mlmake.errors import BusyError, MlfileError, MlmakeError, UsageError
from mlmake.executors import make_executor
from mlmake.executors.base import check_fits
from mlmake.graph import Graph
from mlmake.hashing import Hasher, StatCache
from mlmake.lockfile import Lock
from mlmake.model import Outcome, Pipeline
from mlmake.plan import Checker, Plan
from mlmake.runcache import RunCache
from mlmake.runs import RunRecord, RunStore
from mlmake.store import Store

if TYPE_CHECKING:
    from mlmake.executors.base import Capacity

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

    def __init__(self, path: str = ".", mlfile: str | None = None, *,
                 shared_state: str | None = None) -> None:
        """`shared_state`: another project's .mlmake/ whose object store, run cache, run
        records and logs this one uses (a triggered run's worktree); its lock file and stat
        cache stay its own."""
        self.mlfile_path = find_mlfile(path, mlfile)
        self.root = os.path.dirname(self.mlfile_path)
        self.lock_path = self.mlfile_path + ".lock"
        self.state_dir = os.path.join(self.root, STATE_DIR)
        self.shared_state = shared_state
        self.param_overrides: dict[str, Any] = {}  # written by set_params, for run records
        self._pipeline: Pipeline | None = None
        self._graph: Graph | None = None
        self._runners: set[Any] = set()
        self._cancelled = False

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

    def set_params(self, overrides: dict[str, Any]) -> list[str]:
        """Write dotted param values into this checkout's params files (their own format,
        other keys untouched), so commands that read the files and `${}` both see them and
        every target key covers them; the build records them as its params. Meant for an
        isolated worktree (a triggered run): the user's files are the user's. Returns the
        files changed."""
        from mlmake import params as params_mod

        if not overrides:
            return []
        changed = params_mod.write_overrides(self.root, self.pipeline.params_files,
                                             overrides, os.path.basename(self.mlfile_path))
        self.param_overrides = dict(overrides)
        self._pipeline = self._graph = None
        return changed

    def state_path(self, *parts: str) -> str:
        """A path inside .mlmake/, creating the directory (which ignores itself in Git)."""
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, exist_ok=True)
            with open(os.path.join(self.state_dir, ".gitignore"), "w") as fh:
                fh.write("# mlmake's cache, stat cache, logs and run records\n*\n")
        return os.path.join(self.state_dir, *parts)

    def shared_path(self, *parts: str) -> str:
        """A path in the state shared with other checkouts of the project (object store, run
        cache, run records, logs, key claims): `shared_state` when given, else .mlmake/."""
        if self.shared_state is None:
            return self.state_path(*parts)
        return os.path.join(self.shared_state, *parts)

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
                       self.store(stats), self.state_path("imports.json"))

    def store(self, stats: StatCache | None = None) -> Store:
        """The local object store (outs linked into this project's work tree)."""
        return Store(self.shared_path("cache"), self.root,
                     stats or StatCache(self.state_path("statcache")), self.pipeline.link)

    @property
    def runcache(self) -> RunCache:
        return RunCache(self.shared_path("runcache"))

    @property
    def runs_store(self) -> RunStore:
        return RunStore(self.shared_path("runs.db"))

    # -- queries ----------------------------------------------------------------------------
    def status(self, targets: tuple[str, ...] | list[str] = (), lean: bool | None = None
               ) -> Plan:
        """Every selected target's state and, for stale ones, why. `lean` (default:
        [project] materialize = "requested"): outs that nothing needs may be absent."""
        requested = self.requested(targets)
        names = self.graph.upstream_closure(requested)
        self.graph.check_inputs(names, self.root, os.path.basename(self.mlfile_path))
        self._check_fits(names, None)
        checker = self._checker()
        plan = checker.plan(names, requested=requested, lean=self._lean(lean))
        checker.hasher.cache.save()
        if not targets:
            self._record_noop(plan, ("status", "--lean") if lean else ("status",))
        return plan

    def _record_noop(self, plan: Plan, asked: tuple[str, ...]) -> None:
        """After a check that found nothing to do, write the file that lets the next one
        answer from stats alone (mlmake.noop); only where stats can tell the whole story."""
        from mlmake import noop
        from mlmake.hashing import is_glob
        from mlmake.params import DEFAULT_FILES

        if plan.stale or plan.not_materialized:
            return noop.forget(self.root)
        files = [os.path.relpath(self.mlfile_path, self.root), *self.pipeline.params_files]
        absent: list[str] = []
        for rel in (os.path.relpath(self.lock_path, self.root), *DEFAULT_FILES):
            (files if os.path.exists(os.path.join(self.root, rel)) else absent).append(rel)
        trees: list[str] = []
        globs: dict[str, list[str]] = {}
        import glob as globmod

        for n in plan.order:
            t = self.graph.targets[n]
            if t.always or t.env or t.resources.gpus:
                return noop.forget(self.root)
            paths = [*t.deps, *plan.states[n].implicit, *t.all_outs]
            for p in paths:
                if is_glob(p):
                    matches = sorted(globmod.glob(p, root_dir=self.root, recursive=True))
                    globs[p] = matches
                    files += [m for m in matches
                              if not os.path.isdir(os.path.join(self.root, m))]
                elif os.path.isdir(os.path.join(self.root, p)):
                    trees.append(p)
                else:
                    files.append(p)
        noop.record(self.root, self.mlfile_path, asked, files, trees, absent, globs)

    def _lean(self, lean: bool | None) -> bool:
        return self.pipeline.lean if lean is None else lean

    def graph_data(self, targets: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        """The DAG of the selection (default: every target) as nodes with their state and
        reasons, and edges (see mlmake.drawing)."""
        from mlmake import drawing

        names = self.select(targets) if targets else set(self.graph.targets)
        try:
            plan: Plan | None = self._checker().plan(names)
        except MlmakeError:
            plan = None  # states are decoration: a missing input still draws
        return drawing.graph_data(self.graph, names, plan)

    def env_change(self, name: str, old: str | None, new: str | None) -> str:
        """What changed in environment `name` from digest `old` (the lock's) to `new`: a
        requirements line, the Python version, the image…; '' when it is not known."""
        from mlmake.envs import changes

        if not old or not new or name not in self.pipeline.envs:
            return ""
        return changes.explain(changes.recalled(self.root, old),
                               changes.recalled(self.root, new) or {})

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
            wait: bool = True, trigger: str = "cli", force_only: bool = False,
            executor_options: dict[str, Any] | None = None,
            build_id: str | None = None, use_remote: bool = True,
            push: bool | None = None, remote: str | None = None,
            lean: bool | None = None) -> BuildResult:
        """Bring the selected targets up to date; failures are outcomes, not exceptions.

        `build_id` names the build in the run records (default: a new time-based id); a
        build recorded beforehand as queued under that id keeps its params and endpoint.
        `use_remote`: look stale targets up in the remote `remote` (default: the configured
        one) after the local run cache; `push`: upload each result as it succeeds (default:
        [project] push). `force`: rerun every selected target, upstream ones included
        (make's -B); `force_only`: rerun only the requested targets, upstream results reused.
        After a successful build every out of every selected target is in the work tree with
        the bytes its lock entry records; `lean` (default: [project] materialize =
        "requested") links only the outs that the requested targets and the commands that run
        need, and leaves the others absent.
        """
        reporter = reporter or ev.NullReporter()
        pipeline, graph = self.pipeline, self.graph
        requested = self.requested(targets)
        names = graph.upstream_closure(requested)
        graph.check_inputs(names, self.root, os.path.basename(self.mlfile_path))
        forced = set(requested) if force_only else set(names) if force else set()
        lean = self._lean(lean)
        if dry_run:
            self._check_fits(names, executor)
            return BuildResult("dry-run", plan=self._dry_run(names, requested, forced, lean,
                                                             use_remote, remote))
        link = self._remote_link(use_remote, push, remote)
        exec_name = executor or pipeline.executor
        options = dict(executor_options or {})
        if exec_name == "ray":
            options.update(self._ray_data_plane(remote))
        runner = make_executor(exec_name, **options)
        self._runners.add(runner)
        if self._cancelled:
            runner.cancel_all()
        try:
            need_gpus = any(graph.targets[n].resources.gpus for n in names)
            cap = runner.capacity(need_gpus)
            if exec_name == "local":
                check_fits(pipeline, names, cap)
            njobs = jobs or pipeline.jobs or max(1, int(cap.cpus))
            with self._project_lock(wait, reporter):
                return self._build(names, requested, runner, cap, njobs, keep_going, forced,
                                   reporter, trigger, build_id, link, lean)
        finally:
            self._runners.discard(runner)
            runner.close()

    def _dry_run(self, names: set[str], requested: set[str], forced: set[str], lean: bool,
                 use_remote: bool, remote: str | None) -> Plan:
        """The plan of a build that runs nothing, with each stale target's predicted action
        (run, or restore from the cache or the remote) from the same lookahead a build uses."""
        checker = self._checker()
        plan = checker.plan(names, forced, requested=requested, lean=lean)
        link = self._remote_link(use_remote, False, remote)
        runcache: Any = self.runcache
        session = link(checker.store, runcache, ev.NullReporter()) if link else None
        try:
            if session is not None:
                session.prefetch(checker.entries[n] for n in plan.order
                                 if n in checker.entries)
                runcache = session
            la = checker.lookahead(names, requested, runcache, forced, lean)
            for n in plan.stale:
                if n in la.must_run:
                    plan.actions[n] = "run"
                elif n in la.reusable:
                    local = not any(checker.store.missing(r) for r in la.reusable[n].values())
                    plan.actions[n] = "restore" if local or session is None else \
                        f"restore:{session.name}"
                else:
                    plan.actions[n] = "run"
        finally:
            if session is not None:
                session.close()
            checker.hasher.cache.save()
        return plan

    def _check_fits(self, names: set[str], executor: str | None) -> None:
        """Refuse what this machine cannot hold, for `-n` and `status` as for a local run."""
        from mlmake.executors.base import machine_capacity

        if (executor or self.pipeline.executor) == "local":
            need_gpus = any(self.graph.targets[n].resources.gpus for n in names)
            check_fits(self.pipeline, names, machine_capacity(need_gpus))

    def _ray_data_plane(self, remote: str | None) -> dict[str, Any]:
        """How Ray tasks reach data: [project] ray_data, and the project's store, hasher and
        remote for nodes that cannot see the project directory."""
        stats = StatCache(self.state_path("statcache"))
        r = self.remote(remote)
        if self.pipeline.ray_data == "remote" and r is None:
            raise UsageError("[project] ray_data = \"remote\" needs a remote: add a "
                             "[remote.NAME] table with a url and [project] remote = \"NAME\".")
        return {"data": self.pipeline.ray_data, "remote": r, "store": self.store(stats),
                "hasher": Hasher(self.root, stats), "state_dir": self.state_dir}

    def cancel(self) -> None:
        """Stop this project's builds in progress from another thread: every child process
        is stopped, nothing new starts, and each build ends with what finished recorded."""
        self._cancelled = True
        for runner in list(self._runners):
            runner.cancel_all()

    def _build(self, names: set[str], requested: set[str], runner: Any, cap: Capacity,
               jobs: int,
               keep_going: bool, forced: set[str], reporter: ev.Reporter, trigger: str,
               build_id: str | None = None, link: Any = None, lean: bool = False
               ) -> BuildResult:
        from mlmake import git
        from mlmake.build import BuildContext, Builder
        from mlmake.scheduler import Scheduler

        build_id = build_id or time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        lock = Lock.read(self.lock_path)
        checker = self._checker(lock)
        runs = self.runs_store
        commit = git.head_commit(self.root)
        order = self.graph.order(names)
        runcache = self.runcache
        session = link(checker.store, runcache, reporter) if link else None
        if session is not None:  # the remote's run cache after the local one
            session.prefetch(lock.entries[n] for n in order if n in lock.entries)
            runcache = session
        lookahead = checker.lookahead(names, requested, runcache, forced, lean)
        if runner.name == "local":  # no Docker engine, no interpreter: exit 2, nothing runs
            from mlmake import envs  # (a Ray worker prepares envs on its own node)

            envs.check([(n, self.pipeline.envs[self.graph.targets[n].env]) for n in order
                        if n in lookahead.must_run and self.graph.targets[n].env])
        started = time.time()
        written = {os.path.relpath(self.lock_path, self.root)} | \
            {o for t in self.pipeline.targets.values() for o in t.all_outs} | \
            (set(self.pipeline.params_files) if self.param_overrides else set())
        dirty = git.is_dirty(self.root, written)  # what a build writes itself is not "dirty"
        runs.start_build(build_id, trigger, commit, started, order, runner.name,
                         params=self.param_overrides or None, dirty=dirty)
        for message in runs.recovered:
            reporter.emit(ev.Notice(message, "warning"))
        ctx = BuildContext(build_id=build_id, pipeline=self.pipeline, graph=self.graph,
                           lock=lock, checker=checker, hasher=checker.hasher, executor=runner,
                           reporter=reporter, runs=runs,
                           log_dir=self.shared_path("logs", build_id), commit=commit,
                           store=checker.store, runcache=runcache, lookahead=lookahead,
                           forced=forced,
                           estimates=runs.durations(order), keys_dir=self.shared_path("keys"),
                           remote=session, state_dir=self.shared_path())
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
            if session is not None:
                session.close()
            ctx.flush_lock()
            checker.hasher.cache.save()
            self._update_gitignore()
            summary = _summarize(outcomes, order, time.time() - started, interrupted)
            status = "interrupted" if interrupted or self._cancelled else \
                ("succeeded" if summary.failed == 0 and summary.blocked == 0 else "failed")
            not_run = [n for n in order if n in outcomes and outcomes[n].status == "blocked"]
            runs.update_build(build_id, finished=time.time(), status=status,
                              summary={**summary.__dict__, "blocked_targets": not_run})
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
        from mlmake import recovery
        from mlmake.filelock import file_lock, holder

        path = self.state_path("run.lock")
        with file_lock(path, wait, record_pid=True, on_wait=lambda pid: reporter.emit(
                ev.Notice(f"waiting for another mlmake run (pid {pid}) to finish…"))) as got:
            if not got:
                raise BusyError(f"another mlmake run (pid {holder(path)}) is building this "
                                "project; wait for it or drop --no-wait.")
            with recovery.session(self.state_dir, self.shared_path(), self.root,
                                  self._all_outs(),
                                  lambda m: reporter.emit(ev.Notice(m, "warning"))):
                yield

    def _all_outs(self) -> list[str]:
        try:
            return [o for t in self.pipeline.targets.values() for o in t.all_outs]
        except MlmakeError:
            return []

    def trigger(self, endpoint: str, params: dict[str, Any] | None = None,
                rev: str | None = None, reporter: ev.Reporter | None = None) -> str:
        """Run a published endpoint as `mlmake serve` does for a REST call, synchronously in
        this thread: `rev` (default: the endpoint's) is built in a Git worktree under
        .mlmake/worktrees/ with `params` overriding allowed params, sharing this project's
        store, run cache and run records; the work tree and its lock are not touched.

        Returns the run id once the run has ended (its record: `runs_store.build(id)`, status
        succeeded or failed). A request the endpoint does not accept raises a UsageError
        naming the endpoint, param or rev, and nothing runs.
        """
        from mlmake.serve.runs import Runner

        return Runner(self).run(endpoint, params, rev, trigger="api", reporter=reporter)

    @property
    def experiments(self) -> Any:
        """This project's experiments (mlmake.experiments.Experiments): run, queue, show,
        apply, branch, remove, push and pull them."""
        from mlmake.experiments import Experiments

        return Experiments(self)

    # -- outputs of commits -----------------------------------------------------------------
    def checkout(self, rev: str | None = None, targets: tuple[str, ...] | list[str] = (),
                 force: bool = False, metrics: bool = False) -> Any:
        """Restore the outputs recorded in `rev`'s lock (default: the work tree's lock)
        without touching tracked files; with `metrics`, also write the metrics files as
        committed at `rev` (result.metrics_written), so outs and metrics agree."""
        from mlmake.checkout import checkout, checkout_metrics

        checker = self._checker()
        with self._project_lock(True, ev.NullReporter()):
            result = checkout(self.root, self.lock_path, rev, checker.store, checker.hasher,
                              set(targets) if targets else None, force,
                              self._closure_names(targets, strict=False))
            checker.hasher.cache.save()
            result.metrics_written = []
            if metrics and rev is not None and result.metrics:
                result.metrics_written, _ = checkout_metrics(self.root, result.commit,
                                                             result.metrics, force)
        return result

    def _closure_names(self, targets: tuple[str, ...] | list[str], strict: bool = True
                       ) -> set[str] | None:
        """The named targets and their upstreams (so a checkout, pull or push of a target
        carries everything it was built from); None: all. Not `strict`: a name that only an
        old commit knows is kept for that commit's lock to decide."""
        if not targets:
            return None
        if strict:
            return self.select(targets)
        names = set(targets)
        try:
            names |= self.select(targets)
        except MlmakeError:
            pass
        return names

    def get_object(self, oid: str, dest: str) -> None:
        """Write the object `oid` (a file, or a directory by its tree hash) to `dest`: how a
        hand-edited out that a build replaced comes back."""
        from mlmake.store import MANIFEST_SUFFIX

        store = self.store()
        kind = "dir" if store.has(oid + MANIFEST_SUFFIX) else "file"
        store.export({"hash": oid, "type": kind}, dest)

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
        from mlmake.build import BuildContext, Builder
        from mlmake.executors.local import LocalExecutor

        with self._project_lock(True, ev.NullReporter()):
            lock = Lock.read(self.lock_path)
            checker = self._checker(lock)
            ctx = BuildContext(build_id="commit", pipeline=self.pipeline, graph=self.graph,
                               lock=lock, checker=checker, hasher=checker.hasher,
                               executor=LocalExecutor(), reporter=ev.NullReporter(),
                               runs=self.runs_store, log_dir=self.state_path("logs"),
                               commit=None, store=checker.store, runcache=self.runcache)
            changed = Builder(ctx).record(order, force)
            lock.write(set(self.pipeline.targets))
            checker.hasher.cache.save()
            self._update_gitignore()
        return changed

    def gc(self, all_commits: bool = False, dry_run: bool = False) -> Any:
        """Remove cache objects that the work tree's lock (or any commit's) does not need."""
        from mlmake import git
        from mlmake.gc import gc

        with self._project_lock(True, ev.NullReporter()):
            kept = self.experiments.kept_locks() if git.workdir(self.root) else []
            return gc(self.root, self.lock_path, self.store(), self.runcache, all_commits,
                      dry_run, self.runs_store, kept)

    # -- remote cache -----------------------------------------------------------------------
    def remote(self, name: str | None = None, jobs: int | None = None,
               quick: bool = False) -> Any:
        """The remote `name` (default: .mlmake/config.toml's, else [project] remote, else the
        only one defined) with this clone's overrides applied; None when none is defined."""
        from mlmake import sync
        from mlmake.remote import Remote

        config = sync.read_config(os.path.join(self.shared_state or self.state_dir,
                                               sync.CONFIG))
        spec = sync.choose(self.pipeline, config, name)
        if spec is None:
            return None
        return Remote(spec.name, spec.url, spec.options, root=self.root, jobs=jobs,
                      quick=quick, index_dir=os.path.join(self.shared_state or self.state_dir,
                                                          "remote-packs"))

    def _needs_remote(self, name: str | None, jobs: int | None) -> Any:
        r = self.remote(name, jobs)
        if r is None:
            raise UsageError("no remote configured: add a [remote.NAME] table with a url to the "
                             "Mlfile (and [project] remote = \"NAME\"), or pass -r NAME.")
        return r

    def _remote_link(self, use_remote: bool, push: bool | None, name: str | None) -> Any:
        """How a build uses the remote: a factory of its BuildRemote, or None."""
        from functools import partial

        from mlmake import sync

        config = sync.read_config(os.path.join(self.shared_state or self.state_dir,
                                               sync.CONFIG))
        if push is None:
            push = use_remote and (config.push if config.push is not None
                                   else self.pipeline.push)
        if not use_remote and not push:
            return None
        r = self.remote(name, quick=True)
        if r is None:
            if push:
                raise UsageError("pushing results needs a remote: add a [remote.NAME] table "
                                 "with a url to the Mlfile, or drop --push / [project] push.")
            return None
        return partial(sync.BuildRemote, r, lookup=use_remote, push=bool(push))

    def doctor(self, remote: str | None = None, check_remote: bool = True) -> Any:
        """Verify every object of the local cache and of the remote (`check_remote`), remove
        corrupt local objects and replace corrupt remote copies with good local ones; a
        `doctor.DoctorReport` says what was checked and repaired."""
        from mlmake import doctor

        with self._project_lock(True, ev.NullReporter()):
            needed = [(out, rec) for e in Lock.read(self.lock_path).entries.values()
                      for out, rec in e.outs.items()]
            r = self.remote(remote) if check_remote else None
            try:
                return doctor.check(self.store(), r, needed)
            finally:
                if r is not None:
                    r.close()

    def push(self, targets: tuple[str, ...] | list[str] = (), remote: str | None = None,
             jobs: int | None = None, all_commits: bool = False, callback: Any = None) -> Any:
        """Upload the objects that the selected targets' lock entries (of the work tree, or
        of every commit) reference, and their run-cache entries; only what the remote lacks
        moves. `callback` receives progress (mlmake.remote.Progress)."""
        from mlmake import sync

        r = self._needs_remote(remote, jobs)
        try:
            # it writes the local run cache too: as the lock's holder, so that a push killed
            # mid-write has its temporary files swept by the next run, like a build's
            with self._project_lock(True, ev.NullReporter()):
                return sync.push(r, self.store(), self.runcache,
                                 self._shared_entries(targets, all_commits), callback)
        finally:
            r.close()

    def _shared_entries(self, targets: tuple[str, ...] | list[str], all_commits: bool
                        ) -> list[Any]:
        """(target, lock entry) pairs that push and pull move: `cache = false` targets
        keep nothing in the cache, so they are left out."""
        from mlmake import sync

        names = self._closure_names(targets)
        g = self.graph
        return [(n, e) for n, e in sync.lock_entries(self.lock_path, names, all_commits,
                                                     self.root)
                if n not in g.targets or g.targets[n].cache]

    def pull(self, targets: tuple[str, ...] | list[str] = (), remote: str | None = None,
             jobs: int | None = None, all_commits: bool = False, callback: Any = None) -> Any:
        """Download what the selected targets' lock entries reference (verified, into the
        cache) with their run-cache entries, then restore the work tree's outs from the
        work tree's lock, like `checkout`."""
        from mlmake import sync
        from mlmake.checkout import checkout

        r = self._needs_remote(remote, jobs)
        names = self._closure_names(targets)
        try:
            with self._project_lock(True, ev.NullReporter()):
                checker = self._checker()
                result = sync.pull(r, checker.store, self.runcache,
                                   self._shared_entries(targets, all_commits), callback)
                recorded = {n for n in Lock.read(self.lock_path).entries
                            if n not in self.graph.targets or self.graph.targets[n].cache}
                chosen = recorded if names is None else names & recorded
                if chosen:
                    result.checkout = checkout(self.root, self.lock_path, None, checker.store,
                                               checker.hasher, chosen, False)
                checker.hasher.cache.save()
            return result
        finally:
            r.close()

    # -- scaffolding ------------------------------------------------------------------------
    @staticmethod
    def init(dest: str, template: str = "minimal") -> list[str]:
        """Copy a starter project into `dest`; refuses to overwrite an existing Mlfile."""
        from mlmake.scaffold import init

        return init(dest, template)

    # -- git hooks --------------------------------------------------------------------------
    def install_hooks(self) -> list[Any]:
        """Add mlmake to the repository's Git hooks, chained after existing ones; idempotent."""
        from mlmake import hooks

        return hooks.install(self.root, self.mlfile_path, hooks.wanted(self.pipeline))

    def uninstall_hooks(self) -> list[Any]:
        """Take mlmake out of the Git hooks, putting back the hooks that were there."""
        from mlmake import hooks

        return hooks.uninstall(self.root)

    def hooks_status(self) -> list[Any]:
        """Every Git hook mlmake knows: installed or not, and the actions it runs."""
        from mlmake import hooks

        return hooks.status(self.root, self.pipeline, self.mlfile_path)

    def run_hook(self, name: str, args: tuple[str, ...] | list[str] = (), stdin: str = ""
                 ) -> Any:
        """Do what the [hooks] table maps Git hook `name` to (called by the hook scripts)."""
        from mlmake import hooks

        return hooks.run(self, name, tuple(args), stdin)

    # -- environments -----------------------------------------------------------------------
    def envs(self) -> Any:
        """Every [env] of the Mlfile (kind, digest, where it lives, built or not, the targets
        using it) and the venvs and images that no target uses any more."""
        from mlmake.envs import inventory

        checker = self._checker()
        try:
            return inventory.report(self.pipeline, checker.env_digest, self.root,
                                    self.shared_path("envs"))
        finally:
            checker.hasher.cache.save()

    def build_envs(self, names: tuple[str, ...] | list[str] = (),
                   log: Any = None) -> list[Any]:
        """Build (or pull) the named environments now (default: all), so no run waits for
        them; `log(env, line)` receives the build output."""
        from mlmake.envs import inventory

        checker = self._checker()
        try:
            return inventory.build(self.pipeline, names, checker.env_digest, self.root,
                                   self.shared_path(), log or (lambda env, line: None))
        finally:
            checker.hasher.cache.save()

    def prune_envs(self, dry_run: bool = False) -> Any:
        """Remove the venvs and images that no target of the current Mlfile uses."""
        from mlmake.envs import inventory

        with self._project_lock(True, ev.NullReporter()):
            checker = self._checker()
            try:
                return inventory.prune(self.pipeline, checker.env_digest, self.root,
                                       self.shared_path("envs"), dry_run)
            finally:
                checker.hasher.cache.save()


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
