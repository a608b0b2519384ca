"""atomic_write: unique temp names across threads, whole files or none, leftovers swept."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from mlmake import atomic


def test_temp_names_are_unique_across_threads_of_one_process(tmp_path: Path):
    names: list[str] = []
    lock = threading.Lock()

    def pick() -> None:
        got = [atomic.temp_name(str(tmp_path / "f")) for _ in range(200)]
        with lock:
            names.extend(got)

    threads = [threading.Thread(target=pick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == len(names) == 1600


def test_threads_writing_one_file_leave_one_whole_version_and_no_temps(tmp_path: Path):
    tmp_path = tmp_path / "d"
    tmp_path.mkdir()
    path = str(tmp_path / "lock")
    versions = [bytes([65 + i]) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=lambda v=v: [atomic.atomic_write(path, v, durable=True)
                                                    for _ in range(20)]) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Path(path).read_bytes() in versions
    assert os.listdir(tmp_path) == ["lock"]


@pytest.mark.parametrize("durable", [False, True])
def test_two_threads_writing_one_path_at_once_both_succeed_and_one_version_wins(
        tmp_path: Path, durable: bool):
    tmp_path = tmp_path / "d"
    tmp_path.mkdir()
    path = str(tmp_path / "runcache-entry")
    versions = [b"a" * 300_000, b"b" * 300_000]
    both_open = threading.Barrier(2, timeout=10)
    temps: list[list[str]] = []
    errors: list[BaseException] = []

    def write(version: bytes) -> None:
        def fill(fh: BinaryIO) -> None:
            fh.write(version[:1000])
            both_open.wait()  # the other thread holds its own temp file right now
            temps.append(sorted(os.listdir(tmp_path)))
            both_open.wait()
            fh.write(version[1000:])
        try:
            atomic.write_with(path, fill, durable=durable)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(temps) == 2 and len(temps[0]) == 2  # two temp names side by side, no clash
    assert all(atomic.TEMP_MARK in n for n in temps[0])
    assert Path(path).read_bytes() in versions  # one whole version, never a mix
    assert os.listdir(tmp_path) == ["runcache-entry"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path):
    tmp_path = tmp_path / "d"
    tmp_path.mkdir()
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def boom(fh: object) -> None:
        fh.write(b"half")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    try:
        atomic.write_with(str(path), boom)
    except OSError:
        pass
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


def test_sweep_removes_dead_writers_temps_and_keeps_live_ones(tmp_path: Path):
    dead = tmp_path / "obj.mlmake-tmp-999999999-1-ab"
    live = tmp_path / f"obj.mlmake-tmp-{os.getppid()}-1-ab"
    user = tmp_path / "notes.tmp"  # a user's file in the work tree
    for p in (dead, live, user):
        p.write_text("x")
    assert atomic.sweep(str(tmp_path), owned=False) == 1
    assert not dead.exists() and live.exists() and user.exists()


def test_the_mode_is_kept_or_given(tmp_path: Path):
    path = tmp_path / "hook"
    atomic.atomic_write(str(path), b"#!/bin/sh\n", 0o755)
    assert path.stat().st_mode & 0o777 == 0o755
    atomic.atomic_write(str(path), b"#!/bin/sh\necho\n")
    assert path.stat().st_mode & 0o777 == 0o755
