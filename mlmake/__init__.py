"""mlmake: make for machine learning, native to Git."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MlmakeError", "Project", "__version__"]


def __getattr__(name: str) -> Any:
    # The engine is imported on first use so that `mlmake --version` and the CLI start fast.
    if name == "Project":
        from mlmake.project import Project

        return Project
    if name == "MlmakeError":
        from mlmake.errors import MlmakeError

        return MlmakeError
    raise AttributeError(name)
