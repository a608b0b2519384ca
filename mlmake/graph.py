"""The target DAG: edges inferred from paths plus `after`, selection and cycle detection."""

from __future__ import annotations

import fnmatch
import graphlib
import os
import posixpath
from dataclasses import dataclass, field
from collections.abc import Iterable

from mlmake.errors import CycleError, MissingInputError, UsageError, did_you_mean
from mlmake.hashing import is_glob
from mlmake.model import Pipeline, Target


def _ancestors(path: str) -> list[str]:
    out = []
    parent = posixpath.dirname(path)
    while parent:
        out.append(parent)
        parent = posixpath.dirname(parent)
    return out


def _segments(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _name_match(name: str, pat: str) -> bool:
    """One segment against one pattern segment; like glob.glob, magic skips hidden names."""
    if name.startswith(".") and not pat.startswith(".") and is_glob(pat):
        return False
    return fnmatch.fnmatchcase(name, pat)


def _seg_match(pat: list[str], path: list[str]) -> bool:
    """Glob match by path segments: `*?[...]` stay within a segment, `**` spans 0+ segments."""
    if not pat:
        return not path
    if pat[0] == "**":
        return any(_seg_match(pat[1:], path[i:]) for i in range(len(path) + 1)
                   if not any(p.startswith(".") for p in path[:i]))
    return bool(path) and _name_match(path[0], pat[0]) and _seg_match(pat[1:], path[1:])


def _seg_may_contain(pat: list[str], path: list[str]) -> bool:
    """True when some path strictly below `path` could match `pat`."""
    if not pat:
        return False
    if not path:
        return True
    if pat[0] == "**":
        return _seg_may_contain(pat[1:], path) or (
            not path[0].startswith(".") and _seg_may_contain(pat, path[1:]))
    return _name_match(path[0], pat[0]) and _seg_may_contain(pat[1:], path[1:])


def _glob_wants(pattern: str, out: str) -> bool:
    """Whether a glob dep needs the out: it matches it, may match inside it, or matches a
    directory that holds it."""
    pat, path = _segments(pattern), _segments(out)
    if _seg_match(pat, path) or _seg_may_contain(pat, path):
        return True
    return any(_seg_match(pat, path[:i]) for i in range(1, len(path)))


@dataclass
class Graph:
    """Targets with their upstream edges; `data_up` excludes order-only `after` edges."""

    targets: dict[str, Target]
    up: dict[str, set[str]] = field(default_factory=dict)
    data_up: dict[str, set[str]] = field(default_factory=dict)
    down: dict[str, set[str]] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    dep_producers: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def build(cls, pipeline: Pipeline) -> Graph:
        """Infer edges: a dep that equals, lies inside, or contains another target's out."""
        g = cls(targets=pipeline.targets, variants=pipeline.variants)
        under: dict[str, set[str]] = {}
        for t in pipeline.targets.values():
            for out in t.all_outs:
                g.producer[out] = t.name
                for a in _ancestors(out):
                    under.setdefault(a, set()).add(t.name)
        for t in pipeline.targets.values():
            data: set[str] = set()
            for dep in t.deps:
                found = g._producers(dep, under)
                found.discard(t.name)
                g.dep_producers[(t.name, dep)] = found
                data |= found
            g.data_up[t.name] = data
            g.up[t.name] = data | set(t.after)
        for name in pipeline.targets:
            g.down.setdefault(name, set())
        for name, ups in g.up.items():
            for u in ups:
                g.down[u].add(name)
        g.order()
        return g

    def _producers(self, dep: str, under: dict[str, set[str]]) -> set[str]:
        if is_glob(dep):
            return {name for out, name in self.producer.items() if _glob_wants(dep, out)}
        found = set()
        if dep in self.producer:
            found.add(self.producer[dep])
        for a in _ancestors(dep):
            if a in self.producer:
                found.add(self.producer[a])
        found |= under.get(dep, set())
        return found

    # -- queries ----------------------------------------------------------------------------
    def order(self, names: set[str] | None = None) -> list[str]:
        """Topological order (upstream first) of `names` (default: all); raises CycleError."""
        keep = set(self.targets) if names is None else names
        ts: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for n in self.targets:
            if n in keep:
                ts.add(n, *(u for u in self.up[n] if u in keep))
        try:
            return list(ts.static_order())
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])
            raise CycleError(cycle) from None

    def upstream_closure(self, names: set[str]) -> set[str]:
        """`names` and everything they (transitively) depend on."""
        seen: set[str] = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            stack.extend(self.up[n])
        return seen

    def downstream_closure(self, names: set[str]) -> set[str]:
        """`names` and everything that (transitively) depends on them."""
        seen: set[str] = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            stack.extend(self.down[n])
        return seen

    def roots(self) -> list[str]:
        """Targets nothing depends on (what a bare `mlmake` builds without [project] default)."""
        return [n for n in self.targets if not self.down[n]]

    def resolve(self, names: list[str] | tuple[str, ...], root: str) -> set[str]:
        """Target names, matrix bases, or out paths → target names; UsageError for unknown."""
        out: set[str] = set()
        for raw in names:
            name = raw
            if name in self.variants:
                out.update(self.variants[name])
                continue
            if name in self.targets:
                out.add(name)
                continue
            rel = posixpath.normpath(os.path.relpath(os.path.abspath(name), root)) \
                if os.path.isabs(name) else posixpath.normpath(name.rstrip("/") or name)
            owner = self.producer.get(rel)
            if owner is None:
                for a in _ancestors(rel):
                    owner = self.producer.get(a)
                    if owner:
                        break
            if owner is not None:
                out.add(owner)
                continue
            choices = list(self.variants) + list(self.targets)
            hint = did_you_mean(name, choices) or \
                f" Known targets: {', '.join(list(self.variants)[:12])}."
            raise UsageError(f"no target named '{name}' and no target produces it.{hint}")
        return out

    def check_inputs(self, names: set[str], root: str, mlfile: str,
                     tracked: Iterable[str] = ()) -> None:
        """Every dep of `names` that no target produces must exist, unless it lies in a
        `tracked` data source (which a build links from the cache); else MissingInputError."""
        tracked = tuple(tracked)
        for n in self.order(names):
            t = self.targets[n]
            for dep in t.deps:
                if self.dep_producers.get((n, dep)):
                    continue
                if any(dep == s or dep.startswith(s + "/") for s in tracked):
                    continue
                if is_glob(dep):
                    import glob as globmod

                    if any(True for _ in globmod.iglob(dep, root_dir=root, recursive=True)):
                        continue
                elif os.path.exists(os.path.join(root, dep)):
                    continue
                raise MissingInputError(t.base, dep, mlfile, t.line)
