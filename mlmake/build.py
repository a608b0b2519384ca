"""One build: for each ready target, re-check it, run it (or skip it) and record the result."""

from __future__ import annotations

import os
import stat as stat_mod
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mlmake import events as ev
from mlmake.executors.base import Executor, Job
from mlmake.graph import Graph
from mlmake.hashing import Entry, Hasher
from mlmake.lockfile import Lock, LockChangedError, LockEntry
from mlmake.errors import RemoteError, StoreError, UsageError
from mlmake.model import MANIFEST_SUFFIX, Outcome, OutRecord, Pipeline, Target, outs_json
from mlmake.plan import Checker, Lookahead, TargetState
from mlmake.runcache import RunCache
from mlmake.runs import RunRecord, RunStore
from mlmake.store import MissingObjectError, Store, remove_path

if TYPE_CHECKING:
    from mlmake.buildremote import BuildRemote


@dataclass(frozen=True)
class BuildConfig:
    """A build's settings, fixed before it starts."""

    build_id: str
    log_dir: str
    commit: str | None = None
    forced: frozenset[str] = frozenset()  # targets run even when up to date
    estimates: Mapping[str, float] = field(default_factory=dict)  # target → seconds expected
    keys_dir: str | None = None  # shared .mlmake/keys/: one builder per target key at once
    state_dir: str | None = None  # the .mlmake/ whose envs/ holds the venvs (shared too)


@dataclass(frozen=True)
class BuildParts:
    """The collaborators a build talks to from its worker threads."""

    pipeline: Pipeline
    graph: Graph
    checker: Checker
    hasher: Hasher
    executor: Executor
    reporter: ev.Reporter
    runs: RunStore
    store: Store
    runcache: RunCache | BuildRemote  # the remote's after the local one, with a remote
    lookahead: Lookahead | None = None
    remote: BuildRemote | None = None  # remote lookups, downloads, uploads


class LockWriter:
    """The build's Mlfile.lock: entries recorded from worker threads under `mutex`, the file
    written at most every `interval` seconds, and no sooner than 20 times as long as the
    last write took, so that rewriting a large lock costs a build at most about 1/20 of its
    time: amortized O(1) per target. Results recorded since the last write are safe in the
    run cache, and `flush` (also on interrupt) writes them.

    Crash order: the objects and run-cache entries a build writes without fsync (`unsynced`
    paths, given with their lock entry) are fsynced, and the run cache's directories too,
    before the lock write that names them; a power loss can lose or tear only files that
    no lock names (a torn object fails verification, a torn run-cache entry reads as none).
    With `background`, a thread of its own does the fsyncs and writes, while the next
    commands run.

    A lock file replaced on disk meanwhile (a checkout of another commit) is a `conflict`:
    it warns once and nothing more is written.
    """

    def __init__(self, lock: Lock, keep: set[str], reporter: ev.Reporter,
                 interval: float = 0.2, background: bool = False) -> None:
        self.lock = lock
        self.keep = keep  # the targets whose entries the file keeps
        self.reporter = reporter
        self.interval = interval
        self.mutex = threading.Lock()
        self.conflict: LockChangedError | None = None
        self._saved = float("-inf")  # the first record is written at once
        self._cost = 0.0  # seconds the last write took
        self._dirty = False
        self._unsynced: list[str] = []  # files to fsync before the next write
        self._unsynced_dirs: set[str] = set()  # and directories
        self._wake = threading.Condition(self.mutex)
        self._stopping = False
        self._failed: BaseException | None = None  # what stopped the background writes
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="mlmake-lock",
                                            daemon=True)
            self._thread.start()

    @property
    def entries(self) -> dict[str, LockEntry]:
        return self.lock.entries

    def record(self, name: str, entry: LockEntry, unsynced: tuple[str, ...] = (),
               unsynced_dirs: tuple[str, ...] = ()) -> None:
        """Set `name`'s entry and write the file unless it was written moments ago;
        `unsynced` files (and `unsynced_dirs`) are made durable before any write names
        them."""
        with self.mutex:
            self.lock.entries[name] = entry
            self._unsynced.extend(unsynced)
            self._unsynced_dirs.update(unsynced_dirs)
            was_dirty, self._dirty = self._dirty, True
            if self._thread is not None:
                if not was_dirty:
                    self._wake.notify()  # (it waits for the first entry after a write)
            elif self._due():
                self._write(*self._take())

    def flush(self) -> None:
        """Write what was recorded since the last write (the background thread stops)."""
        thread = self._thread
        if thread is not None:
            with self.mutex:
                self._stopping = True
                self._wake.notify()
            thread.join()
            self._thread = None
        with self.mutex:
            if self._dirty:
                self._write(*self._take())
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def _due(self) -> bool:
        return time.monotonic() - self._saved >= max(self.interval, 20 * self._cost)

    def _take(self) -> tuple[list[str], set[str], str | None]:
        """Under `mutex`: the paths to fsync and the lock's text (None after a conflict),
        leaving nothing pending."""
        files, self._unsynced = self._unsynced, []
        dirs, self._unsynced_dirs = self._unsynced_dirs, set()
        self._dirty = False
        return files, dirs, None if self.conflict is not None else self.lock.render(self.keep)

    def _write(self, files: list[str], dirs: set[str], text: str | None) -> None:
        """fsync `files` and `dirs` (with a conflict too: the results stay in the run cache),
        then write `text` into the lock file. The objects share one journal commit on most
        filesystems, so a batch costs about one fsync."""
        from mlmake.atomic import fsync_dir, fsync_file

        start = time.monotonic()
        for path in files:
            try:
                fsync_file(path)
            except FileNotFoundError:
                pass  # taken out of the cache meanwhile (gc): nothing names it any more
        for d in sorted(dirs):
            fsync_dir(d)
        if text is not None:
            try:
                self.lock.write_text(text)
            except LockChangedError as exc:
                self.conflict = exc
                self.reporter.emit(ev.Notice(str(exc), "warning"))
        self._saved = time.monotonic()
        self._cost = self._saved - start

    def _loop(self) -> None:
        """The background writer: waits for entries, lets `interval` (or 20 x the last
        write's time) pass since the last write, then writes; ends at `flush`."""
        try:
            while True:
                with self.mutex:
                    while not self._dirty and not self._stopping:
                        self._wake.wait()
                    while not self._stopping and not self._due():
                        self._wake.wait(self._saved + max(self.interval, 20 * self._cost)
                                        - time.monotonic())  # a flush cuts it short
                    if self._stopping:
                        return  # flush writes what is left
                    work = self._take()
                self._write(*work)
        except BaseException as exc:  # kept for flush to raise in the build's thread
            self._failed = exc


class Builder:
    """The per-target work the scheduler calls from its worker threads."""

    def __init__(self, config: BuildConfig, parts: BuildParts, lock: LockWriter) -> None:
        self.config = config
        self.parts = parts
        self.lock = lock
        self.ran: set[str] = set()  # targets whose outs changed in this build
        self._ran_mutex = threading.Lock()
        self._records: list[RunRecord] = []  # run records not written yet (under _ran_mutex)
        self._records_at = time.monotonic()
        self._claims: dict[str, Any] = {}
        os.makedirs(config.log_dir, exist_ok=True)

    def work(self, name: str, gpus: tuple[str, ...]) -> Outcome:
        try:
            return self._work(name, gpus)
        finally:
            claim = self._claims.pop(name, None)
            if claim is not None:
                claim.release()

    def _claim(self, t: Target, state: TargetState, forced: bool) -> bool:
        """Claim `t`'s key before executing it, so that two builds sharing the state
        directory (triggered runs in worktrees) run it once; True when another builder held
        it, so its result may now be in the run cache."""
        keys_dir, reporter = self.config.keys_dir, self.parts.reporter
        if not keys_dir or not t.cache or forced or t.always or state.key is None:
            return False
        from mlmake.keylock import KeyClaim

        claim = KeyClaim(keys_dir, state.key)
        self._claims[t.name] = claim
        return claim.acquire(lambda: reporter.emit(ev.Notice(
            f"{t.name}: another build is running the same key; waiting for its result")))

    def _ran(self, name: str) -> None:
        with self._ran_mutex:
            self.ran.add(name)

    def _upstream_ran(self, name: str) -> bool:
        with self._ran_mutex:
            return bool(self.parts.graph.data_up[name] & self.ran)

    def _work(self, name: str, gpus: tuple[str, ...]) -> Outcome:
        p = self.parts
        t = p.graph.targets[name]
        started = time.time()
        forced = name in self.config.forced
        la = p.lookahead
        if la is not None and name in la.states and not self._upstream_ran(name):
            state = la.states[name]  # nothing upstream ran since the lookahead hashed it
        else:
            state = p.checker.state(t, force=forced)
        needed = la is None or name in la.needed
        if not state.stale or (not needed and all(r.kind == "out-missing"
                                                  for r in state.reasons)):
            if not state.stale and t.cache:
                self._store_uncached(t)
            outcome = Outcome(name, "uptodate", key=state.key,
                              message="" if needed or not state.stale else "not materialized")
            p.reporter.emit(ev.TargetFinished(outcome))
            return outcome
        if state.key is None:
            missing = [d for d, v in state.deps.items() if v is None]
            return self._finish(t, Outcome(name, "failed", key=None, message=(
                f"dep '{missing[0]}' is missing after its upstream ran; check that the "
                "upstream target writes it")), started, state)
        foreseen = la is not None and state is la.states.get(name) and name in la.reusable
        if la is not None and foreseen:
            recs: dict[str, OutRecord] | None = la.reusable[name]  # found with these inputs
        else:
            recs = p.checker.cached_outs(t, state, p.runcache, forced)
        if recs is None and self._claim(t, state, forced):
            recs = p.checker.cached_outs(t, state, p.runcache, forced)  # built meanwhile
        if recs is not None:
            try:
                outcome = self.reuse(t, state, recs, materialize=needed, started=started)
            except (StoreError, RemoteError) as exc:
                if not (p.remote is not None and isinstance(exc, MissingObjectError)):
                    p.reporter.emit(ev.Notice(f"{t.name}: {exc} Running it instead.",
                                              "warning"))  # (the remote lacks it: quiet)
            else:
                if not foreseen:  # (another build's result): downstream states are re-read
                    self._ran(name)
                return outcome
        try:
            self.materialize_inputs(t)
        except (StoreError, RemoteError) as exc:
            return self._finish(t, Outcome(name, "failed", key=state.key,
                                           message=str(exc)), started, state)
        return self.execute(t, state, gpus, started)

    def reuse(self, t: Target, state: TargetState, recs: dict[str, OutRecord],
              materialize: bool, started: float) -> Outcome:
        """Restore a target's outs from the store (or only record them when nothing needs
        them in the work tree) instead of running it."""
        p = self.parts
        root = p.pipeline.root
        source = p.remote.source(state.key) if p.remote is not None else "local"
        old = self.lock.entries.get(t.name)
        restored = old is not None and old.key == state.key and old.outs == recs
        if materialize:
            if p.remote is not None and p.remote.fetch({o: recs[o] for o in t.all_outs}):
                source = p.remote.name
            for out in t.all_outs:
                for oid in p.store.missing(recs[out]):
                    raise MissingObjectError(oid, out)
            for out in t.all_outs:
                rec = recs[out]
                now = p.hasher.path(out)
                if now == rec.hash:
                    continue
                self.keep_edit(t, out, now)
                if out in t.metrics:
                    p.store.export(rec, os.path.join(root, out))
                else:
                    p.store.restore(out, rec)
        else:  # lean: an out nothing needs is absent, never left holding other bytes
            for out in t.all_outs:
                now = p.hasher.path(out)
                if now is not None and now != recs[out].hash:
                    self.keep_edit(t, out, now)
                    remove_path(os.path.join(root, out))
        self.lock.record(t.name, state.entry(t.cmd, recs))
        if p.remote is not None and materialize:
            p.remote.adopt(state.key)
            if source == "local" and t.cache:
                p.remote.upload(t.name, state.key, recs)
        message = "not materialized" if not materialize else "restored" if restored else ""
        return self._finish(t, Outcome(t.name, "reused", key=state.key, source=source,
                                       message=message), started, state, recs)

    def keep_edit(self, t: Target, out: str, now: str | None) -> None:
        """Before an out whose content is `now` is replaced, put that content into the cache
        unless it is there already, so an edit by hand is never lost, and say where it is."""
        store = self.parts.store
        if now is None or store.has(now) or store.has(now + MANIFEST_SUFFIX):
            return
        store.keep(out)
        if out in t.metrics:
            return  # committed to Git, which shows the difference; the copy is kept quietly
        self.parts.reporter.emit(ev.Notice(
            f"{t.name}: '{out}' was modified in the work tree; the recorded version replaces "
            f"it, and yours is kept in the cache until `mlmake gc`: `mlmake get --object "
            f"{now} -o FILE` writes it out.", "warning"))

    def materialize_inputs(self, t: Target) -> None:
        """Restore any upstream out this target reads that is not in the work tree."""
        p = self.parts
        for u in p.graph.data_up[t.name]:
            entry = self.lock.entries.get(u)
            if entry is None:
                continue
            ut = p.graph.targets[u]
            for out, rec in entry.outs.items():
                now = p.hasher.path(out)
                if out in ut.metrics or now == rec.hash:
                    continue
                if p.remote is not None:
                    p.remote.fetch({out: rec})
                self.keep_edit(ut, out, now)
                p.store.restore(out, rec)

    def execute(self, t: Target, state: TargetState, gpus: tuple[str, ...],
                started: float) -> Outcome:
        p = self.parts
        root = p.pipeline.root
        if not t.persist:
            for out in t.all_outs:
                remove_path(os.path.join(root, out))
        else:
            for out in t.all_outs:
                if os.path.exists(os.path.join(root, out)):
                    p.store.unprotect(out)
        for out in t.all_outs:
            os.makedirs(os.path.dirname(os.path.join(root, out)) or ".", exist_ok=True)
        log_path = os.path.join(self.config.log_dir, f"{t.name}.log")
        p.reporter.emit(ev.TargetStarted(t.name, state.reasons,
                                         self.config.estimates.get(t.name)))
        # the modules it imports travel with it to a node without the project's files
        job_target = replace(t, deps=t.deps + tuple(state.implicit)) if state.implicit else t
        job = Job(target=job_target, root=root, log_path=log_path, gpus=gpus,
                  env={"MLMAKE_TARGET": t.name, "MLMAKE_ROOT": root},
                  env_spec=p.pipeline.envs.get(t.env) if t.env else None,
                  env_digest=state.env, state_dir=self.config.state_dir)
        t0 = time.monotonic()
        result = p.executor.run(job, lambda line: p.reporter.emit(
            ev.TargetOutput(t.name, line)))
        duration = time.monotonic() - t0
        if result.exit_code != 0:
            return self._finish(t, Outcome(t.name, "failed", duration, result.exit_code,
                                           log_path, result.message, state.key,
                                           node=result.node), started, state)
        outs, missing, entries_of = self.hash_outs(t)
        if missing:
            return self._finish(t, Outcome(
                t.name, "failed", duration, 0, log_path,
                f"the command succeeded but did not write '{missing[0]}'; fix the command or "
                "the target's outs", state.key), started, state)
        unsynced: tuple[str, ...] = ()
        unsynced_dirs: tuple[str, ...] = ()
        if t.cache and state.key is not None:  # (a target runs only with a key)
            # crash order: objects, then links, run cache, lock entry, run record; the
            # fsyncs of the objects and the run-cache entry wait for the next lock write
            try:
                unsynced = self.save(t, outs, entries_of, sync=False)
                if isinstance(p.runcache, RunCache):
                    p.runcache.put(state.key, t.name, outs, durable=False)
                    entry = p.runcache.entry_path(state.key)
                    unsynced += (entry,)
                    unsynced_dirs = (os.path.dirname(entry),)
                else:
                    p.runcache.put(state.key, t.name, outs)
            except (StoreError, OSError) as exc:
                self._keep_old_outs(t)
                return self._finish(t, Outcome(t.name, "failed", duration, 0, log_path,
                                               str(exc), state.key), started, state)
        self._ran(t.name)
        self.lock.record(t.name, state.entry(t.cmd, outs), unsynced, unsynced_dirs)
        if p.remote is not None and t.cache:
            p.remote.upload(t.name, state.key, outs)
        return self._finish(t, Outcome(t.name, "ran", duration, 0, log_path, key=state.key,
                                       node=result.node), started, state, outs)

    def _store_uncached(self, t: Target) -> None:
        """Store the outs of an up-to-date target that the cache lacks (a run killed between
        the command and its store left them only in the work tree, where they match the
        lock): one stat per out, since a directory's manifest is stored last."""
        entry = self.lock.entries.get(t.name)
        if entry is None:
            return
        store = self.parts.store
        if all(out in t.metrics or store.has(rec.oid) for out, rec in entry.outs.items()):
            return
        outs, missing, entries_of = self.hash_outs(t)
        if missing or any(outs[o].hash != r.hash for o, r in entry.outs.items() if o in outs):
            return
        try:
            self.save(t, outs, entries_of)
        except (StoreError, OSError) as exc:
            self.parts.reporter.emit(ev.Notice(f"{t.name}: {exc}", "warning"))

    def _keep_old_outs(self, t: Target) -> None:
        """After the store refused a result (full disk, read-only cache), put back the outs
        its lock entry records, when the cache still has them."""
        entry = self.lock.entries.get(t.name)
        if entry is None:
            return
        store = self.parts.store
        for out, rec in entry.outs.items():
            try:
                if out in t.metrics:
                    store.export(rec, os.path.join(self.parts.pipeline.root, out))
                else:
                    store.restore(out, rec)
            except (StoreError, OSError):
                pass  # left as the command wrote it: stale against the lock, rebuilt next run

    def save(self, t: Target, outs: dict[str, OutRecord],
             entries_of: dict[str, list[Entry]], sync: bool = True) -> tuple[str, ...]:
        """Put a target's fresh outs into the store; cached outs are linked back read-only,
        metrics stay ordinary files (they are committed to Git). Not `sync`: file objects
        are not fsynced, and their paths are returned for the caller to fsync (directory
        outs are synced as a batch either way)."""
        store = self.parts.store
        for out, rec in outs.items():
            store.save_out(out, rec, entries_of.get(out), link=out not in t.metrics,
                           sync=sync or rec.is_dir)
        if sync:
            return ()
        return tuple(store.object_path(rec.hash) for rec in outs.values() if not rec.is_dir)

    def record(self, order: list[str], force: bool) -> list[str]:
        """Record the targets' current outs and deps as up to date without running them
        (`mlmake commit`); returns the targets whose lock entry changed. The caller writes
        the lock."""
        p = self.parts
        changed: list[str] = []
        for n in order:
            t = p.graph.targets[n]
            state = p.checker.state(t)
            if not state.stale and not force:
                continue
            if state.key is None:
                missing = [d for d, v in state.deps.items() if v is None]
                raise UsageError(f"cannot commit '{n}': its dep '{missing[0]}' is missing.")
            outs, _, entries_of = self.hash_outs(t)
            if t.cache:
                self.save(t, outs, entries_of)
                p.runcache.put(state.key, n, outs)
            self.lock.entries[n] = state.entry(t.cmd, outs)
            changed.append(n)
        return changed

    def hash_outs(self, t: Target) -> tuple[dict[str, OutRecord], list[str],
                                            dict[str, list[Entry]]]:
        """Hash every out of `t` as it is in the work tree; also list the missing ones and
        the manifests of directory outs."""
        outs: dict[str, OutRecord] = {}
        missing: list[str] = []
        entries_of: dict[str, list[Entry]] = {}
        hasher = self.parts.hasher
        for out in t.all_outs:
            full = os.path.join(self.parts.pipeline.root, out)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                missing.append(out)
                continue
            metric = out in t.metrics
            if stat_mod.S_ISDIR(st.st_mode):
                digest, entries = hasher.tree(out, manifest=True)
                entries_of[out] = entries
                size = sum(os.path.getsize(os.path.join(full, e.path)) for e in entries)
                outs[out] = OutRecord(digest, "dir", size=size, files=len(entries),
                                      metric=metric)
            else:
                outs[out] = OutRecord(hasher.file(out, st), "file", size=st.st_size,
                                      executable=bool(st.st_mode & 0o111), metric=metric)
        return outs, missing, entries_of

    def _finish(self, t: Target, outcome: Outcome, started: float, state: TargetState,
                outs: dict[str, OutRecord] | None = None) -> Outcome:
        p = self.parts
        rec = RunRecord(
            build=self.config.build_id, target=t.name, key=outcome.key,
            outcome=outcome.status, started=started, duration=outcome.duration,
            commit=self.config.commit, host=outcome.node or p.runs.host,
            executor=p.executor.name, exit_code=outcome.exit_code, log=outcome.log,
            source=outcome.source, message=outcome.message,
            outs=outs_json(outs) if outs is not None else None)
        with self._ran_mutex:
            self._records.append(rec)
            due = time.monotonic() - self._records_at >= 0.2
            batch, self._records = (self._records, []) if due else ([], self._records)
            if due:
                self._records_at = time.monotonic()
        if batch:  # (at most every 0.2 s: one statement for the targets of that time)
            p.runs.add_many(batch)
        p.reporter.emit(ev.TargetFinished(outcome))
        return outcome

    def flush(self) -> None:
        """Write the run records not written yet (the build's end, or its interruption)."""
        with self._ran_mutex:
            batch, self._records = self._records, []
        self.parts.runs.add_many(batch)
