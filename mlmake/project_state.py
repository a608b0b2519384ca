"""ProjectState: where a project's files are and the engine pieces over them (pipeline,
graph, store, run cache, run records, remote, the project lock), the base of `Project`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake import mlfile as mlfile_mod
from mlmake.errors import BusyError, MlfileError, MlmakeError
from mlmake.graph import Graph
from mlmake.hashing import Hasher, StatCache
from mlmake.lockfile import Lock
from mlmake.plan import Checker, Plan

# What only some commands use is imported where it is used, so that `status`, `graph` or
# `runs` load none of it (tests/unit/test_imports_cost.py holds the line).
if TYPE_CHECKING:
    from mlmake import events as ev
    from mlmake.executors.base import Executor
    from mlmake.model import Outcome, Pipeline
    from mlmake.remote import Remote
    from mlmake.runcache import RunCache
    from mlmake.runs import RunStore
    from mlmake.store import Store

MLFILE = "Mlfile"
STATE_DIR = ".mlmake"


@dataclass
class BuildResult:
    """What `Project.run` returns: outcomes per target and the summary (or a dry-run plan)."""

    build_id: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    summary: ev.Summary = field(default_factory=lambda: _events().Summary())
    plan: Plan | None = None

    @property
    def ok(self) -> bool:
        return self.summary.failed == 0 and self.summary.blocked == 0 \
            and not self.summary.interrupted


def _events() -> Any:
    from mlmake import events

    return events


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


class ProjectState:
    """What every part of `Project` stands on: the Mlfile, its lock and the state directory
    beside them, and the engine pieces built from them on first use."""

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

    def _lean(self, lean: bool | None) -> bool:
        return self.pipeline.lean if lean is None else lean

    def _checker(self, lock: Lock | None = None) -> Checker:
        stats = StatCache(self.state_path("statcache"))
        hasher = Hasher(self.root, stats)
        return Checker(self.pipeline, self.graph, lock or Lock.read(self.lock_path), hasher,
                       self.store(stats), self.state_path("imports.json"))

    def store(self, stats: StatCache | None = None) -> Store:
        """The local object store (outs linked into this project's work tree)."""
        from mlmake.store import Store

        return Store(self.shared_path("cache"), self.root,
                     stats or StatCache(self.state_path("statcache")), self.pipeline.link)

    @property
    def runcache(self) -> RunCache:
        from mlmake.runcache import RunCache

        return RunCache(self.shared_path("runcache"))

    @property
    def runs_store(self) -> RunStore:
        from mlmake.runs import RunStore

        return RunStore(self.shared_path("runs.db"))

    def source_paths(self) -> list[str]:
        """The paths of the data sources this checkout's lock records."""
        try:
            return self._source_paths(Lock.read(self.lock_path))
        except MlmakeError:
            return []

    @staticmethod
    def _source_paths(lock: Lock) -> list[str]:
        """`source_paths` of a lock already read."""
        if not lock.sources:
            return []
        from mlmake import sources

        return sources.paths(lock)

    def remote(self, name: str | None = None, jobs: int | None = None,
               quick: bool = False) -> Remote | None:
        """The remote `name` (default: .mlmake/config.toml's, else [project] remote, else the
        only one defined) with this clone's overrides applied; None when none is defined."""
        from mlmake import config as user_config

        config = user_config.read_config(os.path.join(self.shared_state or self.state_dir,
                                                      user_config.CONFIG))
        spec = user_config.choose(self.pipeline, config, name)
        if spec is None:
            return None
        from mlmake.remote import Remote

        return Remote(spec.name, spec.url, spec.options, root=self.root, jobs=jobs,
                      quick=quick, index_dir=os.path.join(self.shared_state or self.state_dir,
                                                          "remote-packs"))

    # -- the project lock -------------------------------------------------------------------
    @contextmanager
    def _project_lock(self, wait: bool, reporter: ev.Reporter | None = None
                      ) -> Iterator[None]:
        """Hold .mlmake/run.lock (one writer of the work tree and cache at a time) and clean
        up after a run that was killed; `reporter` hears of the wait and the clean-up."""
        from mlmake import recovery
        from mlmake.filelock import file_lock, holder

        def notice(message: str, level: str = "info") -> None:
            if reporter is not None:
                from mlmake import events as ev

                reporter.emit(ev.Notice(message, level))

        path = self.state_path("run.lock")
        with file_lock(path, wait, record_pid=True, on_wait=lambda pid: notice(
                f"waiting for another mlmake run (pid {pid}) to finish…")) as got:
            if not got:
                raise BusyError(f"another mlmake run (pid {holder(path)}) is building this "
                                "project; wait for it or drop --no-wait.")
            with recovery.session(self.state_dir, self.shared_path(), self.root,
                                  self._all_outs(), lambda m: notice(m, "warning")):
                yield

    def _all_outs(self) -> list[str]:
        try:
            return [o for t in self.pipeline.targets.values() for o in t.all_outs]
        except MlmakeError:
            return []

    def _update_gitignore(self, lock: Lock | None = None) -> None:
        """Keep the cached outs and data sources out of Git (`lock`: the lock as this
        process holds it, when it has one)."""
        from mlmake import gitignore

        outs = [o for t in self.pipeline.targets.values() for o in t.cached_outs]
        sources = self.source_paths() if lock is None else self._source_paths(lock)
        gitignore.update(self.root, outs + sources)
