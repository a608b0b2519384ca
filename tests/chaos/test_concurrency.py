"""A few rounds of the concurrency bench (tests/chaos/concurrency.py, which runs ≥ 50):
two runs in one project, two clones pushing to one remote (a directory, an S3 bucket), gc
during a build, served endpoints sharing targets while the user builds — no corrupt object, no lost lock entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import concurrency as bench


def test_two_runs_in_one_project_lose_nothing(tmp_path: Path) -> None:
    for i in range(2):
        assert bench.round_two_runs(tmp_path, i) == []


def test_two_clones_pushing_to_one_directory_remote_at_once(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    assert bench.round_two_pushes(tmp_path, 0, f'url = "{remote}"\n', remote) == []


def test_two_clones_pushing_to_one_bucket_at_once(tmp_path: Path, s3: dict[str, Any]) -> None:
    toml = bench.s3_toml(s3["endpoint"], s3["bucket"])
    assert bench.round_two_pushes(tmp_path, 0, toml, None) == []


def test_gc_during_a_build_keeps_what_the_lock_needs(tmp_path: Path) -> None:
    assert bench.round_gc_during_build(tmp_path, 3) == []


def test_serve_endpoints_sharing_targets_while_the_user_builds(tmp_path: Path) -> None:
    assert bench.round_serve_and_cli(tmp_path, 0) == []
