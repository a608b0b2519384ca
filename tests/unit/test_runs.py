"""Run records: a runs.db written before a column existed still opens, reads and records;
which data version each build used."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlmake.runs import RunStore, data_labels

OLD_BUILDS = """
CREATE TABLE builds (
  id TEXT PRIMARY KEY, trigger TEXT NOT NULL, commit_sha TEXT, started REAL NOT NULL,
  finished REAL, status TEXT NOT NULL, params TEXT, targets TEXT, summary TEXT,
  host TEXT, executor TEXT, endpoint TEXT, message TEXT
);
INSERT INTO builds (id, trigger, commit_sha, started, status, targets)
VALUES ('old-build', 'cli', 'abc', 1.0, 'succeeded', '["a"]');
"""


def test_a_runs_db_without_the_dirty_column_gains_it_and_keeps_its_rows(tmp_path: Path):
    path = tmp_path / "runs.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_BUILDS)
    db.close()
    store = RunStore(str(path))
    assert store.build("old-build")["dirty"] is None
    store.start_build("new-build", "cli", "def", 2.0, ["a"], "local", dirty=True)
    store.start_build("clean-build", "cli", "def", 3.0, ["a"], "local", dirty=False)
    assert [(b["id"], b["dirty"]) for b in store.builds()] == [
        ("clean-build", False), ("new-build", True), ("old-build", None)]
    # a second process opening the same file finds the column there
    assert RunStore(str(path)).build("new-build")["dirty"] is True


def test_starting_a_queued_build_keeps_its_dirty_flag_unless_told(tmp_path: Path):
    store = RunStore(str(tmp_path / "runs.db"))
    store.start_build("b", "api", "sha", 1.0, [], "local", status="queued", dirty=False)
    store.start_build("b", "api", "sha", 2.0, ["a"], "local")
    assert store.build("b")["dirty"] is False


def test_a_runs_db_without_the_data_column_gains_it_and_old_builds_used_no_data(
        tmp_path: Path):
    path = tmp_path / "runs.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_BUILDS)
    db.close()
    store = RunStore(str(path))
    assert store.build("old-build")["data"] == {}
    store.start_build("new-build", "cli", "def", 2.0, ["a"], "local",
                      data={"data/raw": "a" * 32, "labels.csv": "b" * 32})
    assert RunStore(str(path)).build("new-build")["data"] == {"data/raw": "a" * 32,
                                                              "labels.csv": "b" * 32}
    assert [b["data"] for b in store.builds()] == [{"data/raw": "a" * 32,
                                                    "labels.csv": "b" * 32}, {}]


def test_starting_a_queued_build_records_the_data_it_starts_with(tmp_path: Path):
    store = RunStore(str(tmp_path / "runs.db"))
    store.start_build("b", "api", "sha", 1.0, [], "local", status="queued")
    assert store.build("b")["data"] == {}
    store.start_build("b", "api", "sha", 2.0, ["a"], "local", data={"d": "c" * 32})
    store.start_build("b", "api", "sha", 3.0, ["a"], "local")
    assert store.build("b")["data"] == {"d": "c" * 32}


def test_data_versions_read_as_path_at_short_hash():
    assert data_labels({"z.csv": "1" * 32, "data/raw": "0123456789abcdef" * 2}) == [
        "data/raw@01234567", "z.csv@11111111"]
    assert data_labels({}) == []
