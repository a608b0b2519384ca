"""Starter projects: the templates `mlmake init` copies (shipped as mlmake.templates)."""

from __future__ import annotations

import os
import shutil

from mlmake.errors import UsageError

MLFILE = "Mlfile"


def init(dest: str, template: str = "minimal") -> list[str]:
    """Copy a starter project into `dest`; refuses to overwrite an existing Mlfile."""
    src = _template_dir(template)
    if os.path.exists(os.path.join(dest, MLFILE)):
        raise UsageError(f"'{os.path.join(dest, MLFILE)}' already exists; mlmake init "
                         "never overwrites it.")
    written = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, src)
        for f in filenames:
            if f.endswith((".pyc", ".pyo")) or f == "__init__.py" and rel == ".":
                continue
            target = os.path.abspath(os.path.join(dest, rel, f))
            if os.path.exists(target):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(dirpath, f), target)
            shutil.copymode(os.path.join(dirpath, f), target)
            written.append(os.path.relpath(target, dest))
    return sorted(written)


def templates() -> list[str]:
    """Names of the starter templates `init` knows."""
    base = os.path.dirname(_template_dir(None))
    return sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d, MLFILE)))


def _template_dir(name: str | None) -> str:
    import mlmake.templates as pkg

    base = os.path.dirname(os.path.abspath(pkg.__file__))
    if name is None:
        return os.path.join(base, "minimal")
    path = os.path.join(base, name)
    if not os.path.isfile(os.path.join(path, MLFILE)):
        known = sorted(d for d in os.listdir(base) if os.path.isfile(os.path.join(base, d,
                                                                                  MLFILE)))
        raise UsageError(f"unknown template '{name}'; choose one of {', '.join(known)}.")
    return path
