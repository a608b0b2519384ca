"""A real project in a temporary Git repository, driven in-process through `mlmake.Project`.

The decision tests (plan, build, store, sync, checkout) use `ws`: real files, real `git`, real
subprocesses for the targets' commands, and a reporter that records every event.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import mlmake
from mlmake.events import (
    BuildFinished,
    BuildStarted,
    RecordingReporter,
    TargetFinished,
    TargetStarted,
)
from mlmake.lockfile import Lock

# prepare upper-cases raw.txt, so "hello" and "HELLO" prepare to the same bytes (early cutoff);
# train puts its param into model.txt; evaluate only measures model.txt.
CHAIN = {
    "Mlfile": """\
        [target.prepare]
        cmd = "tr a-z A-Z < raw.txt > prepared.txt"
        deps = ["raw.txt"]
        outs = ["prepared.txt"]

        [target.train]
        cmd = "cat prepared.txt > model.txt && echo lr=${train.lr} >> model.txt"
        deps = ["prepared.txt"]
        params = ["train"]
        outs = ["model.txt"]

        [target.evaluate]
        cmd = "wc -c < model.txt > score.txt"
        deps = ["model.txt"]
        outs = ["score.txt"]
        """,
    "params.toml": "[train]\nlr = 0.1\n",
    "raw.txt": "hello\n",
}


def out_hash(entry: Any, path: str) -> str:
    """The hash a lock entry records for out `path`, whether out records are dicts or
    typed records with a `.hash`."""
    rec = entry.outs[path]
    return rec["hash"] if isinstance(rec, dict) else rec.hash


def trace(rec: RecordingReporter) -> list[str]:
    """The recorded build as lines: `build`, `start NAME`, `NAME STATUS`, `end` (output lines
    and notices left out), in the order they were emitted."""
    lines: list[str] = []
    for e in rec.events:
        if isinstance(e, BuildStarted):
            lines.append("build")
        elif isinstance(e, TargetStarted):
            lines.append(f"start {e.name}")
        elif isinstance(e, TargetFinished):
            lines.append(f"{e.outcome.target} {e.outcome.status}")
        elif isinstance(e, BuildFinished):
            lines.append("end")
    return lines


def started(rec: RecordingReporter) -> list[str]:
    """Targets whose command was started, in order."""
    return [e.name for e in rec.of(TargetStarted)]


def statuses(result: Any) -> dict[str, str]:
    """target → outcome status of a BuildResult."""
    return {n: o.status for n, o in result.outcomes.items()}


def kinds(plan: Any, name: str) -> list[str]:
    """The kinds of a planned target's reasons, in order."""
    return [r.kind for r in plan.states[name].reasons]


class Workspace:
    """A temporary Git repository holding an mlmake project."""

    def __init__(self, root: Path, init: bool = True) -> None:
        self.root = root
        if init:
            root.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q", "-b", "main", "--template=")  # no sample hooks
        self.git("config", "user.email", "test@example.com")
        self.git("config", "user.name", "Test")
        self.git("config", "commit.gpgsign", "false")

    # -- files and git ----------------------------------------------------------------------
    def write(self, files: Mapping[str, str | bytes]) -> None:
        """Write files (text is dedented) relative to the root."""
        for rel, content in files.items():
            p = self.root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_file():
                p.unlink()  # maybe a link into the store: replace it, never write through
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(textwrap.dedent(content))

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def remove(self, rel: str) -> None:
        p = self.root / rel
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()

    def git(self, *args: str) -> str:
        r = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True,
                           check=False)
        assert r.returncode == 0, f"git {' '.join(args)}: {r.stderr}"
        return r.stdout

    def commit(self, msg: str = "commit") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", msg)
        return self.git("rev-parse", "HEAD").strip()

    def clone(self, dest: Path) -> Workspace:
        """A fresh `git clone` of this repository (committed files only, no .mlmake/)."""
        subprocess.run(["git", "clone", "-q", "--template=", str(self.root), str(dest)],
                       check=True, capture_output=True)
        return Workspace(dest, init=False)

    # -- mlmake -----------------------------------------------------------------------------
    def project(self) -> Any:
        """A fresh `mlmake.Project` (it reads the Mlfile and params as they are now)."""
        return mlmake.Project(str(self.root))

    def run(self, *targets: str, **options: Any) -> tuple[Any, RecordingReporter]:
        """`Project.run` with a recording reporter, one job at a time unless told (so the
        events come in a deterministic order)."""
        rec = RecordingReporter()
        options.setdefault("jobs", 1)
        result = self.project().run(targets, reporter=rec, **options)
        return result, rec

    def status(self, *targets: str, **options: Any) -> Any:
        return self.project().status(targets, **options)

    def lock(self) -> Lock:
        return Lock.read(str(self.root / "Mlfile.lock"))

    def out_hash(self, target: str, path: str) -> str:
        return out_hash(self.lock().entries[target], path)

    def set_param(self, value: Any) -> None:
        self.write({"params.toml": f"[train]\nlr = {value}\n"})


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """An empty Git repository; write an Mlfile into it."""
    return Workspace(tmp_path / "repo")


@pytest.fixture
def chain(ws: Workspace) -> Workspace:
    """The prepare → train → evaluate project (see CHAIN), committed, nothing built."""
    ws.write(CHAIN)
    ws.commit("chain")
    return ws


@pytest.fixture
def built(chain: Workspace) -> Workspace:
    """The chain built once and committed with its lock."""
    result, _ = chain.run()
    assert result.ok, result.outcomes
    chain.commit("built")
    return chain



def corrupt(path: str | Path) -> None:
    """Overwrite a file in place (through every hard link to it) with other bytes of the
    same size, as a bad disk or a stray write would."""
    p = Path(path)
    data = p.read_bytes()
    os.chmod(p, 0o644)
    p.write_bytes(bytes(b ^ 0x20 for b in data) if data else b"x")
