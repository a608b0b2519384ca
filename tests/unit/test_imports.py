"""Which programs a command runs, and which project files they import."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmake.hashing import Hasher
from mlmake.imports import Entry, Tracker, programs
from mlmake.model import Target


def target(cmd: str, wdir: str = ".") -> Target:
    return Target(name="t", base="t", cmd=cmd, wdir=wdir)


@pytest.mark.parametrize("cmd, expected", [
    ("python src/train.py --lr 0.1", [Entry("src/train.py", None, ("src",))]),
    ("python3 -u src/train.py", [Entry("src/train.py", None, ("src",))]),
    ("python3.11 -W ignore x.py", [Entry("x.py", None, (".",))]),
    ("python -m pkg.mod arg", [Entry(None, "pkg.mod", (".",))]),
    ("PYTHONPATH=lib python run.py", [Entry("run.py", None, (".", "lib"))]),
    ("uv run python run.py", [Entry("run.py", None, (".",))]),
    ("uv run run.py", [Entry("run.py", None, (".",))]),
    (".venv/bin/python a.py && python b.py | tee x", [Entry("a.py", None, (".",)),
                                                      Entry("b.py", None, (".",))]),
    ("python -c 'import x'", []),
    ("echo python a.py", []),
    ("python /usr/lib/x.py", []),
    ("python ../outside.py", []),
])
def test_programs_of_a_command(cmd: str, expected: list[Entry], monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert programs(target(cmd), "/project") == expected


def test_wdir_moves_the_script_and_the_module_path():
    assert programs(target("python run.py", "tools"), "/p") == [
        Entry("tools/run.py", None, ("tools",))]
    assert programs(target("python -m m", "tools"), "/p") == [Entry(None, "m", ("tools",))]


def test_closure_follows_local_modules_only(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "main.py").write_text("import os, json\nimport pkg.a\nfrom pkg import b\n")
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from .b import thing\nimport numpy\n")
    (tmp_path / "pkg" / "b.py").write_text("thing = 1\n")
    (tmp_path / "pkg" / "c.py").write_text("never imported\n")
    hasher = Hasher(str(tmp_path))
    tr = Tracker(str(tmp_path), hasher.path, None)
    c = tr.closure(Entry("main.py", None, (".",)))
    assert set(c.files) == {"main.py", "pkg/__init__.py", "pkg/a.py", "pkg/b.py"}
    assert c.files["pkg/a.py"] == "main.py"
