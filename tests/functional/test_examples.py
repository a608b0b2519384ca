"""The shipped example pipeline and templates build end to end and are then up to date."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.needs("sklearn", "the examples need scikit-learn "
                                "(pip install -e '.[examples]')")


def test_digits_example_builds_and_is_then_up_to_date(repo):
    shutil.copytree(ROOT / "examples" / "digits", repo.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".mlmake", "data", "models", "metrics",
                                                  "plots", "Mlfile.lock"))
    repo.commit("example")
    r = repo.mlmake("-q", timeout=300)
    assert r.code == 0, r.text
    assert "ran 7" in r.out
    scores = json.loads(repo.read("metrics/eval.json"))
    assert scores  # per-model accuracies
    assert repo.exists("plots/confusion.png")
    assert repo.mlmake("status").code == 0


def test_sklearn_template_builds(repo):
    assert repo.mlmake("init", "-t", "sklearn").code == 0
    r = repo.mlmake("-q", timeout=300)
    assert r.code == 0, r.text
    assert repo.mlmake("status").code == 0
