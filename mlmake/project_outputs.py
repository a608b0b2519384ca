"""OutputsMixin: `Project`'s verbs over recorded outputs: checkout, get, commit, gc, and
the remote cache (push, pull, doctor)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlmake.errors import UsageError
from mlmake.lockfile import Lock
from mlmake.project_state import ProjectState

if TYPE_CHECKING:
    from mlmake.buildremote import BuildRemote
    from mlmake.checkout import CheckoutResult
    from mlmake.doctor import DoctorReport
    from mlmake.exp_store import RefSync
    from mlmake.gc import GcResult
    from mlmake.lockfile import LockEntry
    from mlmake.pull import PullResult
    from mlmake.push import PushResult
    from mlmake.remote import Progress, Remote


class OutputsMixin(ProjectState):
    """Restoring, recording and moving the outputs that locks record."""

    # -- outputs of commits -----------------------------------------------------------------
    def checkout(self, rev: str | None = None, targets: tuple[str, ...] | list[str] = (),
                 force: bool = False, metrics: bool = False) -> CheckoutResult:
        """Restore the outputs recorded in `rev`'s lock (default: the work tree's lock)
        without touching tracked files; with `metrics`, also write the metrics files as
        committed at `rev` (result.metrics_written), so outs and metrics agree."""
        from mlmake.checkout import checkout, checkout_metrics

        checker = self._checker()
        with self._project_lock(True):
            result = checkout(self.root, self.lock_path, rev, checker.store, checker.hasher,
                              set(targets) if targets else None, force,
                              self._closure_names(targets, strict=False))
            checker.hasher.cache.save()
            result.metrics_written = []
            if metrics and rev is not None and result.metrics:
                result.metrics_written, _ = checkout_metrics(self.root, result.commit,
                                                             result.metrics, force)
        return result

    def get_object(self, oid: str, dest: str) -> None:
        """Write the object `oid` (a file, or a directory by its tree hash) to `dest`: how a
        hand-edited out that a build replaced comes back."""
        from mlmake.model import OutRecord
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
        from mlmake import events as ev
        from mlmake.build import BuildConfig, Builder, BuildParts, LockWriter
        from mlmake.executors.local import LocalExecutor

        with self._project_lock(True):
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
            self._update_gitignore(lock)
        return changed

    def gc(self, all_commits: bool = False, dry_run: bool = False) -> GcResult:
        """Remove cache objects that the work tree's lock (or any commit's) does not need."""
        from mlmake.gc import gc

        with self._project_lock(True):
            kept = self.experiment_locks()
            return gc(self.root, self.lock_path, self.store(), self.runcache, all_commits,
                      dry_run, self.runs_store, kept)

    def experiment_locks(self) -> list[Lock]:
        """The lock of every recorded experiment (what `gc` keeps and `exp push` moves)."""
        from mlmake import exp_store

        top = exp_store.toplevel(self.root)
        if top is None:
            return []
        return exp_store.kept_locks(top, os.path.relpath(self.lock_path, top)
                                    .replace(os.sep, "/"))

    # -- remote cache -----------------------------------------------------------------------
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
        from mlmake.buildremote import BuildRemote

        return partial(BuildRemote, r, lookup=use_remote, push=bool(push))

    def doctor(self, remote: str | None = None, check_remote: bool = True) -> DoctorReport:
        """Verify every object of the local cache and of the remote (`check_remote`), remove
        corrupt local objects and replace corrupt remote copies with good local ones; a
        `doctor.DoctorReport` says what was checked and repaired."""
        from mlmake import doctor

        with self._project_lock(True):
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
             callback: Progress | None = None, experiments: bool = False) -> PushResult:
        """Upload the objects that the selected targets' lock entries (of the work tree, or
        of every commit) reference, and their run-cache entries; only what the remote lacks
        moves. `callback` receives progress (mlmake.remote.Progress).

        With `experiments` and no `targets`, the outs of every recorded experiment that the
        local cache holds go too, and then their refs go to the Git remote
        (result.experiments, an exp_store.RefSync; a GitError after the cache went says so)."""
        from mlmake.push import push

        exps = experiments and not targets
        r = self._needs_remote(remote, jobs)
        try:
            # it writes the local run cache too: as the lock's holder, so that a push killed
            # mid-write has its temporary files swept by the next run, like a build's
            with self._project_lock(True):
                store = self.store()
                extra = self._entries_of(self.experiment_locks()) if exps else []
                result = push(r, store, self.runcache,
                              self._shared_entries(targets, all_commits), callback, extra)
                if not targets:
                    from mlmake import sources

                    sources.push(r, store, sources.source_records(
                        self.lock_path, all_commits, self.root), result, callback)
        finally:
            r.close()
        if exps:
            result.experiments = self._push_experiment_refs(result)
        return result

    def _push_experiment_refs(self, result: PushResult) -> RefSync | None:
        """Push the experiment refs to the repository's Git remote (None outside Git)."""
        from mlmake import exp_store
        from mlmake.errors import GitError

        top = exp_store.toplevel(self.root)
        if top is None:
            return None
        try:
            return exp_store.push_refs(top)
        except GitError as exc:
            raise GitError(f"{exc}. The cache push to '{result.remote}' is done "
                           f"({result.pushed} objects uploaded); run `mlmake push` again once "
                           "the Git remote takes pushes, or `mlmake push --no-exps` to leave "
                           "experiments out.") from exc

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
            with self._project_lock(True):
                return push(r, self.store(), self.runcache, self._entries_of(locks))
        finally:
            r.close()

    def pull_locks(self, locks: list[Lock], remote: str | None = None,
                   lacking_only: bool = False) -> PullResult | None:
        """Download what the entries of `locks` reference into the cache (verified), with
        their run-cache entries; nothing is linked. None when no remote is configured, or
        with `lacking_only` when the cache holds every object already (no remote is
        contacted then: only entries with an out the cache lacks are downloaded)."""
        from mlmake.pull import pull

        entries = self._entries_of(locks)
        if lacking_only:
            store = self.store()
            entries = [(n, e) for n, e in entries if not store.held(e.outs, [])[1]]
            if not entries:
                return None
        r = self.remote(remote)
        if r is None:
            return None
        try:
            with self._project_lock(True):
                return pull(r, self.store(), self.runcache, entries)
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
             callback: Progress | None = None, experiments: bool = False) -> PullResult:
        """Download what the selected targets' lock entries reference (verified, into the
        cache) with their run-cache entries, then restore the work tree's outs from the
        work tree's lock, like `checkout`.

        With `experiments` and no `targets`, the refs of the experiments that the Git
        remote holds and this clone lacks are fetched too (result.experiments); their outs
        are not: `exp apply` fetches those of the experiment it applies."""
        from mlmake.checkout import checkout
        from mlmake.pull import pull

        r = self._needs_remote(remote, jobs)
        names = self._closure_names(targets)
        try:
            with self._project_lock(True):
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
        finally:
            r.close()
        if experiments and not targets:
            result.experiments = self._fetch_experiment_refs()
        return result

    def _fetch_experiment_refs(self) -> RefSync | None:
        """Fetch the experiment refs of the repository's Git remote (None outside Git). No
        Git remote is no error, and one that fails is noted (RefSync.error), not raised:
        the outs that a pull is for have come already."""
        from mlmake import exp_store
        from mlmake.errors import GitError

        top = exp_store.toplevel(self.root)
        if top is None:
            return None
        try:
            return exp_store.fetch_refs(top)
        except GitError as exc:
            return exp_store.RefSync(exp_store.git_remote(top), error=str(exc))
