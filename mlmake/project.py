"""Project: the Python API over an Mlfile, the one object the CLI and the server call."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mlmake import events as ev
from mlmake import gitignore
from mlmake import mlfile as mlfile_mod
from mlmake.errors import BusyError, MlfileError, MlmakeError, UsageError
from mlmake.executors import make_executor
from mlmake.executors.base import check_fits
from mlmake.graph import Graph
from mlmake.hashing import Hasher, StatCache
from mlmake.lockfile import Lock
from mlmake.model import OutRecord, Outcome, Pipeline, SourceRecord
from mlmake.plan import Checker, Plan
from mlmake.runcache import RunCache
from mlmake.runs import RunRecord, RunStore
from mlmake.store import Store

if TYPE_CHECKING:
    from mlmake.checkout import CheckoutResult
    from mlmake.doctor import DoctorReport
    from mlmake.envs.inventory import BuildResult as EnvBuild
    from mlmake.envs.inventory import EnvReport, PruneResult
    from mlmake.executors.base import Capacity, Executor
    from mlmake.gc import GcResult
    from mlmake.hookactions import HookResult
    from mlmake.hooks import HookChange, HookState
    from mlmake.lockfile import LockEntry
    from mlmake.metrics import Diff, Snapshot
    from mlmake.remote import Progress, Remote
    from mlmake.runoutput import RunOutput
    from mlmake.buildremote import BuildRemote
    from mlmake.exp_store import Experiment
    from mlmake.pull import PullResult
    from mlmake.push import PushResult
    from mlmake.trigger import Request

T = TypeVar("T")

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
        self._runners: set[Executor] = set()
        self._output_store: Store | None = None
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
        lock = Lock.read(self.lock_path)
        self.graph.check_inputs(names, self.root, os.path.basename(self.mlfile_path),
                                lock.sources)
        self._check_fits(names, None)
        checker = self._checker(lock)
        plan = checker.plan(names, requested=requested, lean=self._lean(lean))
        plan.data = self._data_changes(lock, checker)
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

        if plan.stale or plan.not_materialized or plan.data:
            return noop.forget(self.root)
        files = [os.path.relpath(self.mlfile_path, self.root), *self.pipeline.params_files]
        absent: list[str] = []
        for rel in (os.path.relpath(self.lock_path, self.root), *DEFAULT_FILES):
            (files if os.path.exists(os.path.join(self.root, rel)) else absent).append(rel)
        trees: list[str] = self.source_paths()  # a source no target reads can change too
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
        plan, _ = self._plan_or_error(names)  # states are decoration: a missing input draws
        return drawing.graph_data(self.graph, names, plan)

    def graph_status(self) -> tuple[dict[str, Any], str | None]:
        """`graph_data` of every target, and the error that kept their states from being
        known (None when they are)."""
        from mlmake import drawing

        names = set(self.graph.targets)
        plan, error = self._plan_or_error(names)
        return drawing.graph_data(self.graph, names, plan), error

    def _plan_or_error(self, names: set[str]) -> tuple[Plan | None, str | None]:
        try:
            checker = self._checker()
            plan = checker.plan(names)
        except MlmakeError as exc:
            return None, str(exc)
        checker.hasher.cache.save()
        return plan, None

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
        tracked = self._link_sources(names, use_remote and not dry_run, remote, wait,
                                     restore=not dry_run)
        graph.check_inputs(names, self.root, os.path.basename(self.mlfile_path), tracked)
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

    def _build(self, names: set[str], requested: set[str], runner: Executor, cap: Capacity,
               jobs: int,
               keep_going: bool, forced: set[str], reporter: ev.Reporter, trigger: str,
               build_id: str | None = None, link: Callable[..., BuildRemote] | None = None,
               lean: bool = False) -> BuildResult:
        from mlmake import git, sources
        from mlmake.build import BuildConfig, Builder, BuildParts, LockWriter
        from mlmake.scheduler import Scheduler

        build_id = build_id or time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        lock = Lock.read(self.lock_path)
        checker = self._checker(lock)
        runs = self.runs_store
        commit = git.head_commit(self.root)
        order = self.graph.order(names)
        runcache: Any = self.runcache  # the remote's session, when there is one, after it
        session = link(checker.store, runcache, reporter) if link else None
        if session is not None:  # the remote's run cache after the local one
            session.prefetch(lock.entries[n] for n in order if n in lock.entries)
            runcache = session
        lookahead = checker.lookahead(names, requested, runcache, forced, lean)
        if runner.name == "local":  # no Docker engine, no interpreter: exit 2, nothing runs
            from mlmake import envs  # (a Ray worker prepares envs on its own node)

            envs.check([(n, self.pipeline.envs[env]) for n in order
                        if n in lookahead.must_run
                        and (env := self.graph.targets[n].env)])
        started = time.time()
        written = {os.path.relpath(self.lock_path, self.root)} | \
            {o for t in self.pipeline.targets.values() for o in t.all_outs} | \
            (set(self.pipeline.params_files) if self.param_overrides else set())
        dirty = git.is_dirty(self.root, written)  # what a build writes itself is not "dirty"
        runs.start_build(build_id, trigger, commit, started, order, runner.name,
                         params=self.param_overrides or None, dirty=dirty,
                         data=sources.versions(lock))
        for message in runs.recovered:
            reporter.emit(ev.Notice(message, "warning"))
        config = BuildConfig(build_id=build_id, log_dir=self.shared_path("logs", build_id),
                             commit=commit, forced=frozenset(forced),
                             estimates=runs.durations(order),
                             keys_dir=self.shared_path("keys"), state_dir=self.shared_path())
        parts = BuildParts(pipeline=self.pipeline, graph=self.graph, checker=checker,
                           hasher=checker.hasher, executor=runner, reporter=reporter, runs=runs,
                           store=checker.store, runcache=runcache, lookahead=lookahead,
                           remote=session)
        writer = LockWriter(lock, set(self.pipeline.targets), reporter)
        reporter.emit(ev.BuildStarted(build_id, tuple(order), (), jobs, runner.name))
        sched = Scheduler(self.graph, names, cap, jobs, keep_going,
                          Builder(config, parts, writer).work,
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
            writer.flush()
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
        gitignore.update(self.root, outs + self.source_paths())

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

    # -- triggered runs (what `mlmake serve` builds) -----------------------------------------
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
        request = self.check_trigger(endpoint, params, rev, "api")
        self.record_trigger(request)
        return self.build_at(request, reporter)

    def check_trigger(self, endpoint: str, params: object = None, rev: object = None,
                      trigger: str = "api",
                      params_cache: dict[str, dict[str, Any]] | None = None) -> Request:
        """Validate a run of `endpoint` (`params` to override, `rev` to build) without
        recording or queueing it; mlmake.trigger.Rejected, a UsageError, names the first
        problem. `params_cache` (commit → params, filled here) spares reading a commit's
        params files again."""
        from mlmake import git
        from mlmake import trigger as trig

        def values(commit: str) -> dict[str, Any]:
            if params_cache is None:
                return self.params_at(commit)
            if commit not in params_cache:
                params_cache[commit] = self.params_at(commit)
            return params_cache[commit]

        return trig.check(self.pipeline, endpoint, params, rev, trigger,
                          lambda r: git.rev_sha(self.root, r), values)

    def record_trigger(self, request: Request) -> None:
        """Record a checked request as queued, so the run history lists it before it builds."""
        from mlmake import trigger as trig

        trig.record_queued(self.runs_store, request)

    def build_at(self, request: Request, reporter: ev.Reporter | None = None,
                 started: Callable[[Project], None] | None = None) -> str:
        """Build a checked request in this thread: its commit checked out in a Git worktree
        under .mlmake/worktrees/ID, its params written into the worktree's params files,
        deps that Git does not track linked in from the work tree; the build shares this
        project's store, run cache and run records, and the worktree is removed afterwards.
        `started` receives the worktree's Project before it builds (its `cancel` stops it).
        A run with param overrides is recorded as experiment ENDPOINT-ID as well.

        Returns the run id once the run has ended; its record says how. A failure that is an
        MlmakeError is recorded on the run, never raised.
        """
        from mlmake import exp_store
        from mlmake import trigger as trig

        def run(root: str) -> Callable[[], object] | None:
            wp = self._worktree_project(root, request.targets, request.params, started)
            result = wp.run(request.targets, trigger=request.trigger, build_id=request.id,
                            reporter=reporter)
            if not request.params:
                return None
            # read while the worktree stands; recorded from Git objects once it is gone
            exp = wp._describe_experiment(f"{request.endpoint}-{request.id}", request.commit,
                                          None, request.params, request.targets, request.id,
                                          "succeeded" if result.ok else "failed")
            wt = os.path.join(self.state_path(), trig.WORKTREES, request.id)
            files = exp_store.recorded_files(wp.root, wt, wp._experiment_paths())
            top = trig.repo_root(self.root)
            return lambda: exp_store.record_files(top, request.commit, files, exp)

        record = trig.build(request, self.root, self.state_path(), self.runs_store, run)
        if record is not None:
            try:
                record()
            except MlmakeError:
                pass  # the run stands on its own record; only its experiment is missing
        return request.id

    def build_commit(self, commit: str, targets: tuple[str, ...], params: dict[str, Any],
                     build_id: str, inspect: Callable[[Project, BuildResult], T], *,
                     trigger: str = "exp", reporter: ev.Reporter | None = None,
                     executor: str | None = None,
                     started: Callable[[Project], None] | None = None,
                     area: str = "exps/worktrees") -> T:
        """Build `targets` of `commit` with `params` written into its params files, in a
        Git worktree under .mlmake/`area` that shares this project's store, run cache and
        run records; the work tree, index and lock are never touched. `inspect(worktree
        project, result)` runs before the worktree is removed; its value is returned."""
        from mlmake import trigger as trig

        def run(root: str) -> T:
            wp = self._worktree_project(root, targets, params, started)
            result = wp.run(targets, trigger=trigger, build_id=build_id, reporter=reporter,
                            executor=executor)
            return inspect(wp, result)

        return trig.in_worktree(self.root, self.state_path(), commit, build_id, run, area)

    def _worktree_project(self, root: str, targets: tuple[str, ...], params: dict[str, Any],
                          started: Callable[[Project], None] | None) -> Project:
        """The project at `root` inside a worktree of this one, sharing its state, ready
        to build `targets` with `params` written into its params files."""
        from mlmake import trigger as trig

        wp = Project(root, os.path.basename(self.mlfile_path), shared_state=self.state_path())
        trig.seed_stat_cache(self.state_path("statcache"), wp.state_path("statcache"))
        if started is not None:
            started(wp)
        trig.link_untracked(wp.root, self.root, wp.graph, wp.select(targets),
                            wp.source_paths())
        wp.set_params(params)  # the command reads what the key covers
        return wp

    # -- experiments' records -----------------------------------------------------------------
    def _experiment_paths(self) -> list[str]:
        from mlmake import metrics as metrics_mod

        return [*self.pipeline.params_files, os.path.basename(self.lock_path),
                *metrics_mod.files(self.pipeline, "metrics")]

    def _describe_experiment(self, name: str, base: str, code: str | None,
                             overrides: dict[str, Any], targets: tuple[str, ...],
                             build_id: str, status: str, message: str = "") -> Experiment:
        """What this project (a just-built worktree) records as experiment `name`."""
        from mlmake import exp_store
        from mlmake import metrics as metrics_mod

        return exp_store.describe(self.root, self.pipeline.params_files, self.lock_path,
                                  metrics_mod.files(self.pipeline, "metrics"), name, base,
                                  code, overrides, targets, build_id, status, message)

    def record_experiment(self, worktree: str, name: str, base: str, code: str | None,
                          overrides: dict[str, Any], targets: tuple[str, ...],
                          build_id: str, status: str) -> Experiment:
        """Record this project (just built in Git worktree `worktree`) as experiment
        `name`: a commit on `code` (else `base`) of what it built."""
        from mlmake import exp_store

        return exp_store.record(worktree, code or base, self._describe_experiment(
            name, base, code, overrides, targets, build_id, status))

    def experiment_locks(self) -> list[Lock]:
        """The lock of every recorded experiment (what `gc` keeps and `exp push` moves)."""
        from mlmake import exp_store, git

        top = git.workdir(self.root)
        if top is None:
            return []
        return exp_store.kept_locks(top, os.path.relpath(self.lock_path, top)
                                    .replace(os.sep, "/"))

    def recover_triggers(self) -> list[str]:
        """Clean up after a service that died: remove its leftover worktrees and mark the
        runs it had queued or was building as interrupted. Returns their ids."""
        from mlmake import trigger as trig

        return trig.recover(self.root, self.state_path(), self.runs_store)

    def git_root(self) -> str:
        """The top of the Git work tree holding the project; a UsageError outside Git."""
        from mlmake import trigger as trig

        return trig.repo_root(self.root)

    # -- what commits and runs hold (read without checking anything out) -------------------
    def head_commit(self) -> str | None:
        """The full sha of HEAD (None outside Git or before the first commit)."""
        from mlmake import git

        return git.head_commit(self.root)

    def commit_of(self, rev: str) -> str:
        """The full sha of the commit `rev` names; GitError when none does."""
        from mlmake import git

        return git.rev_sha(self.root, rev)

    def history(self, limit: int = 50) -> tuple[str | None, list[dict[str, Any]]]:
        """The current branch (None when HEAD is detached) and its last `limit` commits
        along first parents, newest first, each as {sha, subject, author, time}."""
        from mlmake import git

        return git.history(self.root, limit)

    def lock_at(self, rev: str | None = None) -> Lock:
        """The lock as committed at `rev` (empty when that commit has none; default: the
        work tree's); GitError for an unknown rev."""
        from mlmake.checkout import lock_at

        return lock_at(self.root, self.lock_path, rev)[1]

    def params_at(self, rev: str) -> dict[str, Any]:
        """The flattened params (dotted key → value) as committed at `rev`: the params files
        that the Mlfile names there (else the default files), read from Git objects."""
        from mlmake import trigger as trig

        return trig.params_at(self.root, os.path.basename(self.mlfile_path), rev)

    def output(self, run_id: str, path: str) -> RunOutput:
        """Where the exact bytes of `path` as run `run_id` produced it are in the object
        store (a file), or what it holds (a directory out, or part of one). UsageError for
        an unknown run or a path that no out of it holds; StoreError when the object is no
        longer in the cache (or was corrupt, and is now taken out)."""
        from mlmake import runoutput

        build = self.runs_store.build(run_id)
        if build is None:
            raise UsageError(f"unknown run '{run_id}'.")
        runoutput.normalize(path)
        records: dict[str, OutRecord] = {}
        for r in reversed(self.runs_store.runs(build=run_id, limit=100_000)):
            for out, raw in (r.outs or {}).items():
                try:
                    records[out] = OutRecord.from_json(raw)
                except (TypeError, ValueError):
                    continue  # a record this mlmake cannot read names no bytes to serve
        if build.get("commit"):  # targets that were up to date: their outs at the commit
            names = set(build.get("targets") or [])
            try:
                entries = self.lock_at(build["commit"]).entries
            except MlmakeError:
                entries = {}
            for name, e in entries.items():
                if name in names:
                    for out, rec in e.outs.items():
                        records.setdefault(out, rec)
        if self._output_store is None:
            # no stat cache file, but one in memory for the Project's life: an object
            # verified once is not hashed again each time it is served
            self._output_store = Store(self.shared_path("cache"), self.root, StatCache(None))
        return runoutput.find(self._output_store, records, path, run_id)

    def metrics_files(self, kind: str = "metrics") -> list[str]:
        """The files `metrics` compares: every target's metrics files, or (`kind` "params")
        the params files."""
        from mlmake import metrics

        return metrics.files(self.pipeline, kind)

    def metrics(self, revs: tuple[str, ...] | list[str] = (), kind: str = "metrics",
                lenient: bool = False) -> list[Snapshot]:
        """The metrics files of every target (or the params files: `kind` "params") at each
        revision (default: the work tree only), read from Git objects; with `lenient` a file
        that does not parse is absent, its error in `Snapshot.errors`."""
        from mlmake import metrics

        return metrics.show(self.root, self.metrics_files(kind), self._files_at, revs, lenient)

    def metrics_diff(self, revs: tuple[str, ...] | list[str] = (), kind: str = "metrics",
                     all_rows: bool = False) -> Diff:
        """Compare the metrics (or params) files between two revisions: HEAD and the work
        tree, REV and the work tree, or A and B (see mlmake.metrics.diff)."""
        from mlmake import git, metrics

        unborn = not revs and git.head_is_unborn(self.root)
        return metrics.diff(self.root, self.metrics_files(kind), self._files_at, revs, kind,
                            all_rows, unborn)

    def _files_at(self, rev: str, paths: list[str]) -> tuple[str, dict[str, bytes | None]]:
        from mlmake import git

        return git.read_files_at(self.root, rev, paths)

    def content(self) -> Callable[[tuple[str, ...] | list[str]], tuple[str | None, ...]]:
        """A function giving the content hash of each of some paths (files, directories,
        globs) in the work tree, None for an absent one; every call goes through one stat
        cache kept in memory, so an unchanged tree costs one stat per file."""
        stats = StatCache(None)

        def hashes(paths: tuple[str, ...] | list[str]) -> tuple[str | None, ...]:
            hasher = Hasher(self.root, stats)
            return tuple(hasher.dep(p) for p in paths)
        return hashes

    def reloaded(self) -> Project:
        """A new Project over the same Mlfile and state, which reads the Mlfile and params
        files again (a long-lived server sees the work tree as it is now)."""
        return Project(self.root, self.mlfile_path, shared_state=self.shared_state)

    def secret(self, name: str) -> tuple[str, str]:
        """A random token kept in .mlmake/`name` (mode 0600), made on first use; returns it
        and the file's path."""
        from mlmake.atomic import atomic_write

        path = self.state_path(name)
        try:
            with open(path, encoding="utf-8") as fh:
                token = fh.read().strip()
            if token:
                os.chmod(path, 0o600)
                return token, path
        except FileNotFoundError:
            pass
        token = secrets.token_urlsafe(32)
        atomic_write(path, token + "\n", 0o600)
        return token, path

    # -- outputs of commits -----------------------------------------------------------------
    def checkout(self, rev: str | None = None, targets: tuple[str, ...] | list[str] = (),
                 force: bool = False, metrics: bool = False) -> CheckoutResult:
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
        store.export(OutRecord(oid, kind), dest)

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
        from mlmake.build import BuildConfig, Builder, BuildParts, LockWriter
        from mlmake.executors.local import LocalExecutor

        with self._project_lock(True, ev.NullReporter()):
            lock = Lock.read(self.lock_path)
            checker = self._checker(lock)
            parts = BuildParts(pipeline=self.pipeline, graph=self.graph, checker=checker,
                               hasher=checker.hasher, executor=LocalExecutor(),
                               reporter=ev.NullReporter(), runs=self.runs_store,
                               store=checker.store, runcache=self.runcache)
            changed = Builder(BuildConfig("commit", self.state_path("logs")), parts,
                              LockWriter(lock, set(self.pipeline.targets),
                                         parts.reporter)).record(order, force)
            lock.write(set(self.pipeline.targets))
            checker.hasher.cache.save()
            self._update_gitignore()
        return changed

    def gc(self, all_commits: bool = False, dry_run: bool = False) -> GcResult:
        """Remove cache objects that the work tree's lock (or any commit's) does not need."""
        from mlmake import git
        from mlmake.gc import gc

        with self._project_lock(True, ev.NullReporter()):
            kept = self.experiment_locks()
            return gc(self.root, self.lock_path, self.store(), self.runcache, all_commits,
                      dry_run, self.runs_store, kept)

    # -- remote cache -----------------------------------------------------------------------
    def remote(self, name: str | None = None, jobs: int | None = None,
               quick: bool = False) -> Remote | None:
        """The remote `name` (default: .mlmake/config.toml's, else [project] remote, else the
        only one defined) with this clone's overrides applied; None when none is defined."""
        from mlmake import config as user_config
        from mlmake.remote import Remote

        config = user_config.read_config(os.path.join(self.shared_state or self.state_dir,
                                                      user_config.CONFIG))
        spec = user_config.choose(self.pipeline, config, name)
        if spec is None:
            return None
        return Remote(spec.name, spec.url, spec.options, root=self.root, jobs=jobs,
                      quick=quick, index_dir=os.path.join(self.shared_state or self.state_dir,
                                                          "remote-packs"))

    def _needs_remote(self, name: str | None, jobs: int | None) -> Remote:
        r = self.remote(name, jobs)
        if r is None:
            raise UsageError("no remote configured: add a [remote.NAME] table with a url to the "
                             "Mlfile (and [project] remote = \"NAME\"), or pass -r NAME.")
        return r

    def _remote_link(self, use_remote: bool, push: bool | None, name: str | None
                     ) -> Callable[..., BuildRemote] | None:
        """How a build uses the remote: a factory of its BuildRemote, or None."""
        from functools import partial

        from mlmake import config as user_config
        from mlmake.buildremote import BuildRemote

        config = user_config.read_config(os.path.join(self.shared_state or self.state_dir,
                                                      user_config.CONFIG))
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
        return partial(BuildRemote, r, lookup=use_remote, push=bool(push))

    def doctor(self, remote: str | None = None, check_remote: bool = True) -> DoctorReport:
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
             jobs: int | None = None, all_commits: bool = False,
             callback: Progress | None = None) -> PushResult:
        """Upload the objects that the selected targets' lock entries (of the work tree, or
        of every commit) reference, and their run-cache entries; only what the remote lacks
        moves. `callback` receives progress (mlmake.remote.Progress)."""
        from mlmake.push import push

        r = self._needs_remote(remote, jobs)
        try:
            # it writes the local run cache too: as the lock's holder, so that a push killed
            # mid-write has its temporary files swept by the next run, like a build's
            with self._project_lock(True, ev.NullReporter()):
                store = self.store()
                result = push(r, store, self.runcache,
                              self._shared_entries(targets, all_commits), callback)
                if not targets:
                    from mlmake import sources

                    sources.push(r, store, sources.source_records(
                        self.lock_path, all_commits, self.root), result, callback)
                return result
        finally:
            r.close()

    def _shared_entries(self, targets: tuple[str, ...] | list[str], all_commits: bool
                        ) -> list[tuple[str, LockEntry]]:
        """(target, lock entry) pairs that push and pull move: `cache = false` targets
        keep nothing in the cache, so they are left out."""
        from mlmake.lockfile import lock_entries

        names = self._closure_names(targets)
        g = self.graph
        return [(n, e) for n, e in lock_entries(self.lock_path, names, all_commits, self.root)
                if n not in g.targets or g.targets[n].cache]

    def push_locks(self, locks: list[Lock], remote: str | None = None) -> PushResult | None:
        """Upload what the entries of `locks` (say, those of experiments) reference, with
        their run-cache entries; None when no remote is configured."""
        from mlmake.push import push

        r = self.remote(remote)
        if r is None:
            return None
        try:
            with self._project_lock(True, ev.NullReporter()):
                return push(r, self.store(), self.runcache, self._entries_of(locks))
        finally:
            r.close()

    def pull_locks(self, locks: list[Lock], remote: str | None = None) -> PullResult | None:
        """Download what the entries of `locks` reference into the cache (verified), with
        their run-cache entries; nothing is linked. None when no remote is configured."""
        from mlmake.pull import pull

        r = self.remote(remote)
        if r is None:
            return None
        try:
            with self._project_lock(True, ev.NullReporter()):
                return pull(r, self.store(), self.runcache, self._entries_of(locks))
        finally:
            r.close()

    def _entries_of(self, locks: list[Lock]) -> list[tuple[str, LockEntry]]:
        """Each (target, entry) of `locks` once, leaving out `cache = false` targets."""
        g = self.graph
        seen: set[tuple[str, str]] = set()
        out = []
        for lock in locks:
            for n, e in sorted(lock.entries.items()):
                if (n, e.key) in seen or (n in g.targets and not g.targets[n].cache):
                    continue
                seen.add((n, e.key))
                out.append((n, e))
        return out

    def pull(self, targets: tuple[str, ...] | list[str] = (), remote: str | None = None,
             jobs: int | None = None, all_commits: bool = False,
             callback: Progress | None = None) -> PullResult:
        """Download what the selected targets' lock entries reference (verified, into the
        cache) with their run-cache entries, then restore the work tree's outs from the
        work tree's lock, like `checkout`."""
        from mlmake.checkout import checkout
        from mlmake.pull import pull

        r = self._needs_remote(remote, jobs)
        names = self._closure_names(targets)
        try:
            with self._project_lock(True, ev.NullReporter()):
                checker = self._checker()
                result = pull(r, checker.store, self.runcache,
                              self._shared_entries(targets, all_commits), callback)
                if names is None:
                    from mlmake import sources

                    sources.pull(r, checker.store, sources.source_records(
                        self.lock_path, all_commits, self.root), result, callback)
                recorded = {n for n in Lock.read(self.lock_path).entries
                            if n not in self.graph.targets or self.graph.targets[n].cache}
                chosen = recorded if names is None else names & recorded
                if chosen or (names is None and self.source_paths()):
                    result.checkout = checkout(self.root, self.lock_path, None, checker.store,
                                               checker.hasher, chosen, False,
                                               data=names is None)
                checker.hasher.cache.save()
            return result
        finally:
            r.close()

    # -- data sources -----------------------------------------------------------------------
    def add(self, paths: tuple[str, ...] | list[str]) -> list[Any]:
        """Track files or directories as data sources: stored by hash, linked back read-only,
        Git-ignored and recorded in the lock (mlmake.sources.Added per path)."""
        from mlmake import sources

        with self._project_lock(True, ev.NullReporter()):
            stats = StatCache(self.state_path("statcache"))
            try:
                return sources.add(self.root, self.lock_path, self.store(stats),
                                   Hasher(self.root, stats), paths, self._all_outs())
            finally:
                stats.save()
                self._update_gitignore()

    def import_data(self, url: str, path: str, options: dict[str, Any] | None = None) -> Any:
        """Download `url` (a path outside the project or any fsspec URL) to `path` and track
        it as a data source with its URL and the version seen (sources.Imported)."""
        from mlmake import sources

        with self._project_lock(True, ev.NullReporter()):
            store = self.store()
            try:
                return sources.import_url(self.root, self.lock_path, store, url, path,
                                          dict(options or {}), self._all_outs())
            finally:
                store.stats.save()
                self._update_gitignore()

    def update_data(self, paths: tuple[str, ...] | list[str] = ()) -> list[Any]:
        """Ask the origin of imported sources (default: all) for a new version and record it."""
        from mlmake import sources

        with self._project_lock(True, ev.NullReporter()):
            store = self.store()
            try:
                return sources.update(self.root, self.lock_path, store, paths)
            finally:
                store.stats.save()

    def source_paths(self) -> list[str]:
        """The paths of the data sources this checkout's lock records."""
        from mlmake import sources

        try:
            return sources.paths(Lock.read(self.lock_path))
        except MlmakeError:
            return []

    def _data_changes(self, lock: Lock, checker: Checker) -> list[Any]:
        from mlmake import sources

        return sources.changes(self.root, lock, checker.hasher, checker.store) \
            if lock.sources else []

    def _link_sources(self, names: set[str], use_remote: bool, remote: str | None,
                      wait: bool, restore: bool) -> list[str]:
        """The data sources' paths; with `restore`, those that `names` read and the work tree
        lacks are first linked from the cache, else fetched from the remote cache (never
        from their origin)."""
        from mlmake import sources

        lock = Lock.read(self.lock_path)
        if not lock.sources or not restore:
            return sources.paths(lock)
        deps = [d for n in names for d in self.graph.targets[n].deps]
        absent = [p for p in lock.sources if not os.path.lexists(os.path.join(self.root, p))
                  and any(sources.covers(p, d) for d in deps)]
        if not absent:
            return sources.paths(lock)
        with self._project_lock(wait, ev.NullReporter()):
            store = self.store()
            r = self.remote(remote) if use_remote else None
            try:
                def fetch(recs: list[tuple[str, SourceRecord]]) -> None:
                    sources.fetch(r, store, recs)

                sources.ensure(self.root, lock, store, lambda p: p in absent,
                               fetch if r is not None else None, r.name if r is not None else None)
            finally:
                store.stats.save()
                if r is not None:
                    r.close()
        return sources.paths(lock)

    # -- scaffolding ------------------------------------------------------------------------
    @staticmethod
    def init(dest: str, template: str = "minimal") -> list[str]:
        """Copy a starter project into `dest`; refuses to overwrite an existing Mlfile."""
        from mlmake.scaffold import init

        return init(dest, template)

    # -- git hooks --------------------------------------------------------------------------
    def install_hooks(self) -> list[HookChange]:
        """Add mlmake to the repository's Git hooks, chained after existing ones; idempotent."""
        from mlmake import hooks

        return hooks.install(self.root, self.mlfile_path, hooks.wanted(self.pipeline))

    def uninstall_hooks(self) -> list[HookChange]:
        """Take mlmake out of the Git hooks, putting back the hooks that were there."""
        from mlmake import hooks

        return hooks.uninstall(self.root)

    def hooks_status(self) -> list[HookState]:
        """Every Git hook mlmake knows: installed or not, and the actions it runs."""
        from mlmake import hooks

        return hooks.status(self.root, self.pipeline, self.mlfile_path)

    def run_hook(self, name: str, args: tuple[str, ...] | list[str] = (), stdin: str = "",
                 timeout: float | None = None) -> HookResult:
        """Do what the [hooks] table maps Git hook `name` to (called by the hook scripts),
        within `timeout` seconds (default: $MLMAKE_HOOK_TIMEOUT or 60); see
        mlmake.hookactions."""
        from mlmake import hookactions

        ctx = hookactions.HookContext(
            root=self.root, mlfile_path=self.mlfile_path, lock_path=self.lock_path,
            pipeline=lambda: self.pipeline, state_path=self.state_path, checkout=self.checkout,
            status=self.status, push=lambda all_commits: self.push(all_commits=all_commits),
            has_remote=self._has_remote,
            managed=STATE_DIR in os.path.normpath(self.root).split(os.sep))
        return hookactions.run(ctx, name, tuple(args), stdin, timeout)

    def _has_remote(self) -> bool:
        """Whether a remote is configured: in the Mlfile or this clone's .mlmake/config.toml
        (a misconfigured one counts, so that a push says what is wrong)."""
        try:
            remote = self.remote(quick=True)
        except MlmakeError:
            return True
        if remote is None:
            return False
        remote.close()
        return True

    # -- environments -----------------------------------------------------------------------
    def envs(self) -> EnvReport:
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
                   log: Callable[[str, str], None] | None = None) -> list[EnvBuild]:
        """Build (or pull) the named environments now (default: all), so no run waits for
        them; `log(env, line)` receives the build output."""
        from mlmake.envs import inventory

        checker = self._checker()
        try:
            return inventory.build(self.pipeline, names, checker.env_digest, self.root,
                                   self.shared_path(), log or (lambda env, line: None))
        finally:
            checker.hasher.cache.save()

    def prune_envs(self, dry_run: bool = False) -> PruneResult:
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
