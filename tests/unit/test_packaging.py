"""The package metadata ships every subpackage (an editable install would hide a gap)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "mlmake").rglob("__init__.py")
             if "__pycache__" not in p.parts and "static" not in p.parts}
    assert found <= listed, f"missing from [tool.setuptools] packages: {found - listed}"
    assert "mlmake.templates" in listed


def test_templates_are_package_data():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["tool"]["setuptools"]["package-dir"]["mlmake.templates"] == "templates"
    for name in ("minimal", "sklearn"):
        assert (ROOT / "templates" / name / "Mlfile").is_file()
