"""The reporter protocol: events the engine emits while it plans and builds."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from mlmake.model import Outcome, Reason


@dataclass(frozen=True)
class BuildStarted:
    build_id: str
    targets: tuple[str, ...]
    stale: tuple[str, ...]
    jobs: int
    executor: str


@dataclass(frozen=True)
class TargetStarted:
    name: str
    reasons: tuple[Reason, ...] = ()
    estimate: float | None = None


@dataclass(frozen=True)
class TargetOutput:
    name: str
    line: str


@dataclass(frozen=True)
class TargetFinished:
    outcome: Outcome


@dataclass(frozen=True)
class Summary:
    """Counts of a finished build; `line` is the summary the CLI prints."""

    ran: int = 0
    reused: int = 0
    uptodate: int = 0
    failed: int = 0
    blocked: int = 0
    duration: float = 0.0
    interrupted: bool = False

    @property
    def line(self) -> str:
        s = (f"ran {self.ran} · reused {self.reused} · up to date {self.uptodate} · "
             f"failed {self.failed}")
        if self.blocked:
            s += f" · not run {self.blocked}"
        return s


@dataclass(frozen=True)
class BuildFinished:
    build_id: str
    summary: Summary
    outcomes: tuple[Outcome, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Notice:
    """A one-line message for the user (waiting for a lock, a fallback taken, ...)."""

    text: str
    level: str = "info"  # info | warning


Event = BuildStarted | TargetStarted | TargetOutput | TargetFinished | BuildFinished | Notice


class Reporter(Protocol):
    """Receives events; called from worker threads, so implementations must be thread-safe."""

    def emit(self, event: Event) -> None: ...


class NullReporter:
    """Drops every event."""

    def emit(self, event: Event) -> None:
        pass


class RecordingReporter:
    """Keeps every event in a list (tests, the serve layer)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]
