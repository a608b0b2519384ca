"""QueriesMixin: `Project`'s read-only questions (the graph's states, run records and logs,
what commits hold) that the CLI and `mlmake serve` ask."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mlmake.errors import MlmakeError, UsageError
from mlmake.hashing import Hasher, StatCache
from mlmake.lockfile import Lock
from mlmake.plan import Plan
from mlmake.project_state import ProjectState

if TYPE_CHECKING:
    from mlmake.metrics import Diff, Snapshot
    from mlmake.runoutput import RunOutput
    from mlmake.runs import RunRecord

Q = TypeVar("Q", bound="QueriesMixin")


class QueriesMixin(ProjectState):
    """Questions about the project that change nothing."""

    # -- queries ----------------------------------------------------------------------------
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

    def output(self, run_id: str, path: str) -> RunOutput:
        """Where the exact bytes of `path` as run `run_id` produced it are in the object
        store (a file), or what it holds (a directory out, or part of one). UsageError for
        an unknown run or a path that no out of it holds; StoreError when the object is no
        longer in the cache (or was corrupt, and is now taken out)."""
        from mlmake import runoutput
        from mlmake.model import OutRecord
        from mlmake.store import Store

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

    def reloaded(self: Q) -> Q:
        """A new Project over the same Mlfile and state, which reads the Mlfile and params
        files again (a long-lived server sees the work tree as it is now)."""
        return type(self)(self.root, self.mlfile_path, shared_state=self.shared_state)

    def secret(self, name: str) -> tuple[str, str]:
        """A random token kept in .mlmake/`name` (mode 0600), made on first use; returns it
        and the file's path."""
        import secrets

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
