"""WorktreesMixin: `Project` building other commits in Git worktrees that share its state:
the runs `mlmake serve` triggers and the experiments' records."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mlmake.errors import MlmakeError
from mlmake.project_state import BuildResult, ProjectState

if TYPE_CHECKING:
    from mlmake import events as ev
    from mlmake.exp_store import Experiment
    from mlmake.trigger import Request

T = TypeVar("T")
W = TypeVar("W", bound="WorktreesMixin")


class WorktreesMixin(ProjectState):
    """Builds of a commit in a worktree of this project, and what they record."""

    run: Callable[..., BuildResult]  # Project.run

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

    def build_at(self: W, request: Request, reporter: ev.Reporter | None = None,
                 started: Callable[[W], None] | None = None) -> str:
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

    def build_commit(self: W, commit: str, targets: tuple[str, ...], params: dict[str, Any],
                     build_id: str, inspect: Callable[[W, BuildResult], T], *,
                     trigger: str = "exp", reporter: ev.Reporter | None = None,
                     executor: str | None = None,
                     started: Callable[[W], None] | None = None,
                     area: str = "exps/worktrees",
                     executor_options: dict[str, Any] | None = None) -> T:
        """Build `targets` of `commit` with `params` written into its params files, in a
        Git worktree under .mlmake/`area` that shares this project's store, run cache and
        run records; the work tree, index and lock are never touched. `inspect(worktree
        project, result)` runs before the worktree is removed; its value is returned."""
        from mlmake import trigger as trig

        def run(root: str) -> T:
            wp = self._worktree_project(root, targets, params, started)
            result = wp.run(targets, trigger=trigger, build_id=build_id, reporter=reporter,
                            executor=executor, executor_options=executor_options)
            return inspect(wp, result)

        return trig.in_worktree(self.root, self.state_path(), commit, build_id, run, area)

    def _worktree_project(self: W, root: str, targets: tuple[str, ...], params: dict[str, Any],
                          started: Callable[[W], None] | None) -> W:
        """The project at `root` inside a worktree of this one, sharing its state, ready
        to build `targets` with `params` written into its params files."""
        from mlmake import trigger as trig

        wp = type(self)(root, os.path.basename(self.mlfile_path),
                        shared_state=self.state_path())
        trig.seed_stat_cache(self.state_path("statcache"), wp.state_path("statcache"))
        if started is not None:
            started(wp)
        trig.link_untracked(wp.root, self.root, wp.graph, wp.select(targets),
                            wp.source_paths())
        wp.set_params(params)  # the command reads what the key covers
        return wp

    def params_at(self, rev: str) -> dict[str, Any]:
        """The flattened params (dotted key → value) as committed at `rev`: the params files
        that the Mlfile names there (else the default files), read from Git objects."""
        from mlmake import trigger as trig

        return trig.params_at(self.root, os.path.basename(self.mlfile_path), rev)

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

    def recover_triggers(self) -> list[str]:
        """Clean up after a service that died: remove its leftover worktrees and mark the
        runs it had queued or was building as interrupted. Returns their ids."""
        from mlmake import trigger as trig

        return trig.recover(self.root, self.state_path(), self.runs_store)

    def git_root(self) -> str:
        """The top of the Git work tree holding the project; a UsageError outside Git."""
        from mlmake import trigger as trig

        return trig.repo_root(self.root)
