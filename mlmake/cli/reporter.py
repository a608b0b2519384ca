"""Terminal reporters: plain lines for pipes and logs, a rich live display on a TTY."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

from mlmake import events as ev


def _fmt_secs(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class PlainReporter:
    """One line per event; target output prefixed with `[target]`."""

    def __init__(self, out: IO[str] | None = None, quiet: bool = False,
                 verbose: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self._lock = threading.Lock()

    def _print(self, text: str, err: bool = False) -> None:
        with self._lock:
            stream = self.err if err else self.out
            stream.write(text + "\n")
            stream.flush()

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.TargetOutput):
            if not self.quiet:
                self._print(f"[{event.name}] {event.line}")
        elif isinstance(event, ev.TargetStarted):
            if not self.quiet:
                why = f" ({event.reasons[0].describe()})" if event.reasons else ""
                self._print(f"▶ {event.name}{why}")
                if self.verbose:
                    for r in event.reasons[1:]:
                        self._print(f"    {r.describe()}")
        elif isinstance(event, ev.TargetFinished):
            self._finished(event.outcome)
        elif isinstance(event, ev.BuildFinished):
            if event.summary.interrupted:
                return
            self._print(event.summary.line + f" ({_fmt_secs(event.summary.duration)})")
        elif isinstance(event, ev.Notice):
            self._print(("warning: " if event.level == "warning" else "") + event.text,
                        err=True)

    def _finished(self, o: Any) -> None:
        if o.status == "ran":
            if not self.quiet:
                self._print(f"✓ {o.target} ran in {_fmt_secs(o.duration)}")
        elif o.status == "reused":
            if not self.quiet:
                src = f" (remote {o.source})" if o.source and o.source != "local" else ""
                verb = "restored" if o.message == "restored" else "reused"
                self._print(f"↺ {o.target} {verb}{src}")
        elif o.status == "failed":
            log = f" — log: {o.log}" if o.log else ""
            self._print(f"✗ {o.target} failed: {o.message or 'error'}{log}", err=True)
        elif o.status == "blocked":
            if not self.quiet:
                self._print(f"· {o.target} {o.message}", err=True)
        elif o.status == "uptodate" and self.verbose:
            self._print(f"= {o.target} up to date")


class LiveReporter(PlainReporter):
    """PlainReporter lines plus a rich live panel: running targets, elapsed, counts, ETA."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        super().__init__(sys.stdout, quiet, verbose)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=False, highlight=False)
        self.running: dict[str, tuple[float, float | None]] = {}
        self.total = 0
        self.counts = {"ran": 0, "reused": 0, "uptodate": 0, "failed": 0, "blocked": 0}
        self.started = time.monotonic()
        self.live = Live(console=self.console, refresh_per_second=8, transient=True,
                         get_renderable=self._render)
        self._live_on = False

    def _print(self, text: str, err: bool = False) -> None:
        with self._lock:
            if err:
                self.console.print(text, style="red" if text.startswith("✗") else None,
                                   markup=False, highlight=False)
            else:
                self.console.print(text, markup=False, highlight=False)

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for name, (t0, est) in list(self.running.items())[:12]:
            eta = f"~{_fmt_secs(max(0.0, est - (now - t0)))} left" if est else ""
            table.add_row(Text.assemble(("● ", "bold cyan"), name), Text(_fmt_secs(now - t0)),
                          Text(eta, style="dim"))
        if len(self.running) > 12:
            table.add_row(Text(f"… and {len(self.running) - 12} more"), Text(""), Text(""))
        done = sum(self.counts.values())
        c = self.counts
        table.add_row(Text(f"{done}/{self.total} · ran {c['ran']} · reused {c['reused']} · "
                           f"up to date {c['uptodate']} · failed {c['failed']} · "
                           f"{_fmt_secs(now - self.started)}", style="dim"), Text(""), Text(""))
        return table

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.BuildStarted):
            self.total = len(event.targets)
            self.started = time.monotonic()
            self.live.start(refresh=True)
            self._live_on = True
            self._last_refresh = time.monotonic()
        elif isinstance(event, ev.TargetStarted):
            self.running[event.name] = (time.monotonic(), event.estimate)
        elif isinstance(event, ev.TargetFinished):
            self.running.pop(event.outcome.target, None)
            key = event.outcome.status if event.outcome.status in self.counts else "blocked"
            self.counts[key] += 1
        elif isinstance(event, ev.BuildFinished) and self._live_on:
            self.live.stop()
            self._live_on = False
        if self._live_on and isinstance(event, (ev.TargetStarted, ev.TargetFinished)) \
                and time.monotonic() - self._last_refresh > 0.05:
            self._last_refresh = time.monotonic()
            self.live.refresh()
        super().emit(event)

    def close(self) -> None:
        if self._live_on:
            self.live.stop()
            self._live_on = False
