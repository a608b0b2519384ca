"""The suite's optional-part plumbing (tests/conftest.py): a test that needs an absent part
skips with its reason, and under MLMAKE_REQUIRE_ALL=1 (as .ci/run sets it) fails instead, and
any skip fails the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

PROBE = '''
import pytest
from conftest import missing, need

@pytest.mark.needs("no_such_part_xyz", "the probe needs no_such_part_xyz")
def test_marked():
    pass

def test_called():
    need("no_such_part_xyz", "the probe calls for no_such_part_xyz")

def test_missing_tool():
    missing("the probe's tool is not installed")

def test_present():
    assert need("json", "json is always here").dumps(1) == "1"
'''


def _run(tmp_path: Path, probe: str, require_all: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(probe)
    env = {k: v for k, v in os.environ.items() if k != "MLMAKE_REQUIRE_ALL"}
    if require_all:
        env["MLMAKE_REQUIRE_ALL"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                           "-o", "addopts=", "test_probe.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_an_absent_part_skips_with_its_reason(tmp_path):
    r = _run(tmp_path, PROBE, require_all=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 3 skipped" in r.stdout, r.stdout
    for reason in ("the probe needs no_such_part_xyz", "the probe calls for no_such_part_xyz",
                   "No module named 'no_such_part_xyz'", "the probe's tool is not installed"):
        assert reason in r.stdout, r.stdout


def test_under_require_all_an_absent_part_fails_naming_it(tmp_path):
    r = _run(tmp_path, PROBE, require_all=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 failed, 1 passed, 1 error" in r.stdout, r.stdout  # the marked one fails in setup
    assert "the probe needs no_such_part_xyz" in r.stdout
    assert "MLMAKE_REQUIRE_ALL=1: every optional part must be installed" in r.stdout
    assert "During handling" not in r.stdout


def test_under_require_all_any_skip_fails_the_run(tmp_path):
    probe = ("import pytest\n\ndef test_skips():\n    pytest.skip('no setpriv here')\n\n"
             "def test_passes():\n    pass\n")
    assert _run(tmp_path, probe, require_all=False).returncode == 0
    r = _run(tmp_path, probe, require_all=True)
    assert r.returncode == pytest.ExitCode.TESTS_FAILED, r.stdout + r.stderr
    assert "1 passed, 1 skipped" in r.stdout and "no setpriv here" in r.stdout, r.stdout
    assert "error: 1 test(s) skipped under MLMAKE_REQUIRE_ALL=1" in r.stdout, r.stdout
