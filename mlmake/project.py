"""Project: the Python API over an Mlfile, the one object the CLI and the server call."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlmake.errors import MlmakeError, UsageError
from mlmake.hashing import Hasher, StatCache
from mlmake.lockfile import Lock
from mlmake.plan import Plan
from mlmake.project_data import DataMixin
from mlmake.project_outputs import OutputsMixin
from mlmake.project_queries import QueriesMixin
from mlmake.project_state import MLFILE, STATE_DIR, BuildResult, ProjectState, find_mlfile
from mlmake.project_worktrees import WorktreesMixin

# Executors, the store, run records and events are imported by the methods that use them,
# so that `status` loads none of them (tests/unit/test_imports_cost.py).
if TYPE_CHECKING:
    from mlmake import events as ev
    from mlmake.buildremote import BuildRemote
    from mlmake.envs.inventory import BuildResult as EnvBuild
    from mlmake.envs.inventory import EnvReport, PruneResult
    from mlmake.executors.base import Capacity, Executor
    from mlmake.hookactions import HookResult
    from mlmake.hooks import HookChange, HookState
    from mlmake.model import Outcome
    # serve/ names these through Project's module
    from mlmake.runs import RunRecord as RunRecord
    from mlmake.trigger import Request as Request

# the names callers take from here, though they live in the parts below Project
__all__ = ["MLFILE", "STATE_DIR", "BuildResult", "Project", "find_mlfile"]


class Project(DataMixin, OutputsMixin, WorktreesMixin, QueriesMixin, ProjectState):
    """An mlmake project: an Mlfile, its lock, and the state directory beside them.

    Its methods live by concept in the classes it combines: ProjectState (paths, pipeline,
    store, remote, the project lock), DataMixin (data sources), OutputsMixin (checkout, gc,
    push and pull), WorktreesMixin (builds of other commits), QueriesMixin (read-only
    questions); status, building, hooks and environments are here."""

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
        from mlmake import events as ev

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
        from mlmake.executors import make_executor
        from mlmake.executors.base import check_fits

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
        from mlmake import events as ev

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
        """Refuse what this machine cannot hold, for `-n` and `status` as for a local run.
        A target asking for one CPU, no GPU and no memory fits any machine: without such a
        request the executors are not even imported."""
        if (executor or self.pipeline.executor) != "local":
            return
        asks = [self.graph.targets[n].resources for n in names]
        if all(r.cpus <= 1 and not r.gpus and not r.memory for r in asks):
            return
        from mlmake.executors.base import check_fits, machine_capacity

        check_fits(self.pipeline, names, machine_capacity(any(r.gpus for r in asks)))

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
        from mlmake import events as ev
        from mlmake import git, sources
        from mlmake.build import BuildConfig, Builder, BuildParts, LockWriter
        from mlmake.scheduler import Scheduler

        build_id = build_id or time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()
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
        needs_env = [(n, self.pipeline.envs[env]) for n in order if n in lookahead.must_run
                     and (env := self.graph.targets[n].env)]
        if runner.name == "local" and needs_env:  # no Docker engine, no interpreter: exit 2,
            from mlmake import envs  # nothing runs (a Ray worker prepares envs on its node)

            envs.check(needs_env)
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
        writer = LockWriter(lock, set(self.pipeline.targets), reporter, background=True)
        reporter.emit(ev.BuildStarted(build_id, tuple(order), (), jobs, runner.name))
        builder = Builder(config, parts, writer)
        sched = Scheduler(self.graph, names, cap, jobs, keep_going, builder.work,
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
            builder.flush()
            checker.hasher.cache.save()
            self._update_gitignore(lock)
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

        with self._project_lock(True):
            checker = self._checker()
            try:
                return inventory.prune(self.pipeline, checker.env_digest, self.root,
                                       self.shared_path("envs"), dry_run)
            finally:
                checker.hasher.cache.save()


def _summarize(outcomes: dict[str, Outcome], order: list[str], duration: float,
               interrupted: bool) -> ev.Summary:
    from mlmake import events as ev

    counts = {"ran": 0, "reused": 0, "uptodate": 0, "failed": 0, "blocked": 0}
    for n in order:
        o = outcomes.get(n)
        if o is None:
            continue
        counts[o.status if o.status in counts else "blocked"] += 1
    return ev.Summary(counts["ran"], counts["reused"], counts["uptodate"], counts["failed"],
                      counts["blocked"], duration, interrupted)
