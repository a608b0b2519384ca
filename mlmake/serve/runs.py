"""Triggered runs in the service: requests queued and built up to `jobs` at once (each by
`Project.build_at`, in its own worktree), and their progress fanned out as events."""

from __future__ import annotations

import sqlite3
import sys
import threading
import traceback
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from mlmake import events as ev
from mlmake.errors import MlmakeError, UsageError

if TYPE_CHECKING:
    from mlmake.project import Project, Request


class BadRequest(UsageError):
    """A request the service cannot take: an unknown endpoint or run (404), a param, value,
    rev or body the endpoint does not accept (400), or a stopping service (503). `detail`
    names what was wrong, for the JSON body."""

    def __init__(self, message: str, status: int = 400, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail

    @classmethod
    def rejected(cls, exc: UsageError) -> BadRequest:
        """The answer to a trigger that Project refused (mlmake.trigger.Rejected carries
        its status and detail; any other UsageError is a 400)."""
        return cls(exc.message, getattr(exc, "status", 400), **getattr(exc, "detail", {}))


# -- events ------------------------------------------------------------------------------------
class Hub:
    """Fans run and target events out to subscribers (the server-sent event streams).

    `publish` is called from build threads; callbacks must be quick and thread-safe.
    """

    def __init__(self) -> None:
        self._subs: dict[int, Callable[[str, dict[str, Any]], None]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def subscribe(self, callback: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """Register `callback(kind, data)`; returns the function that unsubscribes it."""
        with self._lock:
            self._next += 1
            n = self._next
            self._subs[n] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subs.pop(n, None)
        return unsubscribe

    @property
    def listening(self) -> bool:
        return bool(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs.values())
        for cb in subs:
            cb(kind, data)


@dataclass
class Active:
    """A run this process is building: its worktree project (to cancel it) and the targets
    executing right now."""

    request: Request
    project: Project | None = None
    running: set[str] = field(default_factory=set)


class _RunReporter:
    """Turns a build's events into hub events and the set of targets running now."""

    def __init__(self, active: Active, hub: Hub) -> None:
        self.active = active
        self.hub = hub

    def emit(self, event: ev.Event) -> None:
        run = self.active.request.id
        if isinstance(event, ev.TargetStarted):
            self.active.running.add(event.name)
            self.hub.publish("target", {"run": run, "target": event.name,
                                        "status": "running"})
        elif isinstance(event, ev.TargetFinished):
            o = event.outcome
            self.active.running.discard(o.target)
            self.hub.publish("target", {"run": run, "target": o.target, "status": o.status,
                                        "duration": round(o.duration, 3),
                                        "message": o.message})


# -- the queue ---------------------------------------------------------------------------------
class Runner:
    """Queues triggered runs and builds up to `jobs` of them at once, each in its own Git
    worktree under .mlmake/worktrees/ID (removed afterwards). `describe(build)` turns a
    run record into the `run` event published for it (the view GET /api/runs lists).

    Threading: `submit` may be called from any thread; builds run on a pool of `jobs`
    threads; `shutdown` cancels queued runs, stops running ones and waits for their cleanup.
    """

    def __init__(self, project: Project, jobs: int = 1, hub: Hub | None = None,
                 describe: Callable[[dict[str, Any]], dict[str, Any]] = dict) -> None:
        self.project = project
        self.jobs = max(1, jobs)
        self.hub = hub or Hub()
        self.describe = describe
        project.git_root()  # refused before serving outside Git: triggered runs build commits
        self.runs = project.runs_store  # one store: its SQLite connections are per thread
        self.active: dict[str, Active] = {}
        self._queued: dict[str, tuple[Request, Future[str]]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = False
        self._params_cache: dict[str, dict[str, Any]] = {}

    def recover(self) -> list[str]:
        """Clean up after a service that died (Project.recover_triggers); returns the ids
        of the runs marked interrupted."""
        return self.project.recover_triggers()

    # -- triggering ------------------------------------------------------------------------
    def check(self, endpoint: str, params: object = None, rev: object = None,
              trigger: str = "api") -> Request:
        """Validate a trigger (BadRequest otherwise) without queueing it."""
        try:
            return self.project.check_trigger(endpoint, params, rev, trigger,
                                              self._params_cache)
        except UsageError as exc:
            raise BadRequest.rejected(exc) from None

    def param_values(self, commit: str) -> dict[str, Any]:
        """The flattened params at `commit` (cached per commit)."""
        if commit not in self._params_cache:
            self._params_cache[commit] = self.project.params_at(commit)
        return self._params_cache[commit]

    def submit(self, endpoint: str, params: Any = None, rev: Any = None,
               trigger: str = "api") -> Request:
        """Check, record as queued and queue a run; returns at once."""
        req = self.check(endpoint, params, rev, trigger)
        with self._lock:
            if self._stopping:
                raise BadRequest("the service is stopping; no new runs are accepted.", 503)
            self.project.record_trigger(req)
            self._announce(req.id, "queued")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="mlmake-run")
            fut = self._pool.submit(self._work, req)
            fut.add_done_callback(_report_crash)
            self._queued[req.id] = (req, fut)
        return req

    def run(self, endpoint: str, params: Any = None, rev: Any = None, trigger: str = "api",
            reporter: ev.Reporter | None = None) -> str:
        """Check, record and build a run in this thread; returns its id when it has ended."""
        req = self.check(endpoint, params, rev, trigger)
        self.project.record_trigger(req)
        return self.build(req, reporter)

    def _work(self, req: Request) -> str:
        with self._lock:
            self._queued.pop(req.id, None)
            if self._stopping:
                return req.id
        return self.build(req)

    def pending(self, run_id: str) -> bool:
        """True while the run is queued or building in this process."""
        return run_id in self._queued or run_id in self.active

    def running_targets(self) -> dict[str, list[str]]:
        """Target name → ids of the runs executing it right now."""
        out: dict[str, list[str]] = {}
        for rid, a in list(self.active.items()):
            for t in list(a.running):
                out.setdefault(t, []).append(rid)
        return out

    # -- building --------------------------------------------------------------------------
    def build(self, req: Request, reporter: ev.Reporter | None = None) -> str:
        """Build `req` (this thread) through Project.build_at and announce how it ended. A
        failure of any kind is recorded on the run, never raised."""
        active = Active(req)
        self.active[req.id] = active
        rep: ev.Reporter = _RunReporter(active, self.hub)
        if reporter is not None:
            rep = _Tee(rep, reporter)

        def started(worktree_project: Project) -> None:
            active.project = worktree_project
            if self._stopping:
                worktree_project.cancel()
            self._announce(req.id, "running")

        failure: str | None = None
        try:
            self.project.build_at(req, rep, started)
        except (MlmakeError, OSError, sqlite3.Error) as exc:  # the run failed, not the service
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.active.pop(req.id, None)
            b = self.runs.build(req.id) or {}
            if failure is not None or b.get("status") not in FINAL:
                # a bug propagates (to the run's future, or the caller) after this: the
                # record says how the run ended either way
                self.runs.update_build(req.id, status="failed", finished=time.time(),
                                       message=f"error: {failure}" if failure else
                                       "internal error: the run stopped unexpectedly; the "
                                       "service's output has the traceback")
            elif b.get("status") == "interrupted" and not b.get("message"):
                self.runs.update_build(req.id, message="stopped: the service was shut down")
            self._announce(req.id, None)
        return req.id

    def _announce(self, run_id: str, status: str | None) -> None:
        """Publish a `run` event: the run as GET /api/runs lists it."""
        b = self.runs.build(run_id)
        if b is None:
            return
        if status is not None:
            b["status"] = status
        self.hub.publish("run", self.describe(b))

    # -- stopping --------------------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel queued runs, stop running ones (their processes are killed and what
        finished is recorded) and wait for their worktrees to be removed."""
        with self._lock:
            self._stopping = True
            queued = list(self._queued.values())
            self._queued.clear()
            pool, self._pool = self._pool, None
        runs = self.runs
        for req, fut in queued:
            fut.cancel()
            runs.update_build(req.id, status="interrupted", finished=time.time(),
                              message="the service stopped before this run started")
            self._announce(req.id, None)
        for a in list(self.active.values()):
            if a.project is not None:
                a.project.cancel()
        if pool is not None:
            done = threading.Event()

            def wait() -> None:
                pool.shutdown(wait=True, cancel_futures=True)
                done.set()
            threading.Thread(target=wait, daemon=True).start()
            while not done.wait(0.2) and timeout > 0:
                timeout -= 0.2
                for a in list(self.active.values()):  # one that started meanwhile
                    if a.project is not None:
                        a.project.cancel()


class _Tee:
    def __init__(self, *reporters: ev.Reporter) -> None:
        self.reporters = reporters

    def emit(self, event: ev.Event) -> None:
        for r in self.reporters:
            r.emit(event)


FINAL = ("succeeded", "failed", "interrupted")


def _report_crash(fut: Future[str]) -> None:
    """A run that crashed on a bug: its traceback on the service's output (the run's record
    already says it failed), and the service goes on with the next run."""
    exc = None if fut.cancelled() else fut.exception()
    if exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
