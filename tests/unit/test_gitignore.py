"""The managed .gitignore block: created, updated in place, removed; user lines untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlmake.gitignore import BEGIN, END, update


def block(*outs: str) -> str:
    return "\n".join([BEGIN, *(f"/{o}" for o in outs), END]) + "\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "proj").mkdir()
    return tmp_path / "proj"


def read(root: Path) -> str:
    return (root / ".gitignore").read_bytes().decode()


def test_block_is_created_with_sorted_anchored_outs(root: Path):
    assert update(str(root), ["models", "data/prepared", "models"]) is True
    assert read(root) == block("data/prepared", "models")


def test_block_is_appended_after_user_lines(root: Path):
    (root / ".gitignore").write_text("*.pyc\n__pycache__/\n")
    update(str(root), ["models"])
    assert read(root) == "*.pyc\n__pycache__/\n\n" + block("models")


def test_block_is_updated_in_place(root: Path):
    user_before = "# editor files\n*.swp\n\n"
    user_after = "\n# more user lines\n.env\n"
    (root / ".gitignore").write_text(user_before + block("old") + user_after)
    assert update(str(root), ["new/a", "new/b"]) is True
    assert read(root) == user_before + block("new/a", "new/b") + user_after


def test_unchanged_block_is_not_rewritten(root: Path):
    update(str(root), ["models"])
    mtime = os.stat(root / ".gitignore").st_mtime_ns
    assert update(str(root), ["models"]) is False
    assert os.stat(root / ".gitignore").st_mtime_ns == mtime


@pytest.mark.parametrize("user", [
    "*.pyc\n",
    "  indented   \n!keep.me\n# comment with trailing space \n",
    "ünïcode/\n\n\n/middle blank lines/\n",
    "/models\n",  # the same path outside the block is the user's and stays
])
def test_user_lines_survive_add_and_remove_byte_for_byte(root: Path, user: str):
    (root / ".gitignore").write_bytes(user.encode())
    update(str(root), ["models"])
    assert read(root).startswith(user)
    update(str(root), ["models", "data"])
    assert read(root).startswith(user)
    update(str(root), [])
    assert read(root) == user


def test_block_is_removed_when_there_are_no_outs(root: Path):
    (root / ".gitignore").write_text("*.pyc\n\n" + block("models") + "\n.env\n")
    assert update(str(root), []) is True
    assert BEGIN not in read(root) and "/models" not in read(root)
    assert read(root).startswith("*.pyc\n") and read(root).endswith("\n.env\n")


def test_no_outs_and_no_file_creates_nothing(root: Path):
    assert update(str(root), []) is False
    assert not (root / ".gitignore").exists()


def test_update_leaves_no_temporary_files(root: Path):
    update(str(root), ["a"])
    update(str(root), ["b"])
    assert os.listdir(root) == [".gitignore"]


def test_crlf_user_lines_are_kept_byte_for_byte(root: Path):
    user = b"*.pyc\r\n.env\r\n"
    (root / ".gitignore").write_bytes(user)
    update(str(root), ["models"])
    assert (root / ".gitignore").read_bytes().startswith(user)


def test_crlf_file_gets_a_crlf_block_and_round_trips(root: Path):
    user = b"*.pyc\r\n.env\r\n"
    (root / ".gitignore").write_bytes(user)
    update(str(root), ["models"])
    assert (root / ".gitignore").read_bytes() == user + b"\r\n" + block("models").replace(
        "\n", "\r\n").encode()
    update(str(root), [])
    assert (root / ".gitignore").read_bytes() == user


@pytest.mark.parametrize("after", [".env", ".env\n\n\n", ".env\r\n", "\n"])
def test_lines_after_the_block_keep_their_bytes(root: Path, after: str):
    """No final newline, trailing blank lines and line endings after the block stay as they are."""
    before = "*.pyc\n\n"
    (root / ".gitignore").write_bytes((before + block("old") + after).encode())
    assert update(str(root), ["new"]) is True
    assert read(root) == before + block("new") + after


@pytest.mark.parametrize("user", ["*.pyc", "*.pyc\n\n\n", "\n", "a\r\nb\nc\r\n"])
def test_adding_then_removing_the_block_restores_the_file(root: Path, user: str):
    (root / ".gitignore").write_bytes(user.encode())
    update(str(root), ["models"])
    assert BEGIN in read(root)
    update(str(root), [])
    expected = user if user.endswith("\n") else user + "\n"  # the last line had to end
    assert read(root) == expected


def test_no_outs_and_no_block_leaves_the_file_untouched(root: Path):
    (root / ".gitignore").write_bytes(b"*.pyc\n\n\n.env")
    assert update(str(root), []) is False
    assert read(root) == "*.pyc\n\n\n.env"
