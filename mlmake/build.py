"""One build: for each ready target, re-check it, run it (or skip it) and record the result."""

from __future__ import annotations

import os
import stat as stat_mod
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from mlmake import events as ev
from mlmake.executors.base import Executor, Job
from mlmake.graph import Graph
from mlmake.hashing import Entry, Hasher
from mlmake.lockfile import Lock, LockChangedError
from mlmake.errors import RemoteError, StoreError, UsageError
from mlmake.model import Outcome, Pipeline, Target
from mlmake.plan import Checker, Lookahead, TargetState
from mlmake.runcache import RunCache
from mlmake.runs import RunRecord, RunStore
from mlmake.store import MANIFEST_SUFFIX, MissingObjectError, Store, remove_path


@dataclass
class BuildContext:
    """Everything a build shares between its worker threads."""

    build_id: str
    pipeline: Pipeline
    graph: Graph
    lock: Lock
    checker: Checker
    hasher: Hasher
    executor: Executor
    reporter: ev.Reporter
    runs: RunStore
    log_dir: str
    commit: str | None
    store: Store
    runcache: RunCache
    lookahead: Lookahead | None = None
    forced: set[str] = field(default_factory=set)
    estimates: dict[str, float] = field(default_factory=dict)
    keys_dir: str | None = None  # shared .mlmake/keys/: one builder per target key at once
    state_dir: str | None = None  # the .mlmake/ whose envs/ holds the venvs (shared too)
    remote: Any = None  # a sync.BuildRemote: remote lookups, downloads, uploads (or None)
    mutex: threading.Lock = field(default_factory=threading.Lock)
    lock_interval: float = 0.2
    lock_conflict: Exception | None = None
    _lock_saved: float = 0.0
    _lock_dirty: bool = False

    def save_lock(self, force: bool = False) -> None:
        """Write Mlfile.lock (call with `mutex` held): at once when forced, else at most every
        `lock_interval` seconds so a build of many quick targets does not spend its time
        rewriting the lock. Results written since are safe in the run cache and the final
        write (also on interrupt) records them."""
        self._lock_dirty = True
        now = time.monotonic()
        if self.lock_conflict is None and (force or now - self._lock_saved >= self.lock_interval):
            try:
                self.lock.write(set(self.pipeline.targets))
            except LockChangedError as exc:
                self.lock_conflict = exc
                self.reporter.emit(ev.Notice(str(exc), "warning"))
            self._lock_saved = now
            self._lock_dirty = False

    def flush_lock(self) -> None:
        with self.mutex:
            if self._lock_dirty:
                self.save_lock(force=True)
    ran: set[str] = field(default_factory=set)


class Builder:
    """The per-target work the scheduler calls from its worker threads."""

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        self._claims: dict[str, Any] = {}
        os.makedirs(ctx.log_dir, exist_ok=True)

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
        ctx = self.ctx
        if not ctx.keys_dir or not t.cache or forced or t.always or state.key is None:
            return False
        from mlmake.keylock import KeyClaim

        claim = KeyClaim(ctx.keys_dir, state.key)
        self._claims[t.name] = claim
        return claim.acquire(lambda: ctx.reporter.emit(ev.Notice(
            f"{t.name}: another build is running the same key; waiting for its result")))

    def _work(self, name: str, gpus: tuple[str, ...]) -> Outcome:
        ctx = self.ctx
        t = ctx.graph.targets[name]
        started = time.time()
        forced = name in ctx.forced
        la = ctx.lookahead
        if la is not None and name in la.states and not (ctx.graph.data_up[name] & ctx.ran):
            state = la.states[name]  # nothing upstream ran since the lookahead hashed it
        else:
            state = ctx.checker.state(t, force=forced)
        needed = la is None or name in la.needed
        if not state.stale or (not needed and all(r.kind == "out-missing"
                                                  for r in state.reasons)):
            if not state.stale and t.cache:
                self._store_uncached(t)
            outcome = Outcome(name, "uptodate", key=state.key,
                              message="" if needed or not state.stale else "not materialized")
            ctx.reporter.emit(ev.TargetFinished(outcome))
            return outcome
        if state.key is None:
            missing = [d for d, v in state.deps.items() if v is None]
            return self._finish(t, Outcome(name, "failed", key=None, message=(
                f"dep '{missing[0]}' is missing after its upstream ran; check that the "
                "upstream target writes it")), started, state)
        foreseen = la is not None and state is la.states.get(name) and name in la.reusable
        if foreseen:
            recs = la.reusable[name]  # the lookahead found them with these very inputs
        else:
            recs = ctx.checker.cached_outs(t, state, ctx.runcache, forced)
        if recs is None and self._claim(t, state, forced):
            recs = ctx.checker.cached_outs(t, state, ctx.runcache, forced)  # built meanwhile
        if recs is not None:
            try:
                outcome = self.reuse(t, state, recs, materialize=needed, started=started)
            except (StoreError, RemoteError) as exc:
                if not (ctx.remote is not None and isinstance(exc, MissingObjectError)):
                    ctx.reporter.emit(ev.Notice(f"{t.name}: {exc} Running it instead.",
                                                "warning"))  # (the remote lacks it: quiet)
            else:
                if not foreseen:  # (another build's result): downstream states are re-read
                    with ctx.mutex:
                        ctx.ran.add(name)
                return outcome
        try:
            self.materialize_inputs(t)
        except (StoreError, RemoteError) as exc:
            return self._finish(t, Outcome(name, "failed", key=state.key,
                                           message=str(exc)), started, state)
        return self.execute(t, state, gpus, started)

    def reuse(self, t: Target, state: TargetState, recs: dict[str, dict[str, Any]],
              materialize: bool, started: float) -> Outcome:
        """Restore a target's outs from the store (or only record them when nothing needs
        them in the work tree) instead of running it."""
        ctx = self.ctx
        root = ctx.pipeline.root
        source = ctx.remote.source(state.key) if ctx.remote is not None else "local"
        old = ctx.lock.entries.get(t.name)
        restored = old is not None and old.key == state.key and old.outs == recs
        if materialize:
            if ctx.remote is not None and ctx.remote.fetch({o: recs[o] for o in t.all_outs}):
                source = ctx.remote.name
            for out in t.all_outs:
                for oid in ctx.store.missing(recs[out]):
                    raise MissingObjectError(oid, out)
            for out in t.all_outs:
                rec = recs[out]
                now = ctx.hasher.path(out)
                if now == rec["hash"]:
                    continue
                self.keep_edit(t, out, now)
                if out in t.metrics:
                    ctx.store.export(rec, os.path.join(root, out))
                else:
                    ctx.store.restore(out, rec)
        else:  # lean: an out nothing needs is absent, never left holding other bytes
            for out in t.all_outs:
                now = ctx.hasher.path(out)
                if now is not None and now != recs[out]["hash"]:
                    self.keep_edit(t, out, now)
                    remove_path(os.path.join(root, out))
        with ctx.mutex:
            ctx.lock.entries[t.name] = state.entry(t.cmd, recs)
            ctx.save_lock()
        if ctx.remote is not None and materialize:
            ctx.remote.adopt(state.key)
            if source == "local" and t.cache:
                ctx.remote.upload(t.name, state.key, recs)
        message = "not materialized" if not materialize else "restored" if restored else ""
        return self._finish(t, Outcome(t.name, "reused", key=state.key, source=source,
                                       message=message), started, state, recs)

    def keep_edit(self, t: Target, out: str, now: str | None) -> None:
        """Before an out whose content is `now` is replaced, put that content into the cache
        unless it is there already, so an edit by hand is never lost, and say where it is."""
        ctx = self.ctx
        if now is None or ctx.store.has(now) or ctx.store.has(now + MANIFEST_SUFFIX):
            return
        ctx.store.keep(out)
        if out in t.metrics:
            return  # committed to Git, which shows the difference; the copy is kept quietly
        ctx.reporter.emit(ev.Notice(
            f"{t.name}: '{out}' was modified in the work tree; the recorded version replaces "
            f"it, and yours is kept in the cache until `mlmake gc`: `mlmake get --object "
            f"{now} -o FILE` writes it out.", "warning"))

    def materialize_inputs(self, t: Target) -> None:
        """Restore any upstream out this target reads that is not in the work tree."""
        ctx = self.ctx
        for u in ctx.graph.data_up[t.name]:
            entry = ctx.lock.entries.get(u)
            if entry is None:
                continue
            ut = ctx.graph.targets[u]
            for out, rec in entry.outs.items():
                now = ctx.hasher.path(out)
                if out in ut.metrics or now == rec["hash"]:
                    continue
                if ctx.remote is not None:
                    ctx.remote.fetch({out: rec})
                self.keep_edit(ut, out, now)
                ctx.store.restore(out, rec)

    def execute(self, t: Target, state: TargetState, gpus: tuple[str, ...],
                started: float) -> Outcome:
        ctx = self.ctx
        if not t.persist:
            for out in t.all_outs:
                remove_path(os.path.join(ctx.pipeline.root, out))
        else:
            for out in t.all_outs:
                if os.path.exists(os.path.join(ctx.pipeline.root, out)):
                    ctx.store.unprotect(out)
        for out in t.all_outs:
            os.makedirs(os.path.dirname(os.path.join(ctx.pipeline.root, out)) or ".",
                        exist_ok=True)
        log_path = os.path.join(ctx.log_dir, f"{t.name}.log")
        ctx.reporter.emit(ev.TargetStarted(t.name, state.reasons, ctx.estimates.get(t.name)))
        # the modules it imports travel with it to a node without the project's files
        job_target = replace(t, deps=t.deps + tuple(state.implicit)) if state.implicit else t
        job = Job(target=job_target, root=ctx.pipeline.root, log_path=log_path, gpus=gpus,
                  env={"MLMAKE_TARGET": t.name, "MLMAKE_ROOT": ctx.pipeline.root},
                  env_spec=ctx.pipeline.envs.get(t.env) if t.env else None,
                  env_digest=state.env, state_dir=ctx.state_dir)
        t0 = time.monotonic()
        result = ctx.executor.run(job, lambda line: ctx.reporter.emit(
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
        if t.cache:  # crash order: objects, then links, run cache, lock entry, run record
            try:
                self.save(t, outs, entries_of)
                ctx.runcache.put(state.key, t.name, outs)  # type: ignore[arg-type]
            except (StoreError, OSError) as exc:
                self._keep_old_outs(t)
                return self._finish(t, Outcome(t.name, "failed", duration, 0, log_path,
                                               str(exc), state.key), started, state)
        with ctx.mutex:
            ctx.ran.add(t.name)
            ctx.lock.entries[t.name] = state.entry(t.cmd, outs)
            ctx.save_lock()
        if ctx.remote is not None and t.cache:
            ctx.remote.upload(t.name, state.key, outs)
        return self._finish(t, Outcome(t.name, "ran", duration, 0, log_path, key=state.key,
                                       node=result.node), started, state, outs)

    def _store_uncached(self, t: Target) -> None:
        """Store the outs of an up-to-date target that the cache lacks (a run killed between
        the command and its store left them only in the work tree, where they match the
        lock): one stat per out, since a directory's manifest is stored last."""
        ctx = self.ctx
        entry = ctx.lock.entries.get(t.name)
        if entry is None:
            return
        store = ctx.store
        if all(out in t.metrics or store.has(rec["hash"] + (
                ".dir" if rec.get("type") == "dir" else "")) for out, rec in entry.outs.items()):
            return
        outs, missing, entries_of = self.hash_outs(t)
        if missing or any(outs[o]["hash"] != r["hash"] for o, r in entry.outs.items()
                          if o in outs):
            return
        try:
            self.save(t, outs, entries_of)
        except (StoreError, OSError) as exc:
            ctx.reporter.emit(ev.Notice(f"{t.name}: {exc}", "warning"))

    def _keep_old_outs(self, t: Target) -> None:
        """After the store refused a result (full disk, read-only cache), put back the outs
        its lock entry records, when the cache still has them."""
        ctx = self.ctx
        entry = ctx.lock.entries.get(t.name)
        if entry is None:
            return
        for out, rec in entry.outs.items():
            try:
                if out in t.metrics:
                    ctx.store.export(rec, os.path.join(ctx.pipeline.root, out))
                else:
                    ctx.store.restore(out, rec)
            except (StoreError, OSError):
                pass  # left as the command wrote it: stale against the lock, rebuilt next run

    def save(self, t: Target, outs: dict[str, dict[str, Any]],
             entries_of: dict[str, list[Entry]]) -> None:
        """Put a target's fresh outs into the store; cached outs are linked back read-only,
        metrics stay ordinary files (they are committed to Git)."""
        ctx = self.ctx
        for out, rec in outs.items():
            ctx.store.save_out(out, rec, entries_of.get(out), link=out not in t.metrics)

    def record(self, order: list[str], force: bool) -> list[str]:
        """Record the targets' current outs and deps as up to date without running them
        (`mlmake commit`); returns the targets whose lock entry changed."""
        ctx = self.ctx
        changed: list[str] = []
        for n in order:
            t = ctx.graph.targets[n]
            state = ctx.checker.state(t)
            if not state.stale and not force:
                continue
            if state.key is None:
                missing = [d for d, v in state.deps.items() if v is None]
                raise UsageError(f"cannot commit '{n}': its dep '{missing[0]}' is missing.")
            outs, _, entries_of = self.hash_outs(t)
            if t.cache:
                self.save(t, outs, entries_of)
                ctx.runcache.put(state.key, n, outs)
            ctx.lock.entries[n] = state.entry(t.cmd, outs)
            changed.append(n)
        return changed

    def hash_outs(self, t: Target) -> tuple[dict[str, dict[str, Any]], list[str],
                                            dict[str, list[Entry]]]:
        """Hash every out of `t` as it is in the work tree; also list the missing ones and
        the manifests of directory outs."""
        outs: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        entries_of: dict[str, list[Entry]] = {}
        for out in t.all_outs:
            full = os.path.join(self.ctx.pipeline.root, out)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                missing.append(out)
                continue
            if stat_mod.S_ISDIR(st.st_mode):
                digest, entries = self.ctx.hasher.tree(out, manifest=True)
                entries_of[out] = entries
                size = sum(os.path.getsize(os.path.join(full, e.path)) for e in entries)
                outs[out] = {"hash": digest, "type": "dir", "files": len(entries),
                             "size": size}
            else:
                outs[out] = {"hash": self.ctx.hasher.file(out, st), "type": "file",
                             "size": st.st_size}
                if st.st_mode & 0o111:
                    outs[out]["exec"] = True
            if out in t.metrics:
                outs[out]["metric"] = True
        return outs, missing, entries_of

    def _finish(self, t: Target, outcome: Outcome, started: float, state: TargetState,
                outs: dict[str, dict[str, Any]] | None = None) -> Outcome:
        ctx = self.ctx
        ctx.runs.add(RunRecord(
            build=ctx.build_id, target=t.name, key=outcome.key, outcome=outcome.status,
            started=started, duration=outcome.duration, commit=ctx.commit,
            host=outcome.node or ctx.runs.host, executor=ctx.executor.name, exit_code=outcome.exit_code,
            log=outcome.log, source=outcome.source, message=outcome.message, outs=outs))
        ctx.reporter.emit(ev.TargetFinished(outcome))
        return outcome
