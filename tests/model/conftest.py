"""Options of the model-based test: how many random sequences, and which seeds."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlmake model-based test")
    group.addoption("--model-sequences", type=int, default=0,
                    help="run N random sequences (fresh random seeds) instead of the fixed "
                         "CI seeds")
    group.addoption("--model-seed", type=int, action="append", default=[],
                    help="replay one sequence by its seed (printed on failure)")
