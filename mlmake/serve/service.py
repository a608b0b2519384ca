"""The service's moving parts, started and stopped together: the run queue, the schedules, the
event hub and a watcher that announces runs recorded by other processes (the CLI, hooks)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from mlmake.serve.runs import Hub, Runner
from mlmake.serve.schedules import Schedules
from mlmake.serve.views import run_entry

if TYPE_CHECKING:
    from mlmake.project import Project

HISTORY_POLL = 2.0


class Service:
    """What `mlmake serve` runs besides HTTP; `stop` is idempotent and safe from any thread."""

    def __init__(self, project: Project, jobs: int = 1) -> None:
        self.project = project
        self.hub = Hub()
        self.runner = Runner(project, jobs, self.hub, lambda b: run_entry(project, b))
        self.schedules = Schedules(project, self._fire, self.runner.pending)
        self.stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._seen: dict[str, str] = {}
        self._stopped = False
        self._lock = threading.Lock()

    def _fire(self, endpoint: str, params: dict[str, Any], rev: str | None,
              trigger: str) -> str:
        return self.runner.submit(endpoint, params, rev, trigger).id

    def start(self) -> None:
        """Recover from a previous service's crash, then start the schedules and the
        history watcher."""
        self.runner.recover()
        self._seen = {b["id"]: b["status"] for b in self.runner.runs.builds(50)}
        self.hub.subscribe(self._note)
        self.schedules.start()
        self._watcher = threading.Thread(target=self._watch_history, daemon=True,
                                         name="mlmake-history")
        self._watcher.start()

    def _note(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "run":
            self._seen[data["id"]] = data["status"]

    def _watch_history(self) -> None:
        """Publish a `run` event for each run whose status changed in runs.db, so the page
        also sees runs started from the CLI."""
        while not self.stopping.wait(HISTORY_POLL):
            for b in self.runner.runs.builds(20):
                if self._seen.get(b["id"]) == b["status"] or self.runner.pending(b["id"]):
                    continue
                self._seen[b["id"]] = b["status"]
                self.hub.publish("run", run_entry(self.project, b))

    def stop(self) -> None:
        """Stop firing schedules, cancel queued runs, stop running builds (their processes
        are killed, their worktrees removed) and wait for that."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.stopping.set()
        self.schedules.stop()
        self.runner.shutdown()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
