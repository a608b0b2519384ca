"""git.py: pygit2's errors become answers (None) or a RevisionError naming the revision."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlmake import git
from mlmake.errors import GitError, RevisionError


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "Mlfile.lock").write_text('{"targets": {}}\n')
    _git(tmp_path, "add", "Mlfile.lock")
    _git(tmp_path, "commit", "-q", "-m", "one")
    return tmp_path


@pytest.mark.parametrize("rev", ["no-such-branch", "HEAD~5", "HEAD^{tree}", "@@@", ""])
def test_an_unknown_revision_is_a_revision_error_naming_it(repo: Path, rev: str):
    with pytest.raises(RevisionError) as caught:
        git.rev_sha(str(repo), rev)
    assert f"unknown revision '{rev}'" in str(caught.value)
    assert isinstance(caught.value, GitError) and caught.value.exit_code == 2


def test_a_revision_outside_git_is_a_revision_error(tmp_path: Path):
    with pytest.raises(RevisionError, match="not inside a Git repository"):
        git.rev_sha(str(tmp_path), "HEAD")


def test_a_broken_head_reads_as_no_commit_rather_than_a_crash(repo: Path):
    assert git.head_commit(str(repo)) == _git(repo, "rev-parse", "HEAD")
    (repo / ".git" / "HEAD").write_text("garbage\n")
    assert git.head_commit(str(repo)) is None
    assert git.is_dirty(str(repo)) is None


def test_lock_history_skips_a_tag_on_a_tree(repo: Path):
    _git(repo, "tag", "a-tree", _git(repo, "rev-parse", "HEAD^{tree}"))
    assert [text for _, text in git.lock_history(str(repo), str(repo / "Mlfile.lock"))] == \
        ['{"targets": {}}\n']
