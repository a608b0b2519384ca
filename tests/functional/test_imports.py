"""Implicit deps: the project-local modules a Python command imports are part of its key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import Repo

PROJECT = {
    "Mlfile": """
        [target.train]
        cmd = "python src/train.py > model.txt"
        deps = ["src/train.py"]
        outs = ["model.txt"]

        [target.score]
        cmd = "python -m pkg.score > score.txt"
        outs = ["score.txt"]

        [target.report]
        cmd = "cd reports && python make.py > ../report.txt"
        deps = ["reports/make.py"]
        outs = ["report.txt"]

        [target.plain]
        cmd = "echo plain > plain.txt"
        outs = ["plain.txt"]
    """,
    "src/train.py": """
        from helpers import features
        from helpers.sub.deep import DEPTH
        print(features.f(), DEPTH)
    """,
    "src/helpers/__init__.py": "",
    "src/helpers/features.py": "from . import util\n\ndef f():\n    return util.g()\n",
    "src/helpers/util.py": "def g():\n    return 1\n",
    "src/helpers/unused.py": "x = 1\n",
    "src/helpers/sub/__init__.py": "",
    "src/helpers/sub/deep.py": "DEPTH = 2\n",
    "pkg/__init__.py": "",
    "pkg/score.py": "from .common import SCALE\nprint(SCALE)\n",
    "pkg/common.py": "SCALE = 10\n",
    "reports/make.py": "print('report')\n",
}


# Edits below change a file's size: Python's own bytecode cache trusts a source whose size and
# mtime in whole seconds are unchanged, which a test editing within one second would trip.


def ran(r) -> set[str]:
    return {line.split()[1] for line in r.out.splitlines() if line.startswith("✓ ")}


@pytest.fixture
def built(repo: Repo) -> Repo:
    repo.write(PROJECT)
    r = repo.mlmake()
    assert r.code == 0, r.text
    repo.commit("built")
    return repo


def test_editing_an_imported_helper_reruns_exactly_its_importers(built):
    built.write({"src/helpers/util.py": "def g():\n    return 77\n"})
    r = built.mlmake("status")
    assert r.code == 1
    assert "dep src/helpers/util.py changed (imported by src/helpers/features.py)" in r.out
    assert "score" not in r.out and "plain" not in r.out
    js = built.mlmake("status", "--json").json()
    reason = js["targets"]["train"]["reasons"][0]
    assert reason["subject"] == "src/helpers/util.py"
    assert reason["imported_by"] == "src/helpers/features.py"
    r = built.mlmake()
    assert r.code == 0 and ran(r) == {"train"}
    assert built.read("model.txt") == "77 2\n"


def test_editing_a_helper_nothing_imports_runs_nothing(built):
    built.write({"src/helpers/unused.py": "x = 2\n"})
    assert built.mlmake("status").code == 0
    r = built.mlmake()
    assert r.code == 0 and ran(r) == set()


def test_packages_relative_imports_and_dash_m_are_followed(built):
    built.write({"pkg/common.py": "SCALE = 200\n"})
    r = built.mlmake()
    assert ran(r) == {"score"} and built.read("score.txt") == "200\n"
    built.write({"src/helpers/sub/__init__.py": "# touched for real\n"})
    r = built.mlmake()
    assert ran(r) == {"train"}  # a package's __init__ runs on import


def test_a_wdir_or_cd_is_honoured(repo):
    repo.write({
        "Mlfile": """
            [target.a]
            cmd = "python run.py > out.txt"
            wdir = "tools"
            outs = ["tools/out.txt"]
        """,
        "tools/run.py": "import lib\nprint(lib.V)\n",
        "tools/lib.py": "V = 1\n",
    })
    assert repo.mlmake().code == 0
    repo.write({"tools/lib.py": "V = 22\n"})
    r = repo.mlmake()
    assert ran(r) == {"a"} and repo.read("tools/out.txt") == "22\n"


def test_graph_json_lists_implicit_deps_apart(built):
    r = built.mlmake("graph", "--format", "json")
    assert r.code == 0
    nodes = {n["name"]: n for n in r.json()["nodes"]}
    assert nodes["train"]["deps"] == ["src/train.py"]
    assert {"path": "src/helpers/util.py", "imported_by": "src/helpers/features.py"} in \
        nodes["train"]["implicit_deps"]
    assert nodes["plain"]["implicit_deps"] == []


def test_track_imports_false_turns_it_off(built):
    mlfile = PROJECT["Mlfile"].replace('outs = ["model.txt"]',
                                       'outs = ["model.txt"]\ntrack_imports = false')
    built.write({"Mlfile": mlfile})
    assert built.mlmake("commit").code == 0  # records the key without the imports, no run
    built.write({"src/helpers/util.py": "def g():\n    return 9\n"})
    assert "train" not in built.mlmake("status").out
    built.write({"Mlfile": "[project]\ntrack_imports = false\n" + PROJECT["Mlfile"]})
    assert built.mlmake("commit").code == 0
    built.write({"pkg/common.py": "SCALE = 30\n"})
    assert built.mlmake("status").code == 0


def test_a_cyclic_import_and_a_syntax_error_are_no_crash(repo):
    repo.write({
        "Mlfile": """
            [target.a]
            cmd = "python a.py > out.txt"
            outs = ["out.txt"]
        """,
        "a.py": "import b\nprint(b.X)\n",
        "b.py": "import a_helper\nX = 1\n",
        "a_helper.py": "import b\n",
    })
    assert repo.mlmake().code == 0
    repo.write({"a_helper.py": "def broken(:\n"})
    r = repo.mlmake("-v", "status")
    assert r.code == 1 and "dep a_helper.py changed (imported by b.py)" in r.out
    assert "a_helper.py: cannot be parsed" in r.out
    r = repo.mlmake()
    assert r.code == 1 and "SyntaxError" in r.text  # the target runs and fails on its own


def test_a_dynamic_import_is_reported_once_by_verbose_status(repo):
    repo.write({
        "Mlfile": """
            [target.a]
            cmd = "python a.py > a.txt"
            outs = ["a.txt"]
            [target.b]
            cmd = "python a.py > b.txt"
            outs = ["b.txt"]
        """,
        "a.py": "import importlib, os\nm = importlib.import_module(os.environ.get('M', 'json'))\n"
                "print(1)\n",
    })
    assert repo.mlmake().code == 0
    r = repo.mlmake("-v", "status")
    assert r.out.count("import_module(…) cannot be resolved statically") == 1
    assert "import_module" not in repo.mlmake("status").out


def test_a_venv_python_is_followed(repo):
    venv = repo.path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    repo.write({
        "Mlfile": """
            [target.a]
            cmd = ".venv/bin/python main.py > out.txt"
            outs = ["out.txt"]
        """,
        ".gitignore": ".venv/\n",
        "main.py": "import helper\nprint(helper.N)\n",
        "helper.py": "N = 1\n",
    })
    assert repo.mlmake().code == 0
    repo.write({"helper.py": "N = 33\n"})
    r = repo.mlmake()
    assert ran(r) == {"a"} and repo.read("out.txt") == "33\n"


def test_the_import_closure_is_cached_by_content(built):
    cache = built.path / ".mlmake" / "imports.json"
    data = json.loads(cache.read_text())
    assert data["format"] == 1 and data["closures"]
    before = os.stat(cache).st_mtime_ns
    assert built.mlmake("status").code == 0
    assert os.stat(cache).st_mtime_ns == before  # nothing changed: nothing walked again
