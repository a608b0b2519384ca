"""Executors run one target's command; back ends are imported lazily by name."""

from __future__ import annotations

import contextlib

from mlmake.errors import UsageError
from mlmake.executors.base import Executor


def make_executor(name: str, **options: object) -> Executor:
    """The executor called `name` ("local" or "ray")."""
    if name == "local":
        from mlmake.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from mlmake.executors.ray import RayExecutor  # Ray is imported only there

        return RayExecutor(**options)  # type: ignore[arg-type]
    raise UsageError(f"unknown executor '{name}'; use local or ray")


def held(name: str, address: str | None = None) -> contextlib.AbstractContextManager[None]:
    """Keep the back end `name` connected across the builds made inside (Ray: one
    connection for a batch of experiments, rather than one per experiment); nothing for
    the local executor."""
    if name != "ray":
        return contextlib.nullcontext()
    from mlmake.executors.ray import held as ray_held

    return ray_held(address)
