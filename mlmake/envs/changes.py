"""What changed in an environment: each digest's inputs kept in words, compared on demand.

A lock entry records only an environment's digest. So that `status` can say *what* changed
(a requirements line, the Python version, the image), every digest computed is remembered
once, with the inputs that made it, under .mlmake/env-specs/DIGEST.json (small, written
atomically, never changed: the content is a function of the digest).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from mlmake.atomic import atomic_write
from mlmake.hashing import Hasher
from mlmake.model import EnvSpec

SPECS_DIR = os.path.join(".mlmake", "env-specs")


def describe(spec: EnvSpec, hasher: Hasher) -> dict[str, Any]:
    """The inputs of `spec`'s digest as plain values a person can compare."""
    d: dict[str, Any] = {"kind": spec.kind}
    if spec.kind == "venv" and spec.requirements:
        d["requirements"] = spec.requirements
        d["lines"] = _lines(hasher.abspath(spec.requirements))
        d["python"] = spec.python or platform.python_version()
        d["platform"] = f"{sys.platform} {platform.machine()}"
    elif spec.kind == "docker" and spec.dockerfile:
        d["dockerfile"] = spec.dockerfile
        d["lines"] = _lines(hasher.abspath(spec.dockerfile), comment="#")
        d["network"] = spec.network
    else:
        d["image"] = spec.image or ""
        d["network"] = spec.network
    return d


def remember(spec: EnvSpec, digest: str, hasher: Hasher) -> None:
    """Keep `digest`'s inputs, once; a project that cannot be written to is left alone."""
    path = os.path.join(hasher.root, SPECS_DIR, digest + ".json")
    if os.path.exists(path):
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, json.dumps(describe(spec, hasher), sort_keys=True))
    except OSError:
        pass


def recalled(root: str, digest: str) -> dict[str, Any] | None:
    """The inputs remembered for `digest`, or None."""
    try:
        with open(os.path.join(root, SPECS_DIR, digest + ".json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def explain(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What differs from `old` to `new`, in one short line ('' when it is not known)."""
    if old is None:
        return ""
    if old.get("kind") != new.get("kind"):
        return f"{old.get('kind')} → {new.get('kind')}"
    bits: list[str] = []
    for key, label in (("requirements", "requirements file"), ("dockerfile", "Dockerfile"),
                       ("image", "image"), ("python", "Python"), ("platform", "platform"),
                       ("network", "network")):
        if key in old and old.get(key) != new.get(key):
            bits.append(f"{label} {old.get(key)} → {new.get(key)}")
    before, after = old.get("lines") or [], new.get("lines") or []
    if before != after:
        gone = [line for line in before if line not in after]
        added = [line for line in after if line not in before]
        what = new.get("requirements") or new.get("dockerfile") or "spec"
        changes = [f"-{line}" for line in gone] + [f"+{line}" for line in added]
        if changes:
            shown = ", ".join(changes[:4]) + (f", … ({len(changes) - 4} more)"
                                              if len(changes) > 4 else "")
            bits.append(f"{what}: {shown}")
        else:
            bits.append(f"{what}: lines reordered")
    if not bits and new.get("kind") == "docker":
        bits.append("build context changed")
    if not bits and new.get("kind") == "venv":
        bits.append("a file the requirements include changed")
    return "; ".join(bits)


def _lines(path: str, comment: str = "#") -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        line = line.split(" " + comment, 1)[0].strip() if not line.lstrip().startswith(
            comment) else ""
        if line:
            out.append(line)
    return out
