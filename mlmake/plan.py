"""Which targets are stale and why: keys compared with the lock, reasons kept as data."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import os

from mlmake import params as params_mod
from mlmake.errors import StoreError
from mlmake.graph import Graph
from mlmake.hashing import Entry, Hasher, is_glob, target_key, tree_digest
from mlmake.lockfile import Lock, LockEntry
from mlmake.model import OutRecord, Pipeline, Reason, Target

# Reasons that a restore from the cache fixes: the target's key still matches its lock entry,
# only the work tree lost or changed its outs. Every other reason makes the target run.
RESTORE_KINDS = frozenset({"out-missing", "out-modified"})


@dataclass(frozen=True)
class TargetState:
    """A target's inputs as they are now, its key (None if a dep is missing) and reasons.

    `absent`: outs deliberately left out of the work tree (lean mode), which are neither
    stale nor present.
    """

    name: str
    key: str | None
    deps: dict[str, str | None]
    params: dict[str, Any]
    env: str | None
    reasons: tuple[Reason, ...] = ()
    absent: tuple[str, ...] = ()
    implicit: dict[str, str] = field(default_factory=dict)  # imported file → its importer

    @property
    def stale(self) -> bool:
        """Something must happen to this target: it runs, or its outs are restored."""
        return bool(self.reasons)

    @property
    def must_run(self) -> bool:
        """Its command must run (or its key be found in the run cache): a reason other than
        the work tree's copy of its outs."""
        return any(r.kind not in RESTORE_KINDS for r in self.reasons)

    def entry(self, cmd: str, outs: dict[str, OutRecord]) -> LockEntry:
        """The lock entry recording this state with the outs just produced."""
        assert self.key is not None
        return LockEntry(key=self.key, cmd=cmd, deps={k: v for k, v in self.deps.items()
                                                      if v is not None},
                         params=self.params, env=self.env, outs=outs)


@dataclass
class Plan:
    """The selected targets in build order with their state.

    `actions` (a dry run's prediction): target → "run", or "restore" with where from
    ("restore" for the local cache, "restore:NAME" for remote NAME).
    """

    order: list[str]
    states: dict[str, TargetState] = field(default_factory=dict)
    lean: bool = False
    actions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # imports that could not be followed
    data: list[Any] = field(default_factory=list)  # sources.DataChange: data not as recorded

    @property
    def stale(self) -> list[str]:
        return [n for n in self.order if self.states[n].stale]

    @property
    def to_run(self) -> list[str]:
        """Stale targets whose command must run (or whose key the run cache may hold)."""
        return [n for n in self.order if self.states[n].must_run]

    @property
    def to_restore(self) -> list[str]:
        """Targets whose key matches the lock but whose outs are missing or modified."""
        return [n for n in self.order if self.states[n].stale and not self.states[n].must_run]

    @property
    def not_materialized(self) -> dict[str, tuple[str, ...]]:
        """Lean mode: outs deliberately left out of the work tree, per target."""
        return {n: self.states[n].absent for n in self.order if self.states[n].absent}


class Checker:
    """Computes target states against the lock; shared by planning and by the scheduler."""

    def __init__(self, pipeline: Pipeline, graph: Graph, lock: Lock, hasher: Hasher,
                 store: Any = None, imports_cache: str | None = None) -> None:
        from mlmake.imports import Tracker

        self.pipeline = pipeline
        self.graph = graph
        self.lock = lock
        self.entries: dict[str, LockEntry] = lock.entries
        self.hasher = hasher
        self.store = store
        self.imports = Tracker(hasher.root, hasher.path, imports_cache)
        self._env_digests: dict[str, str] = {}
        self._implicit: dict[str, dict[str, str]] = {}

    def implicit(self, t: Target) -> dict[str, str]:
        """The project files `t`'s Python command imports and are not declared deps
        (file → the file importing it); {} with `track_imports = false`."""
        if not t.track_imports:
            return {}
        if t.name not in self._implicit:
            found = self.imports.implicit(t, self.pipeline.root)
            declared = set(t.deps)
            self._implicit[t.name] = {f: by for f, by in sorted(found.items())
                                      if f not in declared and not any(
                                          f.startswith(d + "/") for d in declared)}
        return self._implicit[t.name]

    def dep_hash(self, t: Target, dep: str) -> str | None:
        """A dep's hash; deps produced by other targets are hashed from their recorded outs
        (so an upstream's outs need not be in the work tree), the rest from the files."""
        producers = self.graph.dep_producers.get((t.name, dep))
        if producers and not is_glob(dep):
            try:
                virtual = self._virtual(dep, producers)
            except StoreError:
                virtual = _NO
            if virtual is not _NO:
                return virtual  # type: ignore[return-value]
        return self.hasher.dep(dep)

    def _virtual(self, dep: str, producers: set[str]) -> object:
        recs: dict[str, OutRecord] = {}
        for p in producers:
            lock_entry = self.entries.get(p)
            if lock_entry is None:
                return _NO
            recs.update(lock_entry.outs)
        if dep in recs:
            return recs[dep].hash
        for out, rec in recs.items():
            if dep.startswith(out + "/"):  # a dep inside a directory out
                listed = self._manifest(rec)
                if listed is None:
                    return _NO
                inner = dep[len(out) + 1:]
                for e in listed:
                    if e.path == inner:
                        return e.hash
                sub = [Entry(e.path[len(inner) + 1:], e.hash, e.executable) for e in listed
                       if e.path.startswith(inner + "/")]
                return tree_digest(sub) if sub else None
        inside = {o: r for o, r in recs.items() if o.startswith(dep + "/")}
        if not inside:
            return _NO
        entries: list[Entry] = []
        for o, r in inside.items():
            rel = o[len(dep) + 1:]
            if r.is_dir:
                m = self._manifest(r)
                if m is None:
                    return _NO
                entries += [Entry(f"{rel}/{e.path}", e.hash, e.executable) for e in m]
            else:
                entries.append(Entry(rel, r.hash, r.executable))
        full = os.path.join(self.hasher.root, dep)
        if os.path.isdir(full):
            for path, st in self.hasher._walk(dep):
                if any(path == o[len(dep) + 1:] or path.startswith(o[len(dep) + 1:] + "/")
                       for o in inside):
                    continue
                entries.append(Entry(path, self.hasher.file(f"{dep}/{path}", st),
                                     bool(st.st_mode & 0o111)))
        return tree_digest(entries)

    def _manifest(self, rec: OutRecord) -> list[Entry] | None:
        if not rec.is_dir or self.store is None:
            return None
        entries: list[Entry] | None = self.store.manifest(rec.hash)
        return entries

    def env_digest(self, name: str | None) -> str | None:
        if name is None:
            return None
        if name not in self._env_digests:
            from mlmake.envs import spec_digest  # only for a target that names an env

            self._env_digests[name] = spec_digest(self.pipeline.envs[name], self.hasher)
        return self._env_digests[name]

    def state(self, t: Target, force: bool = False, upstream: tuple[str, ...] = ()
              ) -> TargetState:
        """The target's state now: key from current inputs, reasons against its lock entry."""
        deps = {d: self.dep_hash(t, d) for d in t.deps}
        implicit = self.implicit(t)
        for f in implicit:
            h = self.hasher.path(f)
            if h is not None:
                deps[f] = h
        values = params_mod.select(self.pipeline.params, t.params)
        env = self.env_digest(t.env)
        key = None if any(v is None for v in deps.values()) else \
            target_key(t.cmd, t.wdir, deps, values, env, t.all_outs)  # type: ignore[arg-type]
        old = self.entries.get(t.name)
        reasons: list[Reason] = []
        if force:
            reasons.append(Reason("forced"))
        if t.always:
            reasons.append(Reason("always"))
        if old is None:
            reasons.append(Reason("new"))
            reasons += [Reason("dep", d, None, None) for d, v in deps.items() if v is None]
        elif key != old.key:
            reasons += _diff(t, old, deps, values, env, implicit)
            if len(reasons) == (force + t.always):
                reasons.append(Reason("cmd"))  # the key format changed: say something
        if old is not None:
            reasons += self.out_reasons(t, old)
        reasons += [Reason("upstream", u) for u in upstream]
        return TargetState(t.name, key, deps, values, env, tuple(reasons), implicit=implicit)

    def out_reasons(self, t: Target, old: LockEntry) -> list[Reason]:
        reasons = []
        for out in t.all_outs:
            rec = old.outs.get(out)
            now = self.hasher.path(out)
            if now is None:
                reasons.append(Reason("out-missing", out))
            elif rec is None or rec.hash != now:
                reasons.append(Reason("out-modified", out))
        return reasons

    def plan(self, names: set[str], force: bool | set[str] = False,
             requested: set[str] | None = None, lean: bool = False) -> Plan:
        """States of `names` in build order.

        A target that must run makes its dependents stale (`upstream`); one whose outs only
        need restoring does not, since its recorded outs, not the work tree's copies, define
        its dependents' keys. In `lean` mode a target that was not requested and whose outs
        are merely absent is not stale while no target that must run reads them (Bazel's
        build without the bytes): its outs are reported as `absent`, never as fresh.
        """
        order = self.graph.order(names)
        self.prefetch(order)
        plan = Plan(order, lean=lean)
        running: set[str] = set()
        for n in order:
            st = self.state(self.graph.targets[n], _forced(force, n))
            ups = tuple(sorted(u for u in self.graph.data_up[n] if u in running))
            if ups:
                st = replace(st, reasons=st.reasons + tuple(Reason("upstream", u) for u in ups))
            if st.must_run:
                running.add(n)
            plan.states[n] = st
        if lean:
            self._leave_out(plan, running, requested if requested is not None else set(names))
        seen: set[str] = set()
        for n in order:
            t = self.graph.targets[n]
            if t.track_imports:
                for line in self.imports.notes(t, self.pipeline.root):
                    if line not in seen:
                        seen.add(line)
                        plan.notes.append(line)
        return plan

    def _leave_out(self, plan: Plan, running: set[str], requested: set[str]) -> None:
        """Lean mode: drop the out-missing reasons of targets whose outs nothing needs."""
        needed = set(requested)
        for n in running:
            needed |= self.graph.data_up[n]
        for n in plan.order:
            st = plan.states[n]
            if n in needed or not st.reasons or st.must_run or self.graph.targets[n].metrics:
                continue
            if all(r.kind == "out-missing" for r in st.reasons):
                plan.states[n] = replace(st, reasons=(),
                                         absent=tuple(r.subject for r in st.reasons))

    def prefetch(self, order: list[str]) -> None:
        """Stat-sign every directory the check will hash (deps nobody produces and outs) in
        one pass before the targets are checked one by one."""
        paths: list[str] = []
        for n in order:
            t = self.graph.targets[n]
            paths += [d for d in t.deps if not is_glob(d)
                      and not self.graph.dep_producers.get((n, d))]
            paths += list(t.all_outs)
        self.hasher.prefetch(paths)

    def lookahead(self, names: set[str], requested: set[str], runcache: Any,
                  force: bool | set[str], lean: bool = False) -> Lookahead:
        """Predict, without running anything, which stale targets the run cache can serve and
        which must run. Every target's outs are `needed` in the work tree, except in `lean`
        mode, where only those asked for and those a target that must run reads are.
        Recorded outs stand in for unbuilt upstream outs."""
        saved = self.entries
        self.entries = dict(saved)
        try:
            order = self.graph.order(names)
            self.prefetch(order)
            states: dict[str, TargetState] = {}
            reusable: dict[str, dict[str, OutRecord]] = {}
            must_run: set[str] = set()
            for n in order:
                t = self.graph.targets[n]
                st = self.state(t, _forced(force, n))
                states[n] = st
                if any(u in must_run for u in self.graph.data_up[n]):
                    must_run.add(n)
                    continue
                if not st.stale:
                    continue
                recs = self.cached_outs(t, st, runcache, _forced(force, n))
                if recs is None:
                    must_run.add(n)
                else:
                    reusable[n] = recs
                    self.entries[n] = st.entry(t.cmd, recs)
            if lean:
                needed = set(requested)
                for n in must_run:
                    needed |= self.graph.data_up[n]
            else:
                needed = set(order)
            return Lookahead(states, reusable, must_run, needed)
        finally:
            self.entries = saved

    def cached_outs(self, t: Target, st: TargetState, runcache: Any,
                    force: bool) -> dict[str, OutRecord] | None:
        """Out records a stale target can be restored from: its lock entry when only its outs
        went missing or were edited, else its run-cache entry; either only when its objects
        can be had (so a prediction never leans on outputs that exist nowhere)."""
        if force or t.always or not t.cache or st.key is None or runcache is None:
            return None
        old = self.entries.get(t.name)
        if old is not None and old.key == st.key and set(old.outs) == set(t.all_outs) \
                and self.available(old.outs, runcache):
            return old.outs
        recs: dict[str, OutRecord] | None = runcache.get(st.key)
        if recs is not None and set(recs) == set(t.all_outs) and self.available(recs, runcache):
            return recs
        return None

    def available(self, recs: dict[str, OutRecord], runcache: Any) -> bool:
        """True when every object of `recs` is in the local store, or on the remote behind a
        layered run cache (one with `available`)."""
        check = getattr(runcache, "available", None)
        if check is not None:
            return bool(check(recs))
        if self.store is None:
            return True
        try:
            return not any(self.store.missing(r) for r in recs.values())
        except StoreError:
            return False


def _diff(t: Target, old: LockEntry, deps: dict[str, str | None], values: dict[str, Any],
          env: str | None, implicit: dict[str, str]) -> list[Reason]:
    reasons: list[Reason] = []
    if t.cmd != old.cmd and not _only_params_differ(t, old.cmd, old.params, values):
        reasons.append(Reason("cmd", t.cmd, old.cmd, t.cmd))
    if env != old.env:
        reasons.append(Reason("env", t.env or "", old.env, env))
    for k in sorted(set(values) | set(old.params)):
        if values.get(k, _UNSET) != old.params.get(k, _UNSET):
            reasons.append(Reason("param", k, old.params.get(k), values.get(k)))
    for d in t.deps:
        if deps[d] != old.deps.get(d):
            reasons.append(Reason("dep", d, old.deps.get(d), deps[d]))
    for f, by in implicit.items():
        if f in deps and deps[f] != old.deps.get(f):
            reasons.append(Reason("dep", f, old.deps.get(f), deps[f], via=by))
    for d in sorted(set(old.deps) - set(deps)):
        reasons.append(Reason("dep-removed", d))
    if set(t.all_outs) != set(old.outs):
        reasons.append(Reason("outs", ", ".join(sorted(set(t.all_outs) ^ set(old.outs)))))
    return reasons


def _only_params_differ(t: Target, old_cmd: str, old: dict[str, Any],
                        new: dict[str, Any]) -> bool:
    """True when the command differs from the recorded one only by changed param values
    put into it with `${}` (the param reason already says so): the Mlfile's cmd filled in
    with the recorded values gives the recorded command."""
    from mlmake.mlfile import fill, render_cmd

    if not t.cmd_source or not any(old[k] != new[k] for k in old.keys() & new.keys()):
        return False
    matrix = dict(t.matrix)

    def recorded(var: str) -> Any:
        return matrix[var] if var in matrix else old[var]

    try:
        return render_cmd(t.cmd_source, lambda text, quote: fill(text, recorded, quote)) \
            == old_cmd
    except KeyError:  # a `${}` the recorded params lack: the command did change
        return False


def _forced(force: bool | set[str], name: str) -> bool:
    """`force` is True (every target), False, or the set of targets forced (--force-only)."""
    return force if isinstance(force, bool) else name in force


_UNSET = object()
_NO = object()


@dataclass
class Lookahead:
    """The run cache's prediction for a build (see Checker.lookahead)."""

    states: dict[str, TargetState]
    reusable: dict[str, dict[str, OutRecord]]
    must_run: set[str]
    needed: set[str]
