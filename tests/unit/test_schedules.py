"""Schedules on a fake clock: every, cron, on_commit and watch fire when due, and only then."""

from __future__ import annotations

import datetime as dt
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlmake.errors import MlfileError
from mlmake.keylock import KeyClaim
from mlmake.project import Project
from mlmake.serve.schedules import Schedules, next_cron


def project(tmp_path: Path, schedules: str) -> Project:
    (tmp_path / "Mlfile").write_text(textwrap.dedent("""
        [target.a]
        cmd = "echo a > a.txt"
        deps = ["data"]
        outs = ["a.txt"]

        [endpoint.e]
        targets = ["a"]
        params = ["train.lr"]
    """) + textwrap.dedent(schedules))
    (tmp_path / "params.toml").write_text("[train]\nlr = 0.1\n")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "one.csv").write_text("1\n")
    return Project(str(tmp_path))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for the run queue: records what was fired and says which runs are pending."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, dict[str, Any], str | None, str]] = []
        self.pending: set[str] = set()

    def submit(self, endpoint: str, params: dict[str, Any], rev: str | None,
               trigger: str) -> str:
        self.fired.append((endpoint, params, rev, trigger))
        return f"run{len(self.fired)}"


START = dt.datetime(2030, 1, 1, 2, 59, 30).astimezone().timestamp()


def test_every_fires_each_interval_and_not_while_its_last_run_is_pending(tmp_path):
    p = project(tmp_path, """
        [schedule.tick]
        endpoint = "e"
        every = "10s"
        params = { "train.lr" = 0.5 }
    """)
    clock, rec = Clock(START), Recorder()
    s = Schedules(p, rec.submit, rec.pending.__contains__, clock)
    assert s.tick(START + 9) == []
    assert s.tick(START + 10) == ["run1"]
    assert rec.fired == [("e", {"train.lr": 0.5}, None, "schedule:tick")]
    rec.pending.add("run1")
    assert s.tick(START + 20) == []  # still running: skipped, not queued twice
    rec.pending.clear()
    assert s.tick(START + 30) == ["run2"]
    assert s.tick(START + 95) == ["run3"]  # fell behind: one run, not a burst
    assert s.tick(START + 96) == []
    assert s.describe()[0]["skipped"] == 1 and s.describe()[0]["last_run"] == "run3"


def test_cron_fires_at_the_times_it_names_in_local_time(tmp_path):
    p = project(tmp_path, """
        [schedule.nightly]
        endpoint = "e"
        cron = "0 3 * * *"
    """)
    rec = Recorder()
    s = Schedules(p, rec.submit, clock=Clock(START))
    three = dt.datetime(2030, 1, 1, 3, 0).astimezone().timestamp()
    assert s.describe()[0]["next"] == three
    assert s.tick(three - 1) == []
    assert s.tick(three) == ["run1"]
    assert s.describe()[0]["next"] == next_cron("0 3 * * *", three) == three + 86400


def test_on_commit_fires_once_per_new_commit_with_that_commit(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "T")
    p = project(tmp_path, """
        [schedule.pushed]
        endpoint = "e"
        on_commit = "main"
        poll = "1s"
    """)
    git("add", "-A")
    git("commit", "-qm", "one")
    rec = Recorder()
    s = Schedules(p, rec.submit, clock=Clock(START))
    assert s.tick(START + 1) == []  # the commit it started with is not new
    (tmp_path / "x.txt").write_text("x")
    git("add", "-A")
    git("commit", "-qm", "two")
    assert s.tick(START + 1.5) == []  # not polled before `poll`
    assert s.tick(START + 2) == ["run1"]
    assert rec.fired[0][2] == git("rev-parse", "HEAD")
    assert s.tick(START + 3) == []


def test_watch_fires_when_content_changes_not_when_touched(tmp_path):
    p = project(tmp_path, """
        [schedule.inbox]
        endpoint = "e"
        watch = ["data"]
        poll = "1s"
    """)
    rec = Recorder()
    s = Schedules(p, rec.submit, clock=Clock(START))
    assert s.tick(START + 1) == []
    f = tmp_path / "data" / "one.csv"
    f.touch()
    assert s.tick(START + 2) == []
    (tmp_path / "data" / "two.csv").write_text("2\n")
    assert s.tick(START + 3) == ["run1"]
    assert s.tick(START + 4) == []


def test_a_schedule_param_outside_the_endpoint_allow_list_is_an_mlfile_error(tmp_path):
    with pytest.raises(MlfileError, match=r"\[schedule.s\] params sets 'train.n'"):
        _ = project(tmp_path, """
            [schedule.s]
            endpoint = "e"
            every = "1h"
            params = { train = { n = 1 } }
        """).pipeline


def test_a_key_claim_makes_the_second_builder_wait_for_the_first(tmp_path):
    first = KeyClaim(str(tmp_path / "keys"), "k1")
    assert first.acquire() is False
    order: list[str] = []

    def second() -> None:
        claim = KeyClaim(str(tmp_path / "keys"), "k1")
        waited = claim.acquire(on_wait=lambda: order.append("waiting"))
        order.append("second has it")
        assert waited
        claim.release()

    t = threading.Thread(target=second)
    t.start()
    while not order:
        time.sleep(0.01)
    order.append("first releases")
    first.release()
    t.join(5)
    assert order == ["waiting", "first releases", "second has it"]
    assert not (tmp_path / "keys" / "k1.lock").exists()
