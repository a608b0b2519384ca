"""Triggered runs: requests checked, queued, and built in isolated Git worktrees that share the
project's object store, run cache and run records (never its work tree, index or lock)."""

from __future__ import annotations

import glob as globmod
import os
import secrets
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from mlmake import events as ev
from mlmake.errors import GitError, MlmakeError, UsageError
from mlmake.hashing import is_glob

if TYPE_CHECKING:
    from mlmake.project import Project

WORKTREES = "worktrees"
FINAL = ("succeeded", "failed", "interrupted")


class BadRequest(UsageError):
    """A trigger that cannot be queued: an unknown endpoint (404), or a param, value or rev
    the endpoint does not accept (400). `detail` names what was wrong, for the JSON body."""

    def __init__(self, message: str, status: int = 400, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Request:
    """A checked trigger: what to build (the endpoint's targets at `commit`) and how."""

    id: str
    endpoint: str
    targets: tuple[str, ...]
    params: dict[str, Any]
    rev: str
    commit: str
    trigger: str
    queued: float


def new_run_id() -> str:
    """An opaque, sortable run id (`20250101-120000-1a2b3c4d`), unique enough to name a
    worktree directory."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


# -- checking a trigger ------------------------------------------------------------------------
def check(project: Project, endpoint: str, params: Any = None, rev: Any = None,
          trigger: str = "api", params_cache: dict[str, dict[str, Any]] | None = None
          ) -> Request:
    """Validate a trigger against the endpoint and the rev's params files; BadRequest names
    the first problem. Nothing is recorded or queued here."""
    from mlmake import git

    spec = project.pipeline.endpoints.get(endpoint)
    if spec is None:
        known = sorted(project.pipeline.endpoints)
        raise BadRequest(f"unknown endpoint '{endpoint}'; this project publishes "
                         f"{', '.join(known) or 'none'}.", 404, endpoint=endpoint,
                         endpoints=known)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("\"params\" must be a JSON object of dotted param names to values.",
                         field="params")
    from mlmake.params import flatten

    params = flatten(params)  # {"train": {"lr": 0.1}} means {"train.lr": 0.1}
    if rev is None:
        rev = spec.rev
    if not isinstance(rev, str) or not rev.strip():
        raise BadRequest("\"rev\" must be a branch, tag or commit name.", field="rev")
    try:
        commit = git.rev_sha(project.root, rev)
    except GitError:
        raise BadRequest(f"unknown rev '{rev}': no branch, tag or commit has that name.",
                         rev=rev) from None
    values: dict[str, Any] | None = None
    for key, value in params.items():
        if not any(key == a or key.startswith(a + ".") for a in spec.params):
            raise BadRequest(f"param '{key}' is not allowed by endpoint '{endpoint}'; it "
                             f"allows {', '.join(spec.params) or 'no params'}.", param=key,
                             allowed=list(spec.params))
        if values is None:
            if params_cache is not None and commit in params_cache:
                values = params_cache[commit]
            else:
                values = params_at(project, commit)
                if params_cache is not None:
                    params_cache[commit] = values
        if key not in values:
            if any(k.startswith(key + ".") for k in values):
                raise BadRequest(f"param '{key}' is a table at rev '{rev}'; override its "
                                 "keys one by one (e.g. train.lr).", param=key, rev=rev)
            raise BadRequest(f"param '{key}' is not in the params files at rev '{rev}'.",
                             param=key, rev=rev)
        want, got = _kind(values[key]), _kind(value)
        if got != want and not (want == "number" and got == "integer"):
            raise BadRequest(f"param '{key}' must be {_article(want)}, like its value "
                             f"{values[key]!r} at rev '{rev}', not {_article(got)}.",
                             param=key, expected=want, got=got)
    return Request(id=new_run_id(), endpoint=endpoint, targets=spec.targets,
                   params=dict(params), rev=rev, commit=commit, trigger=trigger,
                   queued=time.time())


def params_at(project: Project, commit: str) -> dict[str, Any]:
    """The flattened params (dotted key → value) of the project as committed at `commit`,
    read from Git objects: the params files its Mlfile names there, merged in order."""
    from mlmake import git, metrics
    from mlmake import params as params_mod

    mlfile = os.path.basename(project.mlfile_path)
    _, blobs = git.read_files_at(project.root, commit, [mlfile])
    files: list[str] = []
    if blobs[mlfile] is not None:
        try:
            raw = params_mod.parse_toml(blobs[mlfile].decode("utf-8"), mlfile)
        except (MlmakeError, UnicodeDecodeError):
            raw = {}
        named = raw.get("project", {}).get("params") if isinstance(raw.get("project"),
                                                                     dict) else None
        if isinstance(named, str):
            files = [named]
        elif isinstance(named, list):
            files = [f for f in named if isinstance(f, str)]
    if not files:
        files = list(params_mod.DEFAULT_FILES)
    _, data = git.read_files_at(project.root, commit, files)
    merged: dict[str, Any] = {}
    for f in files:
        if data.get(f) is None:
            continue
        try:
            merged.update(metrics.parse(data[f], f, commit))  # type: ignore[arg-type]
        except MlmakeError:
            continue
    return merged


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "table"
    return "null" if v is None else type(v).__name__


def _article(kind: str) -> str:
    return {"integer": "an integer", "null": "null"}.get(kind, f"a {kind}")


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
    project: Any = None
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
    worktree under .mlmake/worktrees/ID (removed afterwards).

    Threading: `submit` may be called from any thread; builds run on a pool of `jobs`
    threads; `shutdown` cancels queued runs, stops running ones and waits for their cleanup.
    """

    def __init__(self, project: Project, jobs: int = 1, hub: Hub | None = None) -> None:
        from mlmake import git

        self.project = project
        self.jobs = max(1, jobs)
        self.hub = hub or Hub()
        self.repo_root = git.workdir(project.root)
        if self.repo_root is None:
            raise UsageError(f"'{project.root}' is not inside a Git repository; triggered "
                             "runs build commits. Run `git init` and commit the project.")
        self.state = project.state_path()
        self.runs = project.runs_store  # one store: its SQLite connections are per thread
        self.active: dict[str, Active] = {}
        self._queued: dict[str, tuple[Request, Future[str]]] = {}
        self._lock = threading.Lock()
        self._git_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = False
        self._params_cache: dict[str, dict[str, Any]] = {}

    def recover(self) -> list[str]:
        """Clean up after a service that died: remove its leftover worktrees and mark the
        runs it had queued or was building as interrupted. Returns their ids."""
        from mlmake import git

        runs = self.runs
        found: list[str] = []
        base = os.path.join(self.state, WORKTREES)
        leftovers = sorted(os.listdir(base)) if os.path.isdir(base) else []
        for name in leftovers:
            git.remove_worktree(self.repo_root, os.path.join(base, name))  # type: ignore[arg-type]
            b = runs.build(name)
            if b is not None and b["status"] not in FINAL:
                found.append(name)
        for b in runs.builds(500):
            if b["status"] == "queued":
                found.append(b["id"])
        for rid in dict.fromkeys(found):
            runs.update_build(rid, status="interrupted", finished=time.time(),
                              message="the service stopped before this run finished")
        return found

    # -- triggering ------------------------------------------------------------------------
    def check(self, endpoint: str, params: Any = None, rev: Any = None,
              trigger: str = "api") -> Request:
        """Validate a trigger (BadRequest otherwise) without queueing it."""
        return check(self.project, endpoint, params, rev, trigger, self._params_cache)

    def param_values(self, commit: str) -> dict[str, Any]:
        """The flattened params at `commit` (cached per commit)."""
        if commit not in self._params_cache:
            self._params_cache[commit] = params_at(self.project, commit)
        return self._params_cache[commit]

    def submit(self, endpoint: str, params: Any = None, rev: Any = None,
               trigger: str = "api") -> Request:
        """Check, record as queued and queue a run; returns at once."""
        req = self.check(endpoint, params, rev, trigger)
        with self._lock:
            if self._stopping:
                raise BadRequest("the service is stopping; no new runs are accepted.", 503)
            self._record_queued(req)
            self._announce(req.id, "queued")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="mlmake-run")
            fut = self._pool.submit(self._work, req)
            self._queued[req.id] = (req, fut)
        return req

    def run(self, endpoint: str, params: Any = None, rev: Any = None, trigger: str = "api",
            reporter: ev.Reporter | None = None) -> str:
        """Check, record and build a run in this thread; returns its id when it has ended."""
        req = self.check(endpoint, params, rev, trigger)
        self._record_queued(req)
        return self.build(req, reporter)

    def _record_queued(self, req: Request) -> None:
        self.runs.start_build(
            req.id, req.trigger, req.commit, req.queued, list(req.targets), "local",
            params=req.params, endpoint=req.endpoint, status="queued")

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
        """Build `req` in a fresh worktree (this thread), record how it ended, remove the
        worktree. A failure of any kind is recorded on the run, never raised."""
        from mlmake import git
        from mlmake.project import Project

        active = Active(req)
        self.active[req.id] = active
        runs = self.runs
        runs.update_build(req.id, status="running", started=time.time())
        self._announce(req.id, "running")
        wt = os.path.join(self.state, WORKTREES, req.id)
        rep: ev.Reporter = _RunReporter(active, self.hub)
        if reporter is not None:
            rep = _Tee(rep, reporter)
        record_exp: Callable[[], Any] = lambda: None
        try:
            os.makedirs(os.path.dirname(wt), exist_ok=True)
            with self._git_lock, self._worktree_lock():
                git.add_worktree(self.repo_root, wt, req.commit)  # type: ignore[arg-type]
            rel = os.path.relpath(self.project.root, self.repo_root)  # type: ignore[arg-type]
            root = os.path.normpath(os.path.join(wt, rel))
            wp = Project(root, os.path.basename(self.project.mlfile_path),
                         shared_state=self.state)
            _seed_stat_cache(self.project, wp)
            active.project = wp
            if self._stopping:
                wp.cancel()
            link_untracked(wp, self.project.root, req.targets)
            wp.set_params(req.params)  # the command reads what the key covers
            wp.run(req.targets, trigger=req.trigger, build_id=req.id, reporter=rep)
            # a run with param overrides is recorded as an experiment too
            from mlmake.experiments import capture_trigger

            record_exp = capture_trigger(str(self.repo_root), wp, wt, req.endpoint,
                                         req.commit, req.params, req.targets, req.id,
                                         str((runs.build(req.id) or {}).get("status", "")))
        except MlmakeError as exc:
            runs.update_build(req.id, status="failed", finished=time.time(), message=str(exc))
        except Exception as exc:  # noqa: BLE001 - a run's crash is recorded; the service goes on
            runs.update_build(req.id, status="failed", finished=time.time(),
                              message=f"internal error: {type(exc).__name__}: {exc}")
            import traceback

            traceback.print_exc(file=sys.stderr)
        finally:
            with self._git_lock, self._worktree_lock():
                git.remove_worktree(self.repo_root, wt)  # type: ignore[arg-type]
            record_exp()
            self.active.pop(req.id, None)
            b = runs.build(req.id) or {}
            if b.get("status") not in FINAL:  # stopped before its build was recorded
                runs.update_build(req.id, status="interrupted", finished=time.time(),
                                  message="the service stopped before this run finished")
            elif b.get("status") == "interrupted" and not b.get("message"):
                runs.update_build(req.id, message="stopped: the service was shut down")
            self._announce(req.id, None)
        return req.id

    def _worktree_lock(self) -> Any:
        """Git's worktree records are shared by every process on the repository (another
        `mlmake serve`, `mlmake trigger`): add and remove one at a time across them."""
        from mlmake.filelock import file_lock

        os.makedirs(os.path.join(self.state, WORKTREES), exist_ok=True)
        return file_lock(os.path.join(self.state, WORKTREES + ".lock"))

    def _announce(self, run_id: str, status: str | None) -> None:
        """Publish a `run` event: the run as GET /api/runs lists it."""
        from mlmake.serve.views import run_entry

        b = self.runs.build(run_id)
        if b is None:
            return
        if status is not None:
            b["status"] = status
        self.hub.publish("run", run_entry(self.project, b))

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


# -- the worktree's inputs ---------------------------------------------------------------------
def _seed_stat_cache(main: Project, wp: Project) -> None:
    """Start the worktree's stat cache from the project's: files linked in from the work
    tree keep their inode, size and mtime, so they are not hashed again."""
    src = main.state_path("statcache")
    if os.path.exists(src):
        try:
            shutil.copyfile(src, wp.state_path("statcache"))
        except OSError:
            pass


def link_untracked(wp: Project, source_root: str, targets: tuple[str, ...]) -> list[str]:
    """Symlink into the worktree the deps of the selected targets that the commit lacks and
    no target produces, from the project's work tree (`source_root`). Returns what it linked."""
    graph = wp.graph
    outs = [o for t in graph.targets.values() for o in t.all_outs]
    linked: list[str] = []

    def inside_out(rel: str) -> bool:
        return any(rel == o or rel.startswith(o + "/") for o in outs)

    def link(rel: str) -> None:
        if inside_out(rel):
            return
        src = os.path.join(source_root, rel)
        dst = os.path.join(wp.root, rel)
        if not os.path.lexists(src):
            return
        if not os.path.lexists(dst):
            if os.path.isdir(src) and any(o.startswith(rel + "/") for o in outs):
                os.makedirs(dst, exist_ok=True)  # holds an out: link file by file below
            else:
                os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
                os.symlink(src, dst)
                linked.append(rel)
                return
        if os.path.isdir(src) and os.path.isdir(dst) and not os.path.islink(dst):
            for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
                sub = os.path.relpath(dirpath, source_root).replace(os.sep, "/")
                dirnames[:] = [d for d in dirnames if not inside_out(f"{sub}/{d}")]
                for f in filenames:
                    r = f"{sub}/{f}"
                    d = os.path.join(wp.root, r)
                    if not os.path.lexists(d) and not inside_out(r):
                        os.makedirs(os.path.dirname(d), exist_ok=True)
                        os.symlink(os.path.join(source_root, r), d)
                        linked.append(r)

    for name in wp.select(targets):
        for dep in graph.targets[name].deps:
            if is_glob(dep):
                for m in sorted(globmod.glob(dep, root_dir=source_root, recursive=True)):
                    link(m.replace(os.sep, "/"))
            else:
                link(dep)
    return linked
