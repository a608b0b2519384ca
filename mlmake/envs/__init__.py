"""Environment specs: the digest that enters target keys, and preparing an env to run in.

`spec_digest` is pure over project files (no Docker engine, no interpreter is started), so
`mlmake status` stays fast. `prepare` builds an environment once per digest (venv.py,
docker.py) and is a plain function, so any executor (local or a Ray worker) can call it on
the machine where the command runs.
"""

from __future__ import annotations

import os
import platform
import posixpath
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mlmake.hashing import Hasher, canonical, hash_bytes
from mlmake.model import EnvSpec

ENV_FORMAT = 1
ENVS_DIR = "envs"  # under the state directory (.mlmake/)

Log = Callable[[str], object]  # a line of build output; what it returns is ignored


def spec_digest(spec: EnvSpec, hasher: Hasher) -> str:
    """Hash of everything in the project that defines an environment's content.

    venv: the requirements file (and the files it includes with -r/-c and the local
    packages it names), the interpreter version and the platform; docker: the Dockerfile,
    the build context as Docker sees it (.dockerignore honoured; .mlmake/ and .git/ of the
    project left out) and the network; image: the image reference and the network.

    The id of a Dockerfile's base image is deliberately not here: only the engine knows it,
    and a key that needs the engine would make `status` slow and machine-dependent. It
    names the built image instead (see docker.image_tag), and a base pinned by digest
    (`FROM python@sha256:…`) enters the key through the Dockerfile's text.
    """
    parts: list[object] = ["mlmake/env", ENV_FORMAT, spec.kind]
    if spec.kind == "venv":
        assert spec.requirements
        parts += [hasher.file(spec.requirements), spec.python or platform.python_version(),
                  sys.platform, platform.machine()]
        refs = requirement_refs(spec.requirements, hasher)
        if refs:  # only then, so a plain requirements file keeps its digest
            parts.append(refs)
    elif spec.kind == "docker":
        assert spec.dockerfile and spec.context
        from mlmake.envs import docker as docker_env

        parts += [hasher.file(spec.dockerfile), docker_env.context_digest(spec, hasher),
                  spec.network]
    else:
        parts += [spec.image or "", spec.network]
    digest = hash_bytes(canonical(parts).encode())
    from mlmake.envs import changes  # so `status` can later say what changed

    changes.remember(spec, digest, hasher)
    return digest


def requirement_refs(req: str, hasher: Hasher) -> list[list[str]]:
    """Project files a requirements file pulls in: `-r`/`-c` files and local packages.

    Paths are resolved from the requirements file's directory (mlmake runs pip there).
    Build leftovers inside a local package (build/, dist/, *.egg-info, __pycache__) are not
    hashed: pip writes them there while installing, and they must not change the digest.
    """
    out: list[list[str]] = []
    seen: set[str] = {req}
    todo = [req]
    while todo:
        cur = todo.pop(0)
        base = posixpath.dirname(cur)
        for ref, nested in _local_refs(hasher.abspath(cur)):
            rel = posixpath.normpath(posixpath.join(base, ref))
            if rel == ".." or rel.startswith("../") or rel in seen:
                continue
            seen.add(rel)
            if nested:
                out.append([rel, _file_or_none(hasher, rel)])
                todo.append(rel)
            else:
                out.append([rel, _package_digest(hasher, rel)])
    return out


def _file_or_none(hasher: Hasher, rel: str) -> str:
    return hasher.file(rel) if os.path.isfile(hasher.abspath(rel)) else ""


_LEFTOVERS = ("build", "dist", "__pycache__", ".eggs")


def _package_digest(hasher: Hasher, rel: str) -> str:
    full = hasher.abspath(rel)
    if os.path.isfile(full):
        return hasher.file(rel)
    if not os.path.isdir(full):
        return ""
    from mlmake.hashing import Entry, tree_digest

    entries = []
    for path, st in hasher._walk(rel):
        parts = path.split("/")
        if any(p in _LEFTOVERS or p.endswith(".egg-info") for p in parts[:-1]) \
                or path.endswith(".pyc"):
            continue
        entries.append(Entry(path, hasher.file(f"{rel}/{path}", st), bool(st.st_mode & 0o111)))
    return tree_digest(entries)


def _local_refs(path: str) -> list[tuple[str, bool]]:
    """(path, is_a_requirements_file) for each local reference in a requirements file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return []
    refs: list[tuple[str, bool]] = []
    for line in _logical_lines(text):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if not words:
            continue
        w0 = words[0]
        nested = None
        if w0 in ("-r", "--requirement", "-c", "--constraint") and len(words) > 1:
            nested = words[1]
        elif w0.startswith(("--requirement=", "--constraint=")):
            nested = w0.split("=", 1)[1]
        elif w0.startswith(("-r", "-c")) and not w0.startswith("--") and len(w0) > 2:
            nested = w0[2:]
        if nested is not None:
            if "://" not in nested:
                refs.append((nested, True))
            continue
        if w0 in ("-e", "--editable") and len(words) > 1:
            w0 = words[1]
        if w0.startswith("file:") and not w0.startswith("file:/"):
            w0 = w0[5:]
        if w0.startswith(("./", "../")) or w0 == ".":
            refs.append((w0.split("#", 1)[0].split("[", 1)[0], False))
    return refs


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            buf += raw[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    if buf:
        lines.append(buf)
    return lines


def has_requirements(path: str) -> bool:
    """Whether a requirements file asks for anything (not only blank lines and comments)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return any(line.split("#", 1)[0].strip() for line in _logical_lines(fh.read()))


@dataclass(frozen=True)
class Runtime:
    """A prepared environment: a venv directory or a container image to run commands in."""

    name: str
    kind: str  # "venv" | "docker" (a built or named image)
    digest: str
    prefix: str | None = None  # the venv's directory
    image: str | None = None  # the image reference a container runs
    network: str = "none"

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """The process environment for a command in this runtime (venv: bin first on PATH,
        VIRTUAL_ENV set, PYTHONHOME unset)."""
        env = dict(base)
        if self.kind == "venv" and self.prefix:
            env["VIRTUAL_ENV"] = self.prefix
            env["PATH"] = os.path.join(self.prefix, "bin") + os.pathsep + env.get("PATH", "")
            env.pop("PYTHONHOME", None)
        return env


def envs_dir(root: str, state_dir: str | None = None) -> str:
    """Where venvs live: `.mlmake/envs/` of the project at `root`."""
    return os.path.join(state_dir or os.path.join(root, ".mlmake"), ENVS_DIR)


def prepare(spec: EnvSpec, digest: str, root: str, state_dir: str | None = None,
            log: Log | None = None, cancel: threading.Event | None = None,
            record: Log | None = None) -> Runtime:
    """The environment `spec` (whose digest is `digest`), built first when needed.

    Safe to call from many threads and processes at once: one builds, the others wait and
    reuse it. Build output goes to `log` line by line; `record` (default: `log`) gets what
    belongs in the target's log file but not on screen: the output of a failed build that
    this call waited for. A failed build raises EnvError and leaves nothing behind;
    setting `cancel` stops a build in progress.
    """
    log = log or (lambda line: None)
    if spec.kind == "venv":
        from mlmake.envs import venv

        return venv.ensure(spec, digest, root, envs_dir(root, state_dir), log, cancel, record)
    from mlmake.envs import docker as docker_env

    return docker_env.ensure(spec, digest, root, envs_dir(root, state_dir), log, cancel,
                             record)


def check(specs: Iterable[tuple[str | None, EnvSpec]]) -> None:
    """Fail before anything runs when an environment cannot be had on this machine: no
    Docker engine for a container env, no interpreter for `python = …`.

    `specs` pairs a target name (or None) with the env it runs in; the first problem is
    raised as an EnvError naming the env (and the target).
    """
    engine_checked = False
    for target, spec in specs:
        if spec.kind == "venv":
            from mlmake.envs import venv

            venv.interpreter(spec, target)
        elif not engine_checked:
            from mlmake.envs import docker as docker_env

            docker_env.check_engine(spec, target)
            engine_checked = True
