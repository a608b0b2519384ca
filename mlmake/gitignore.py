"""The managed block of the project's .gitignore that lists cached outs."""

from __future__ import annotations

import os

BEGIN = "# >>> mlmake outputs (managed by mlmake; edits inside this block are replaced)"
END = "# <<< mlmake outputs"


def update(root: str, outs: list[str]) -> bool:
    """Make the block list exactly `outs` (anchored at the root); True if the file changed."""
    path = os.path.join(root, ".gitignore")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    lines = text.splitlines()
    if BEGIN in lines and END in lines[lines.index(BEGIN):]:
        b = lines.index(BEGIN)
        e = lines.index(END, b)
        before, after = lines[:b], lines[e + 1:]
    else:
        before, after = lines, []
    block = [BEGIN] + [f"/{o}" for o in sorted(set(outs))] + [END] if outs else []
    if before and before[-1].strip() and block:
        block = [""] + block if not (before and before[-1] == "") else block
    new_lines = before + block + after
    while new_lines and not new_lines[-1].strip():
        new_lines.pop()
    new = "\n".join(new_lines) + ("\n" if new_lines else "")
    if new == text:
        return False
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(new)
    os.replace(tmp, path)
    return True
