"""The managed block of the project's .gitignore that lists cached outs."""

from __future__ import annotations

import os
import re

from mlmake.atomic import atomic_write

BEGIN = "# >>> mlmake outputs (managed by mlmake; edits inside this block are replaced)"
END = "# <<< mlmake outputs"
_LINE = re.compile(r"[^\n]*\n|[^\n]+")


def update(root: str, outs: list[str]) -> bool:
    """Make the block list exactly `outs` (anchored at the root); True if the file changed.

    Only the block's own lines change: every user line keeps its bytes, its line ending
    (CRLF or LF) and the file's final newline or lack of one. The block uses the file's
    dominant line ending, and when appended it is set off by one blank line, which removing
    the block removes again, so adding and then removing a block restores the file.
    """
    path = os.path.join(root, ".gitignore")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    lines = _LINE.findall(text)
    eol = _dominant_eol(lines)
    block = [BEGIN + eol] + [f"/{o}{eol}" for o in sorted(set(outs))] + [END + eol] \
        if outs else []
    span = _find_block(lines)
    if span is not None:
        before, after = lines[:span[0]], lines[span[1] + 1:]
        if not block and before and not before[-1].strip():
            before = before[:-1]  # the blank line that set the block off
        new_lines = before + block + after
    elif block:
        before = list(lines)
        if before:
            if not before[-1].endswith("\n"):
                before[-1] += eol
            before.append(eol)
        new_lines = before + block
    else:
        return False
    new = "".join(new_lines)
    if new == text:
        return False
    atomic_write(path, new.encode("utf-8", "surrogateescape"))
    return True


def _dominant_eol(lines: list[str]) -> str:
    crlf = sum(1 for line in lines if line.endswith("\r\n"))
    lf = sum(1 for line in lines if line.endswith("\n")) - crlf
    return "\r\n" if crlf > lf else "\n"


def _find_block(lines: list[str]) -> tuple[int, int] | None:
    """Indexes of the BEGIN and END lines of the first complete block, or None."""
    bare = [line.rstrip("\r\n") for line in lines]
    if BEGIN not in bare:
        return None
    b = bare.index(BEGIN)
    try:
        return b, bare.index(END, b + 1)
    except ValueError:
        return None
