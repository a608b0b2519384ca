"""requirements/lock.txt, the pinned set the README and CI install, fits pyproject.toml's ranges
for every supported Python (CI also checks it is current by resolving afresh)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _env(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "platform_machine": "x86_64", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "extra": ""}


def _pins(python: str) -> dict[str, str]:
    """The lock's exact version of each package that applies on Linux under `python`."""
    pins: dict[str, str] = {}
    for raw in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, marker = line.partition(";")
        name, sep, version = spec.strip().partition("==")
        assert sep and version and "[" not in name, f"not an exact pin: {raw!r}"
        if not marker.strip() or Marker(marker.strip()).evaluate(_env(python)):
            assert canonicalize_name(name) not in pins, f"two pins for {name} on {python}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_pins_every_requirement_within_its_range(python):
    pins = _pins(python)
    for req in _requirements():
        if req.marker is not None and not req.marker.evaluate(_env(python)):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/lock.txt: run requirements/update"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/lock.txt pins {req.name}=={pins[name]}, outside {req} in "
            "pyproject.toml: run requirements/update")


def test_the_lock_says_how_it_is_made():
    head = (ROOT / "requirements" / "lock.txt").read_text().splitlines()[:2]
    assert head[1].strip("# ") == "requirements/update"
