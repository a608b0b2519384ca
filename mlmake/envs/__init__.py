"""Environment specs: the digest that enters target keys (building and running live beside)."""

from __future__ import annotations

import platform
import sys

from mlmake.hashing import Hasher, canonical, hash_bytes
from mlmake.model import EnvSpec

ENV_FORMAT = 1


def spec_digest(spec: EnvSpec, hasher: Hasher) -> str:
    """Hash of everything that defines an environment's content.

    venv: the requirements file, the interpreter version and the platform; docker: the
    Dockerfile and its build context; image: the image reference.
    """
    parts: list[object] = ["mlmake/env", ENV_FORMAT, spec.kind]
    if spec.kind == "venv":
        assert spec.requirements
        parts += [hasher.file(spec.requirements), spec.python or platform.python_version(), sys.platform, platform.machine()]
    elif spec.kind == "docker":
        assert spec.dockerfile and spec.context
        parts += [hasher.file(spec.dockerfile), hasher.path(spec.context) or "", spec.network]
    else:
        parts += [spec.image or "", spec.network]
    return hash_bytes(canonical(parts).encode())
