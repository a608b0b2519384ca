"""Which targets are stale and why: keys compared with the lock, reasons kept as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlmake import params as params_mod
from mlmake.envs import spec_digest
from mlmake.graph import Graph
from mlmake.hashing import Hasher, target_key
from mlmake.lockfile import Lock, LockEntry
from mlmake.model import Pipeline, Reason, Target


@dataclass(frozen=True)
class TargetState:
    """A target's inputs as they are now, its key (None if a dep is missing) and reasons."""

    name: str
    key: str | None
    deps: dict[str, str | None]
    params: dict[str, Any]
    env: str | None
    reasons: tuple[Reason, ...] = ()

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    def entry(self, cmd: str, outs: dict[str, dict[str, Any]]) -> LockEntry:
        """The lock entry recording this state with the outs just produced."""
        assert self.key is not None
        return LockEntry(key=self.key, cmd=cmd, deps={k: v for k, v in self.deps.items()
                                                      if v is not None},
                         params=self.params, env=self.env, outs=outs)


@dataclass
class Plan:
    """The selected targets in build order with their state."""

    order: list[str]
    states: dict[str, TargetState] = field(default_factory=dict)

    @property
    def stale(self) -> list[str]:
        return [n for n in self.order if self.states[n].stale]


class Checker:
    """Computes target states against the lock; shared by planning and by the scheduler."""

    def __init__(self, pipeline: Pipeline, graph: Graph, lock: Lock, hasher: Hasher) -> None:
        self.pipeline = pipeline
        self.graph = graph
        self.lock = lock
        self.hasher = hasher
        self._env_digests: dict[str, str] = {}

    def env_digest(self, name: str | None) -> str | None:
        if name is None:
            return None
        if name not in self._env_digests:
            self._env_digests[name] = spec_digest(self.pipeline.envs[name], self.hasher)
        return self._env_digests[name]

    def state(self, t: Target, force: bool = False, upstream: tuple[str, ...] = ()
              ) -> TargetState:
        """The target's state now: key from current inputs, reasons against its lock entry."""
        deps = {d: self.hasher.dep(d) for d in t.deps}
        values = params_mod.select(self.pipeline.params, t.params)
        env = self.env_digest(t.env)
        key = None if any(v is None for v in deps.values()) else \
            target_key(t.cmd, t.wdir, deps, values, env, t.all_outs)  # type: ignore[arg-type]
        old = self.lock.entries.get(t.name)
        reasons: list[Reason] = []
        if force:
            reasons.append(Reason("forced"))
        if t.always:
            reasons.append(Reason("always"))
        if old is None:
            reasons.append(Reason("new"))
            reasons += [Reason("dep", d, None, None) for d, v in deps.items() if v is None]
        elif key != old.key:
            reasons += _diff(t, old, deps, values, env)
            if len(reasons) == (force + t.always):
                reasons.append(Reason("cmd"))  # the key format changed: say something
        if old is not None:
            reasons += self.out_reasons(t, old)
        reasons += [Reason("upstream", u) for u in upstream]
        return TargetState(t.name, key, deps, values, env, tuple(reasons))

    def out_reasons(self, t: Target, old: LockEntry) -> list[Reason]:
        reasons = []
        for out in t.all_outs:
            rec = old.outs.get(out)
            now = self.hasher.path(out)
            if now is None:
                reasons.append(Reason("out-missing", out))
            elif rec is None or rec.get("hash") != now:
                reasons.append(Reason("out-modified", out))
        return reasons

    def plan(self, names: set[str], force: bool = False) -> Plan:
        """States of `names` in build order; stale upstreams make their dependents stale."""
        order = self.graph.order(names)
        plan = Plan(order)
        for n in order:
            t = self.graph.targets[n]
            ups = tuple(sorted(u for u in self.graph.data_up[n]
                               if u in plan.states and plan.states[u].stale))
            plan.states[n] = self.state(t, force, ups)
        return plan


def _diff(t: Target, old: LockEntry, deps: dict[str, str | None], values: dict[str, Any],
          env: str | None) -> list[Reason]:
    reasons: list[Reason] = []
    if t.cmd != old.cmd:
        reasons.append(Reason("cmd", t.cmd, old.cmd, t.cmd))
    if env != old.env:
        reasons.append(Reason("env", t.env or "", old.env, env))
    for k in sorted(set(values) | set(old.params)):
        if values.get(k, _UNSET) != old.params.get(k, _UNSET):
            reasons.append(Reason("param", k, old.params.get(k), values.get(k)))
    for d in t.deps:
        if deps[d] != old.deps.get(d):
            reasons.append(Reason("dep", d, old.deps.get(d), deps[d]))
    for d in sorted(set(old.deps) - set(t.deps)):
        reasons.append(Reason("dep-removed", d))
    if set(t.all_outs) != set(old.outs):
        reasons.append(Reason("outs", ", ".join(sorted(set(t.all_outs) ^ set(old.outs)))))
    return reasons


_UNSET = object()
