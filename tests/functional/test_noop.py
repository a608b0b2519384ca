"""The no-op answer: `mlmake status` on an unchanged project answers from stats alone, and
any change a full check would see sends it back to the full check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Repo

PROJECT = {
    "Mlfile": """
        [target.prep]
        cmd = "mkdir -p data && cat raw/*.txt > data/all.txt && cp -r raw data/copy"
        deps = ["raw/*.txt"]
        outs = ["data/all.txt", "data/copy"]

        [target.train]
        cmd = "python train.py > model.txt"
        deps = ["train.py", "data/all.txt"]
        params = ["train"]
        outs = ["model.txt"]

        [target.report]
        cmd = "cat model.txt data/copy/a.txt > report.txt"
        deps = ["model.txt", "data/copy"]
        outs = ["report.txt"]
    """,
    "params.toml": "[train]\nlr = 0.1\n",
    "raw/a.txt": "a\n",
    "raw/b.txt": "b\n",
    "train.py": "import helper\nprint(helper.V)\n",
    "helper.py": "V = 1\n",
}

# mlmake.cli.main ends the process (after the atexit handlers): the probe reports from one
PROBE = ("import atexit, sys; sys.argv = ['mlmake', *sys.argv[1:]]\n"
         "atexit.register(lambda: print('engine' if 'mlmake.project' in sys.modules or "
         "'click' in sys.modules else 'noop', file=sys.stderr, flush=True))\n"
         "from mlmake.cli import main\n"
         "main()\n")


def age(root: Path) -> None:
    """Date every file back, as if the build had been a while ago (a fresh file is never
    trusted by its stats, as Git does for its index)."""
    past = time.time() - 60
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirpath.split(os.sep):
            continue
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (past, past), follow_symlinks=False)


def status(repo: Repo, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, which path answered: 'noop' or 'engine')."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", PROBE, *args, "status"], cwd=repo.path,
                       capture_output=True, text=True, env=env)
    how = r.stderr.strip().splitlines()[-1]
    return r.returncode, r.stdout, how


@pytest.fixture
def built(repo: Repo) -> Repo:
    repo.write(PROJECT)
    assert repo.mlmake().code == 0
    age(repo.path)
    assert status(repo)[2] == "engine"  # the full check records its answer
    return repo


def test_an_unchanged_project_is_answered_without_loading_the_engine(built):
    code, out, how = status(built)
    assert (code, out, how) == (0, "everything is up to date\n", "noop")
    assert status(built, "-q")[:3] == (0, "", "noop")
    assert status(built, "-v")[2] == "engine"  # verbose asks for more than the answer


@pytest.mark.parametrize("change, stale", [
    (lambda p: (p / "raw" / "a.txt").write_text("A\n"), True),
    (lambda p: (p / "raw" / "c.txt").write_text("c\n"), True),  # a new glob match
    (lambda p: (p / "helper.py").write_text("V = 2\n"), True),  # an implicit dep
    (lambda p: (p / "params.toml").write_text("[train]\nlr = 0.2\n"), True),
    (lambda p: (p / "model.txt").unlink(), True),
    (lambda p: (p / "data" / "copy" / "a.txt").unlink(), True),  # inside a directory out
    (lambda p: (p / "Mlfile").write_text((p / "Mlfile").read_text() + "\n"), False),
    (lambda p: os.utime(p / "train.py"), False),  # touched: the full check, same answer
    (lambda p: (p / "Mlfile.lock").write_text((p / "Mlfile.lock").read_text()), False),
])
def test_any_change_goes_back_to_the_full_check(built, change, stale):
    change(built.path)
    code, out, how = status(built)
    assert how == "engine"
    assert code == (1 if stale else 0), out


def test_a_new_default_params_file_is_seen(built):
    (built.path / "params.yaml").write_text("train:\n  lr: 0.5\n")
    assert status(built)[2] == "engine"
