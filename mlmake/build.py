"""One build: for each ready target, re-check it, run it (or skip it) and record the result."""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mlmake import events as ev
from mlmake.executors.base import Executor, Job
from mlmake.graph import Graph
from mlmake.hashing import Hasher
from mlmake.lockfile import Lock
from mlmake.model import Outcome, Pipeline, Target
from mlmake.plan import Checker, TargetState
from mlmake.runs import RunRecord, RunStore


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
    forced: set[str] = field(default_factory=set)
    estimates: dict[str, float] = field(default_factory=dict)
    mutex: threading.Lock = field(default_factory=threading.Lock)


class Builder:
    """The per-target work the scheduler calls from its worker threads."""

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        os.makedirs(ctx.log_dir, exist_ok=True)

    def work(self, name: str, gpus: tuple[str, ...]) -> Outcome:
        ctx = self.ctx
        t = ctx.graph.targets[name]
        started = time.time()
        state = ctx.checker.state(t, force=name in ctx.forced)
        if not state.stale:
            outcome = Outcome(name, "uptodate", key=state.key)
            ctx.reporter.emit(ev.TargetFinished(outcome))
            return outcome
        if state.key is None:
            missing = [d for d, v in state.deps.items() if v is None]
            return self._finish(t, Outcome(name, "failed", key=None, message=(
                f"dep '{missing[0]}' is missing after its upstream ran; check that the "
                "upstream target writes it")), started, state)
        return self.execute(t, state, gpus, started)

    def execute(self, t: Target, state: TargetState, gpus: tuple[str, ...],
                started: float) -> Outcome:
        ctx = self.ctx
        if not t.persist:
            for out in t.all_outs:
                _remove(os.path.join(ctx.pipeline.root, out))
        for out in t.all_outs:
            os.makedirs(os.path.dirname(os.path.join(ctx.pipeline.root, out)) or ".",
                        exist_ok=True)
        log_path = os.path.join(ctx.log_dir, f"{t.name}.log")
        ctx.reporter.emit(ev.TargetStarted(t.name, state.reasons, ctx.estimates.get(t.name)))
        job = Job(target=t, root=ctx.pipeline.root, log_path=log_path, gpus=gpus,
                  env={"MLMAKE_TARGET": t.name, "MLMAKE_ROOT": ctx.pipeline.root})
        t0 = time.monotonic()
        result = ctx.executor.run(job, lambda line: ctx.reporter.emit(
            ev.TargetOutput(t.name, line)))
        duration = time.monotonic() - t0
        if result.exit_code != 0:
            return self._finish(t, Outcome(t.name, "failed", duration, result.exit_code,
                                           log_path, result.message, state.key),
                                started, state)
        outs, missing = self.hash_outs(t)
        if missing:
            return self._finish(t, Outcome(
                t.name, "failed", duration, 0, log_path,
                f"the command succeeded but did not write '{missing[0]}'; fix the command or "
                "the target's outs", state.key), started, state)
        with ctx.mutex:
            ctx.lock.entries[t.name] = state.entry(t.cmd, outs)
            ctx.lock.write(set(ctx.pipeline.targets))
        return self._finish(t, Outcome(t.name, "ran", duration, 0, log_path, key=state.key),
                            started, state, outs)

    def hash_outs(self, t: Target) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Hash every out of `t` as it is in the work tree; also list the missing ones."""
        outs: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for out in t.all_outs:
            full = os.path.join(self.ctx.pipeline.root, out)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                missing.append(out)
                continue
            if stat_mod.S_ISDIR(st.st_mode):
                digest, entries = self.ctx.hasher.tree(out, manifest=True)
                size = sum(os.path.getsize(os.path.join(full, e.path)) for e in entries)
                outs[out] = {"hash": digest, "type": "dir", "files": len(entries),
                             "size": size}
            else:
                outs[out] = {"hash": self.ctx.hasher.file(out, st), "type": "file",
                             "size": st.st_size}
        return outs, missing

    def _finish(self, t: Target, outcome: Outcome, started: float, state: TargetState,
                outs: dict[str, dict[str, Any]] | None = None) -> Outcome:
        ctx = self.ctx
        ctx.runs.add(RunRecord(
            build=ctx.build_id, target=t.name, key=outcome.key, outcome=outcome.status,
            started=started, duration=outcome.duration, commit=ctx.commit,
            host=ctx.runs.host, executor=ctx.executor.name, exit_code=outcome.exit_code,
            log=outcome.log, source=outcome.source, message=outcome.message, outs=outs))
        ctx.reporter.emit(ev.TargetFinished(outcome))
        return outcome


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat_mod.S_ISDIR(st.st_mode):
        shutil.rmtree(path, onerror=_force_writable)
    else:
        os.unlink(path)


def _force_writable(func: Any, path: str, _exc: Any) -> None:
    os.chmod(os.path.dirname(path), 0o755)
    func(path)
