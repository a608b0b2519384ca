"""Schedules: fire an endpoint's runs every interval, on a cron expression, when a branch gets a
new commit, or when the content of watched paths changes (one thread, the service's clock)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from mlmake.errors import MlmakeError
from mlmake.model import ScheduleSpec

if TYPE_CHECKING:
    from mlmake.project import Project

# submit(endpoint, params, rev, trigger) -> run id
Submit = Callable[[str, dict[str, Any], "str | None", str], str]
_MAX_SLEEP = 1.0


def kind(spec: ScheduleSpec) -> str:
    """every | cron | on_commit | watch."""
    if spec.every is not None:
        return "every"
    if spec.cron is not None:
        return "cron"
    if spec.on_commit is not None:
        return "on_commit"
    return "watch"


def next_cron(expr: str, after: float) -> float:
    """The first time strictly after `after` that the 5-field cron expression names, in the
    local time zone."""
    from croniter import croniter

    start = dt.datetime.fromtimestamp(after).astimezone()
    return float(croniter(expr, start).get_next(float))


@dataclass
class State:
    """A schedule's live state: when it is next due, what it last saw and fired."""

    spec: ScheduleSpec
    next_at: float
    seen: Any = None
    last_run: str | None = None
    last_fired: float | None = None
    last_error: str | None = None
    fired: int = 0
    skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Schedules:
    """The project's [schedule.NAME] tables, checked by one thread and fired through `submit`.

    `every` and `cron` do not fire again while their previous run is still queued or
    running (`pending`); `on_commit` fires once per new commit of the branch (building that
    commit); `watch` fires when the combined content hash of its paths changes, hashed
    through a stat cache kept in memory, so an unchanged tree costs one stat per file.
    """

    def __init__(self, project: Project, submit: Submit,
                 pending: Callable[[str], bool] = lambda rid: False,
                 clock: Callable[[], float] = time.time) -> None:
        self.project = project
        self.submit = submit
        self.pending = pending
        self.clock = clock
        self._hashes = project.content()  # one stat cache, kept in memory across checks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        now = clock()
        self.states: dict[str, State] = {}
        for name, spec in project.pipeline.schedules.items():
            st = State(spec, now)
            k = kind(spec)
            if k == "every":
                st.next_at = now + spec.every  # type: ignore[operator]
            elif k == "cron":
                st.next_at = next_cron(spec.cron, now)  # type: ignore[arg-type]
            elif k == "on_commit":
                st.seen = self._branch_sha(spec.on_commit)  # type: ignore[arg-type]
                st.next_at = now + spec.poll
            else:
                st.seen = self._content(spec.watch)
                st.next_at = now + spec.poll
            self.states[name] = st

    # -- probes ----------------------------------------------------------------------------
    def _branch_sha(self, branch: str) -> str | None:
        try:
            return self.project.commit_of(branch)
        except MlmakeError:
            return None

    def _content(self, paths: tuple[str, ...]) -> tuple[str | None, ...]:
        return self._hashes(paths)

    # -- firing ----------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[str]:
        """Fire every schedule that is due at `now`; returns the ids of the runs queued."""
        now = self.clock() if now is None else now
        fired: list[str] = []
        with self._lock:
            for name, st in self.states.items():
                if now < st.next_at:
                    continue
                spec = st.spec
                k = kind(spec)
                rev: str | None = None
                fire = True
                if k == "every":
                    st.next_at += spec.every  # type: ignore[operator]
                    if st.next_at <= now:  # fell behind (a slow tick): no burst of catch-ups
                        st.next_at = now + spec.every  # type: ignore[operator]
                elif k == "cron":
                    st.next_at = next_cron(spec.cron, now)  # type: ignore[arg-type]
                else:
                    st.next_at = now + spec.poll
                    if k == "on_commit":
                        sha = self._branch_sha(spec.on_commit)  # type: ignore[arg-type]
                        fire = sha is not None and sha != st.seen
                        if fire:
                            st.seen = rev = sha
                    else:
                        content = self._content(spec.watch)
                        fire = content != st.seen
                        st.seen = content
                if fire and k in ("every", "cron") and st.last_run and \
                        self.pending(st.last_run):
                    st.skipped += 1  # the previous run has not finished: do not pile up
                    fire = False
                if not fire:
                    continue
                st.last_fired = now
                try:
                    rid = self.submit(spec.endpoint, dict(spec.params), rev,
                                      f"schedule:{name}")
                except MlmakeError as exc:
                    st.last_error = str(exc)
                    continue
                st.last_run, st.last_error = rid, None
                st.fired += 1
                fired.append(rid)
        return fired

    def next_due(self) -> float | None:
        return min((st.next_at for st in self.states.values()), default=None)

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        """Check the schedules in a background thread until `stop`."""
        if not self.states or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="mlmake-schedules",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            due = self.next_due()
            wait = _MAX_SLEEP if due is None else min(_MAX_SLEEP, max(0.0, due - self.clock()))
            if self._stop.wait(wait):
                break
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # -- the view --------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """Each schedule: name, endpoint, kind, spec, poll, params, next fire (or check)
        time, the last run it queued and when, and the last error."""
        out = []
        with self._lock:
            for name, st in self.states.items():
                spec = st.spec
                k = kind(spec)
                value: Any = {"every": spec.every, "cron": spec.cron,
                              "on_commit": spec.on_commit,
                              "watch": list(spec.watch)}[k]
                out.append({
                    "name": name, "endpoint": spec.endpoint, "kind": k, "spec": value,
                    "poll": spec.poll if k in ("on_commit", "watch") else None,
                    "params": dict(spec.params), "next": st.next_at,
                    "next_iso": dt.datetime.fromtimestamp(st.next_at).astimezone()
                    .isoformat(timespec="seconds"),
                    "last_run": st.last_run, "last_fired": st.last_fired,
                    "last_error": st.last_error, "fired": st.fired, "skipped": st.skipped,
                })
        return out
