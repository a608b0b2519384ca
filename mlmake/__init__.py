"""mlmake: make for machine learning, native to Git."""

__version__ = "0.1.0"

from mlmake.errors import MlmakeError  # noqa: E402
from mlmake.project import Project  # noqa: E402

__all__ = ["MlmakeError", "Project", "__version__"]
