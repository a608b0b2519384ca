"""The executor contract: capacity, running one job (blocking) and cancelling everything."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mlmake.errors import MlfileError
from mlmake.model import EnvSpec, Pipeline, Target


@dataclass(frozen=True)
class Capacity:
    """What the executor can hold at once: CPUs, GPU ids, memory bytes, custom resources."""

    cpus: float
    gpus: tuple[str, ...] = ()
    memory: int = 0
    custom: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One command to run: the target, where, where to log, extra environment, GPU ids,
    and the environment spec it runs in with that spec's digest (None: the host's).

    An executor prepares the env where the command runs: `mlmake.envs.prepare(env_spec,
    env_digest, root, state_dir, log=…)` builds it once per digest and returns a Runtime.
    `state_dir` is the .mlmake/ whose envs/ holds the venvs (None: the one in `root`).
    """

    target: Target
    root: str
    log_path: str
    env: dict[str, str] = field(default_factory=dict)
    gpus: tuple[str, ...] = ()
    env_spec: EnvSpec | None = None
    env_digest: str | None = None
    state_dir: str | None = None


@dataclass(frozen=True)
class JobResult:
    """How a command ended: exit code (negative for a signal) and a message when it failed."""

    exit_code: int
    message: str = ""
    node: str = ""


OnLine = Callable[[str], None]


class Executor(Protocol):
    """Runs targets' commands; `run` blocks (the scheduler calls it from worker threads)."""

    name: str

    def capacity(self, need_gpus: bool) -> Capacity: ...

    def run(self, job: Job, on_line: OnLine) -> JobResult: ...

    def cancel_all(self) -> None: ...

    def close(self) -> None: ...


def machine_capacity(need_gpus: bool) -> Capacity:
    """This machine's CPUs (affinity), GPUs (CUDA_VISIBLE_DEVICES or nvidia-smi) and memory."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        cpus = float(os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        memory = 0
    return Capacity(cpus=cpus, gpus=detect_gpus() if need_gpus else (), memory=memory)


def detect_gpus() -> tuple[str, ...]:
    """GPU ids from CUDA_VISIBLE_DEVICES when set, else from `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1")
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ()
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(str(i) for i, line in enumerate(s for s in out.splitlines()
                                                  if s.startswith("GPU ")))


def check_fits(pipeline: Pipeline, names: set[str], cap: Capacity) -> None:
    """Refuse, before anything runs, a target that asks for more than this machine has."""
    for n in sorted(names):
        t = pipeline.targets[n]
        r = t.resources
        problem = None
        if r.cpus > cap.cpus:
            problem = f"{r.cpus:g} CPUs but this machine has {cap.cpus:g}"
        elif math.ceil(r.gpus) > len(cap.gpus):
            problem = f"{r.gpus:g} GPUs but this machine has {len(cap.gpus)}"
        elif r.memory and cap.memory and r.memory > cap.memory:
            problem = (f"{r.memory / 2**30:.1f} GiB of memory but this machine has "
                       f"{cap.memory / 2**30:.1f} GiB")
        if problem:
            raise MlfileError(f"target '{n}' asks for {problem}. Lower its resources, or run "
                              "it on a cluster with `--executor ray`.",
                              os.path.basename(pipeline.path), t.line)
