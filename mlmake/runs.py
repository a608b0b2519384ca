"""Run records: every build and every target outcome, in SQLite under .mlmake/."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

# columns added to `builds` after its first release: an older runs.db gains them on open
_NEWER_BUILD_COLUMNS = (("dirty", "INTEGER"), ("data", "TEXT"))
_BUILD_COLUMNS = "id, trigger, commit_sha, started, finished, status, params, targets, " \
    "summary, host, executor, endpoint, message, dirty, data"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
  id TEXT PRIMARY KEY, trigger TEXT NOT NULL, commit_sha TEXT, started REAL NOT NULL,
  finished REAL, status TEXT NOT NULL, params TEXT, targets TEXT, summary TEXT,
  host TEXT, executor TEXT, endpoint TEXT, message TEXT, dirty INTEGER, data TEXT
);
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, build TEXT NOT NULL, target TEXT NOT NULL,
  key TEXT, outcome TEXT NOT NULL, started REAL NOT NULL, duration REAL NOT NULL,
  commit_sha TEXT, host TEXT, executor TEXT, exit_code INTEGER, log TEXT, source TEXT,
  message TEXT, outs TEXT
);
CREATE INDEX IF NOT EXISTS runs_target ON runs (target, started);
CREATE INDEX IF NOT EXISTS runs_build ON runs (build);
CREATE INDEX IF NOT EXISTS builds_started ON builds (started);
"""


@dataclass(frozen=True)
class RunRecord:
    """One target's outcome in one build."""

    build: str
    target: str
    key: str | None
    outcome: str
    started: float
    duration: float
    commit: str | None
    host: str
    executor: str
    exit_code: int | None = None
    log: str | None = None
    source: str = ""
    message: str = ""
    outs: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return d


class RunStore:
    """SQLite-backed history; safe to share between threads and processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.host = socket.gethostname()
        self._local = threading.local()
        self.recovered: list[str] = []  # warnings: an unreadable database was replaced

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                db = self._connect()
            except sqlite3.DatabaseError as exc:
                if not _corrupt(exc):
                    raise
                self._set_aside(exc)
                db = self._connect()
            self._local.db = db
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            _busy_retry(lambda: _setup(db))
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, exc: Exception) -> None:
        """Move an unreadable database aside (kept for inspection) so a new one starts."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
        aside = f"{self.path}.corrupt-{int(time.time())}"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(self.path + suffix, aside + suffix)
            except FileNotFoundError:
                pass
        self.recovered.append(
            f"the run records {self.path} were unreadable ({exc}); they were moved to "
            f"{os.path.basename(aside)} and a new record was started")

    def _run(self, sql: str, args: Any = ()) -> list[Any]:
        """Execute one statement; an unreadable database is set aside and started anew
        (the history is lost, the build is not)."""
        try:
            return _busy_retry(lambda: self._db().execute(sql, args).fetchall())
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            self._set_aside(exc)
            return self._db().execute(sql, args).fetchall()

    def start_build(self, build_id: str, trigger: str, commit: str | None, started: float,
                    targets: list[str], executor: str, params: dict[str, Any] | None = None,
                    endpoint: str | None = None, status: str = "running",
                    dirty: bool | None = None, data: dict[str, str] | None = None) -> None:
        """Record a build as started (or queued). Starting a build that was recorded as
        queued keeps the params and endpoint recorded then unless new ones are given.
        `dirty`: the work tree had changes to tracked files that `commit` does not hold.
        `data`: the version (content hash) of each data source the lock recorded as the
        build started, path → hash (sources.versions)."""
        self._run(
            "INSERT INTO builds (id, trigger, commit_sha, started, status, params, "
            "targets, host, executor, endpoint, dirty, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET trigger = excluded.trigger, "
            "commit_sha = excluded.commit_sha, started = excluded.started, "
            "status = excluded.status, targets = excluded.targets, host = excluded.host, "
            "executor = excluded.executor, "
            "params = COALESCE(excluded.params, builds.params), "
            "endpoint = COALESCE(excluded.endpoint, builds.endpoint), "
            "dirty = COALESCE(excluded.dirty, builds.dirty), "
            "data = COALESCE(excluded.data, builds.data)",
            (build_id, trigger, commit, started, status,
             json.dumps(params) if params is not None else None,
             json.dumps(targets), self.host, executor, endpoint,
             None if dirty is None else int(dirty),
             json.dumps(data, sort_keys=True) if data is not None else None))

    def update_build(self, build_id: str, **fields: Any) -> None:
        cols = {"commit": "commit_sha"}
        sets, values = [], []
        for k, v in fields.items():
            sets.append(f"{cols.get(k, k)} = ?")
            values.append(json.dumps(v) if k in ("summary", "params", "targets", "data") else v)
        self._run(f"UPDATE builds SET {', '.join(sets)} WHERE id = ?",
                           (*values, build_id))

    def add(self, rec: RunRecord) -> None:
        self.add_many([rec])

    def add_many(self, recs: list[RunRecord]) -> None:
        """Record target runs, a few hundred per statement (one transaction each): a build
        of many quick targets writes them in batches."""
        for i in range(0, len(recs), 500):
            chunk = recs[i:i + 500]
            self._run(
                "INSERT INTO runs (build, target, key, outcome, started, duration, commit_sha, "
                "host, executor, exit_code, log, source, message, outs) VALUES "
                + ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk)),
                [v for rec in chunk for v in (
                    rec.build, rec.target, rec.key, rec.outcome, rec.started, rec.duration,
                    rec.commit, rec.host, rec.executor, rec.exit_code, rec.log, rec.source,
                    rec.message, json.dumps(rec.outs) if rec.outs is not None else None)])

    def runs(self, target: str | None = None, limit: int = 50,
             build: str | None = None) -> list[RunRecord]:
        """Target runs, newest first; filtered by target name or matrix base, or by build."""
        sql = "SELECT build, target, key, outcome, started, duration, commit_sha, host, " \
              "executor, exit_code, log, source, message, outs FROM runs"
        args: list[Any] = []
        if target:
            sql += " WHERE (target = ? OR target LIKE ?)"
            args += [target, target + "@%"]
        elif build:
            sql += " WHERE build = ?"
            args.append(build)
        sql += " ORDER BY started DESC, id DESC LIMIT ?"
        args.append(limit)
        if not os.path.exists(self.path):
            return []
        rows = self._run(sql, args)
        return [_record(r) for r in rows]

    def builds(self, limit: int = 50) -> list[dict[str, Any]]:
        """Builds, newest first, as JSON-ready dicts."""
        if not os.path.exists(self.path):
            return []
        rows = self._run(f"SELECT {_BUILD_COLUMNS} FROM builds ORDER BY started DESC LIMIT ?",
                         (limit,))
        return [_build_dict(r) for r in rows]

    def build(self, build_id: str) -> dict[str, Any] | None:
        if not os.path.exists(self.path):
            return None
        found = self._run(f"SELECT {_BUILD_COLUMNS} FROM builds WHERE id = ?", (build_id,))
        r = found[0] if found else None
        return _build_dict(r) if r else None

    def latest(self) -> dict[str, RunRecord]:
        """Each target's most recent recorded run (of any build)."""
        if not os.path.exists(self.path):
            return {}
        rows = self._run(
            "SELECT build, target, key, outcome, started, duration, commit_sha, host, "
            "executor, exit_code, log, source, message, outs FROM runs WHERE id IN "
            "(SELECT MAX(id) FROM runs GROUP BY target)")
        return {r[1]: _record(r) for r in rows}

    def durations(self, targets: list[str]) -> dict[str, float]:
        """Median-ish past duration (mean of the last 5 ran) per target, for estimates."""
        if not os.path.exists(self.path) or not targets:
            return {}
        out: dict[str, float] = {}
        for t in targets:
            rows = self._run("SELECT duration FROM runs WHERE target = ? AND outcome = 'ran' "
                             "ORDER BY started DESC LIMIT 5", (t,))
            if rows:
                out[t] = sum(r[0] for r in rows) / len(rows)
        return out


def _add_columns(db: sqlite3.Connection) -> None:
    """Columns newer than a runs.db written by an older mlmake (their rows read as NULL)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(builds)")}
    for name, kind in _NEWER_BUILD_COLUMNS:
        if name not in have:
            try:
                db.execute(f"ALTER TABLE builds ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError:  # another process added it first
                pass


def _setup(db: sqlite3.Connection) -> None:
    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        db.execute("PRAGMA journal_mode=WAL")  # once per file: it persists
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    _add_columns(db)


def _busy_retry(fn: Any, patience: float = 30.0) -> Any:
    """fn(), retried while SQLite answers "database is locked" without waiting (a journal
    mode switch or a schema statement racing another process's)."""
    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) \
                    or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    """An unreadable file (not a busy database, which is worth waiting for)."""
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in text \
        or "not a database" in text


def _record(r: tuple[Any, ...]) -> RunRecord:
    """A RunRecord from a `runs` row in the column order of the SELECTs above."""
    return RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                     r[12], json.loads(r[13]) if r[13] else None)


def _build_dict(r: tuple[Any, ...]) -> dict[str, Any]:
    """A build as a JSON-ready dict; `data` is {} for a build recorded before it existed."""
    keys = ("id", "trigger", "commit", "started", "finished", "status", "params", "targets",
            "summary", "host", "executor", "endpoint", "message", "dirty", "data")
    d = dict(zip(keys, r, strict=True))
    d["dirty"] = None if d["dirty"] is None else bool(d["dirty"])
    for k in ("params", "targets", "summary", "data"):
        d[k] = json.loads(d[k]) if d[k] else ({} if k != "targets" else [])
    return d


def data_labels(data: dict[str, str]) -> list[str]:
    """A build's data versions as people read them: `path@shorthash` per source."""
    return [f"{path}@{digest[:8]}" for path, digest in sorted(data.items())]
