"""The build's lock writer: entries recorded from worker threads, the file written sparingly."""

from __future__ import annotations

import json
from pathlib import Path

from mlmake import events as ev
from mlmake.build import LockWriter
from mlmake.lockfile import Lock, LockEntry


def entry(key: str) -> LockEntry:
    return LockEntry(key, "cmd", {}, {}, None, {})


def written(path: Path) -> set[str]:
    return set(json.loads(path.read_text())["targets"]) if path.exists() else set()


def test_records_within_the_interval_wait_for_the_flush(tmp_path: Path):
    path = tmp_path / "Mlfile.lock"
    writer = LockWriter(Lock.read(str(path)), {"a", "b"}, ev.NullReporter(), interval=3600)
    writer.record("a", entry("k1"))
    assert written(path) == {"a"}  # the first record is written at once
    writer.record("b", entry("k2"))
    assert written(path) == {"a"}
    writer.flush()
    assert written(path) == {"a", "b"}


def test_only_the_kept_targets_are_written(tmp_path: Path):
    path = tmp_path / "Mlfile.lock"
    writer = LockWriter(Lock.read(str(path)), {"a"}, ev.NullReporter(), interval=0)
    writer.record("a", entry("k1"))
    writer.record("gone", entry("k2"))
    assert written(path) == {"a"} and set(writer.entries) == {"a", "gone"}


def test_a_lock_replaced_on_disk_warns_once_and_is_left_alone(tmp_path: Path):
    path = tmp_path / "Mlfile.lock"
    reporter = ev.RecordingReporter()
    writer = LockWriter(Lock.read(str(path)), {"a", "b"}, reporter, interval=0)
    writer.record("a", entry("k1"))
    path.write_text('{"targets": {}, "version": 1}\n')  # a checkout of another commit
    writer.record("b", entry("k2"))
    writer.flush()
    assert path.read_text() == '{"targets": {}, "version": 1}\n'
    assert writer.conflict is not None
    notices = [e for e in reporter.events if isinstance(e, ev.Notice)]
    assert len(notices) == 1 and "was replaced while this build ran" in notices[0].text
