"""A project's environments: which exist, which targets use them, pre-building and pruning."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlmake import envs
from mlmake.envs import venv
from mlmake.errors import EnvError, UsageError, did_you_mean
from mlmake.model import EnvSpec, Pipeline

DigestOf = Callable[[str], str | None]


@dataclass(frozen=True)
class EnvInfo:
    """One environment of the Mlfile: where it lives, whether it is built, who uses it."""

    name: str
    kind: str  # venv | docker | image
    digest: str
    location: str  # .mlmake/envs/NAME-HASH, mlmake-env/NAME:TAG or the image reference
    state: str  # built | missing | unknown
    targets: tuple[str, ...] = ()
    size: int | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Unused:
    """A venv directory, image or interrupted build that no target of the Mlfile uses."""

    kind: str  # venv | image | leftover
    location: str
    size: int = 0
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EnvReport:
    """What `mlmake envs list` shows."""

    envs: list[EnvInfo] = field(default_factory=list)
    unused: list[Unused] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class PruneResult:
    """What `mlmake envs prune` removed (or would), and what it had to leave."""

    removed: list[Unused] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes_freed(self) -> int:
        return sum(u.size for u in self.removed)


@dataclass(frozen=True)
class BuildResult:
    """One environment `mlmake envs build` prepared, or why it could not."""

    name: str
    ok: bool
    location: str = ""
    message: str = ""


def users(pipeline: Pipeline) -> dict[str, tuple[str, ...]]:
    """Env name → the targets (in Mlfile order) that run in it."""
    out: dict[str, list[str]] = {n: [] for n in pipeline.envs}
    for t in pipeline.targets.values():
        if t.env:
            out.setdefault(t.env, []).append(t.name)
    return {k: tuple(v) for k, v in out.items()}


def _docker_client(needed: bool, notes: list[str]) -> Any:
    """A client when an engine answers; else None, with a note when an env needs one."""
    from mlmake.envs import docker as docker_env

    if not needed and "DOCKER_HOST" not in os.environ and \
            not os.path.exists(docker_env.DEFAULT_SOCKET[len("unix://"):]):
        return None
    try:
        return docker_env.client(timeout=10)
    except EnvError as exc:
        if needed:
            notes.append(f"{exc} Container environments show as 'unknown'.")
        return None


def _location(path: str, root: str) -> str:
    return os.path.relpath(path, root)


def report(pipeline: Pipeline, digest_of: DigestOf, root: str, envs_dir: str) -> EnvReport:
    """Every env of the Mlfile with its state, and what on disk or in the engine is unused."""
    from mlmake.envs import docker as docker_env

    rep = EnvReport()
    used_by = users(pipeline)
    containers = any(s.kind != "venv" for s in pipeline.envs.values())
    c = _docker_client(containers, rep.notes)
    in_use_keys: set[str] = set()
    in_use_tags: set[str] = set()
    try:
        for name in sorted(pipeline.envs):
            spec = pipeline.envs[name]
            digest = digest_of(name) or ""
            targets = used_by.get(name, ())
            if spec.kind == "venv":
                link = venv.env_path(envs_dir, name, digest)
                real = venv.ready(link)
                if targets:
                    in_use_keys.add(os.path.basename(link))
                rep.envs.append(EnvInfo(name, "venv", digest, _location(link, root),
                                        "built" if real else "missing", targets,
                                        venv.size_of(real) if real else None))
                continue
            if c is None:
                where = spec.image or docker_env.image_repo(name)
                rep.envs.append(EnvInfo(name, spec.kind, digest, where, "unknown", targets))
                continue
            if spec.kind == "image":
                assert spec.image
                there = docker_env._exists(c, spec.image)
                rep.envs.append(EnvInfo(name, "image", digest, spec.image,
                                        "built" if there else "missing", targets,
                                        note="" if there else "not pulled yet"))
                continue
            tag = docker_env.current_tag(c, spec, digest, root, pull=False)
            if tag is None:
                rep.envs.append(EnvInfo(name, "docker", digest, docker_env.image_repo(name),
                                        "missing", targets, note="base image not pulled yet"))
                continue
            if targets:
                in_use_tags.add(tag)
            there = docker_env._exists(c, tag)
            size = int(c.images.get(tag).attrs.get("Size") or 0) if there else None
            rep.envs.append(EnvInfo(name, "docker", digest, tag,
                                    "built" if there else "missing", targets, size))
        for item in venv.installed(envs_dir):
            if item.key not in in_use_keys:
                rep.unused.append(Unused("venv", _location(item.path, root),
                                         venv.size_of(item.real), item.name))
        for path in _leftovers(envs_dir):
            rep.unused.append(Unused("leftover", _location(path, root), venv.size_of(path)))
        if c is not None:
            for tag, _iid, size in docker_env.project_images(c, root):
                if tag not in in_use_tags:
                    rep.unused.append(Unused("image", tag, size,
                                             tag.split("/", 1)[1].split(":", 1)[0]))
    finally:
        if c is not None:
            c.close()
    return rep


def _leftovers(envs_dir: str) -> list[str]:
    real_dir = os.path.join(envs_dir, venv.REAL)
    try:
        entries = sorted(os.listdir(real_dir))
    except FileNotFoundError:
        return []
    published = {os.path.realpath(i.path) for i in venv.installed(envs_dir)}
    return [os.path.join(real_dir, e) for e in entries
            if os.path.realpath(os.path.join(real_dir, e)) not in published]


def select(pipeline: Pipeline, names: tuple[str, ...] | list[str]) -> list[EnvSpec]:
    """The envs called `names` (default: every env of the Mlfile); UsageError for others."""
    if not names:
        return [pipeline.envs[n] for n in sorted(pipeline.envs)]
    out = []
    for n in names:
        if n not in pipeline.envs:
            known = ", ".join(sorted(pipeline.envs)) or "none"
            raise UsageError(f"no environment '{n}' in the Mlfile (defined: {known})."
                             + did_you_mean(n, list(pipeline.envs)))
        out.append(pipeline.envs[n])
    return out


def build(pipeline: Pipeline, names: tuple[str, ...] | list[str], digest_of: DigestOf,
          root: str, state_dir: str, log: Callable[[str, str], None]) -> list[BuildResult]:
    """Prepare the named envs now (build venvs and images, pull named images)."""
    specs = select(pipeline, names)
    envs.check([(None, s) for s in specs])
    results = []
    for spec in specs:
        digest = digest_of(spec.name) or ""
        try:
            rt = envs.prepare(spec, digest, root, state_dir, log=functools.partial(log, spec.name))
        except EnvError as exc:
            results.append(BuildResult(spec.name, False, message=str(exc)))
            continue
        where = _location(venv.env_path(envs.envs_dir(root, state_dir), spec.name, digest),
                          root) if rt.kind == "venv" else (rt.image or "")
        results.append(BuildResult(spec.name, True, where))
    return results


def prune(pipeline: Pipeline, digest_of: DigestOf, root: str, envs_dir: str,
          dry_run: bool = False) -> PruneResult:
    """Remove every venv, interrupted build and project image no target uses now."""
    from mlmake.envs import docker as docker_env

    rep = report(pipeline, digest_of, root, envs_dir)
    res = PruneResult(notes=list(rep.notes), dry_run=dry_run)
    if dry_run:
        res.removed = list(rep.unused)
        return res
    installed = {_location(i.path, root): i for i in venv.installed(envs_dir)}
    c = None
    try:
        for u in rep.unused:
            if u.kind == "venv":
                if venv.remove(envs_dir, installed[u.location]):
                    res.removed.append(u)
                else:
                    res.busy.append(u.location)
            elif u.kind == "image":
                c = c or docker_env.client(timeout=30)
                why = docker_env.remove_image(c, u.location)
                if why is None:
                    res.removed.append(u)
                else:
                    res.busy.append(f"{u.location} ({why})")
        gone = {os.path.realpath(p) for p in venv.remove_leftovers(envs_dir)}
        res.removed += [u for u in rep.unused if u.kind == "leftover"
                        and os.path.realpath(os.path.join(root, u.location)) in gone]
    finally:
        if c is not None:
            c.close()
    return res
