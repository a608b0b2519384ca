"""mlmake: make for machine learning, native to Git."""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` is not imported: a no-op `mlmake status` costs less than it
if TYPE_CHECKING:
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
