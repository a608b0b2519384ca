"""Container environments through the Docker engine API (the only module importing `docker`).

An `[env.NAME] dockerfile = …, context = …` image is built once and tagged
`mlmake-env/NAME:TAG`, where TAG hashes the env digest (Dockerfile, context, network) and the
ids of its base images: the digest keeps `status` engine-free, the base ids make a moved
base tag (`FROM python:3.11` after a pull) build a fresh image. `image = "name:tag"` is used
as it is (pulled when missing). A command runs in a container with the project mounted at
its own path, the caller's uid:gid, `network_mode` from the env, the target's GPUs, CPUs and
memory, and its output streamed line by line.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlmake.envs import Log, Runtime
from mlmake.errors import EnvError, EnvSetupError
from mlmake.hashing import Entry, Hasher, canonical, hash_bytes, tree_digest
from mlmake.model import EnvSpec

if TYPE_CHECKING:  # pragma: no cover
    from mlmake.executors.base import Job

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
REPO = "mlmake-env"
IMAGE_FORMAT = 1
LABEL_PROJECT = "mlmake.project"
LABEL_ENV = "mlmake.env"
LABEL_TARGET = "mlmake.target"
EXCLUDED_AT_ROOT = (".mlmake", ".git")


# -- the engine ---------------------------------------------------------------------------
def _docker() -> Any:
    try:
        import docker
    except ImportError:
        raise EnvSetupError("container environments need the Python package "
                                  "'docker': `pip install docker`") from None
    return docker


def engine_address() -> tuple[str, str]:
    """Where mlmake looks for the engine, and how it chose that place."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host, "from DOCKER_HOST"
    return DEFAULT_SOCKET, "the default socket; DOCKER_HOST is not set"


def client(timeout: int = 60) -> Any:
    """A client of the engine (DOCKER_HOST or the default socket); EnvError if none answers."""
    docker = _docker()
    try:
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        addr, how = engine_address()
        raise EnvSetupError(
            f"no Docker engine answers at {addr} ({how}): {_why(exc)}. Start the Docker "
            "engine, or set DOCKER_HOST to where it listens.") from None


def _why(exc: BaseException) -> str:
    text = str(exc)
    for needle, reason in (("FileNotFoundError", "no such socket"),
                           ("No such file", "no such socket"),
                           ("ConnectionRefused", "connection refused"),
                           ("Connection refused", "connection refused"),
                           ("PermissionError", "permission denied (is your user allowed to "
                                               "use the Docker socket?)"),
                           ("Permission denied", "permission denied (is your user allowed "
                                                 "to use the Docker socket?)")):
        if needle in text:
            return reason
    return text.replace("Error while fetching server API version: ", "")[:300]


def check_engine(spec: EnvSpec, target: str | None = None) -> None:
    """EnvError naming the env (and the target) when no engine answers."""
    kind = "a Docker image built from " + (spec.dockerfile or "") if spec.kind == "docker" \
        else f"the Docker image '{spec.image}'"
    who = f"target '{target}' runs in environment" if target else "environment"
    try:
        client().close()
    except EnvSetupError as exc:
        raise EnvSetupError(f"{who} '{spec.name}' ({kind}) needs a Docker engine, "
                                  f"but {exc}") from None


# -- what the image is made of -------------------------------------------------------------
def dockerignore(context_dir: str) -> list[str]:
    """The patterns of the context's .dockerignore (none when there is no such file)."""
    try:
        with open(os.path.join(context_dir, ".dockerignore"), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def context_files(spec: EnvSpec, root: str) -> list[str]:
    """Files of the build context as the engine receives them, relative to the context:
    .dockerignore honoured, and the project's .mlmake/ and .git/ left out."""
    assert spec.context is not None and spec.dockerfile is not None
    ctx = os.path.join(root, spec.context)
    patterns = dockerignore(ctx)
    at_root = os.path.normpath(spec.context) == "."
    if patterns:
        from docker.utils.build import exclude_paths

        extra = [f"{e}" for e in EXCLUDED_AT_ROOT] if at_root else []
        df = os.path.relpath(os.path.join(root, spec.dockerfile), ctx)
        paths = exclude_paths(ctx, list(patterns) + extra,
                              dockerfile=df if not df.startswith("..") else None)
        return sorted(p for p in paths if os.path.isfile(os.path.join(ctx, p)))
    out = []
    for dirpath, dirnames, files in os.walk(ctx):
        rel = os.path.relpath(dirpath, ctx)
        if rel == "." and at_root:
            dirnames[:] = [d for d in dirnames if d not in EXCLUDED_AT_ROOT]
        for f in files:
            p = f if rel == "." else f"{rel}/{f}"
            if os.path.isfile(os.path.join(dirpath, f)):
                out.append(p.replace(os.sep, "/"))
    return sorted(out)


def context_digest(spec: EnvSpec, hasher: Hasher) -> str:
    """Content hash of the build context (the files `context_files` lists)."""
    assert spec.context is not None
    if not os.path.isdir(hasher.abspath(spec.context)):
        return ""
    prefix = "" if os.path.normpath(spec.context) == "." else spec.context.rstrip("/") + "/"
    entries = []
    for p in context_files(spec, hasher.root):
        st = os.stat(hasher.abspath(prefix + p))
        entries.append(Entry(p, hasher.file(prefix + p, st), bool(st.st_mode & 0o111)))
    return tree_digest(entries)


_FROM = re.compile(r"^\s*FROM\s+(.*)$", re.IGNORECASE)
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$", re.IGNORECASE)
_VARREF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def base_images(dockerfile_text: str) -> list[str]:
    """The images a Dockerfile builds FROM (stage names and `scratch` left out; ARG
    defaults declared before the first FROM substituted)."""
    lines: list[str] = []
    buf = ""
    for raw in dockerfile_text.splitlines():
        if raw.lstrip().startswith("#") and not buf:
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    args: dict[str, str] = {}
    stages: set[str] = set()
    refs: list[str] = []
    seen_from = False
    for line in lines:
        m = _ARG.match(line)
        if m and not seen_from:
            args[m.group(1)] = (m.group(2) or "").strip().strip('"').strip("'")
            continue
        m = _FROM.match(line)
        if not m:
            continue
        seen_from = True
        words = [w for w in m.group(1).split() if not w.startswith("--")]
        if not words:
            continue
        image = _VARREF.sub(lambda v: args.get(v.group(1) or v.group(3), v.group(2) or ""),
                            words[0])
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
        if not image or image.lower() == "scratch" or image.lower() in stages \
                or image in refs:
            continue
        refs.append(image)
    return refs


def image_repo(name: str) -> str:
    """`mlmake-env/NAME` with NAME made a valid repository component."""
    comp = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "env"
    return f"{REPO}/{comp}"


def image_tag(spec: EnvSpec, digest: str, base_ids: list[str]) -> str:
    """The full reference of the image built for `spec`: `mlmake-env/NAME:TAG`."""
    tag = hash_bytes(canonical(["mlmake/image", IMAGE_FORMAT, digest, base_ids]).encode())
    return f"{image_repo(spec.name)}:{tag[:16]}"


# -- building -----------------------------------------------------------------------------
def ensure(spec: EnvSpec, digest: str, root: str, envs_dir: str, log: Log,
           cancel: threading.Event | None = None, record: Log | None = None) -> Runtime:
    """The image for `spec`: an `image` pulled when missing, a Dockerfile's built when no
    image has its tag yet (once, under a lock)."""
    from mlmake.envs.once import build_once, lock_path

    docker = _docker()
    c = client()
    try:
        if spec.kind == "image":
            assert spec.image
            _image_id(c, spec.image, log, pull=True, env=spec.name)
            return Runtime(spec.name, "docker", digest, image=spec.image, network=spec.network)
        tag = current_tag(c, spec, digest, root, log, pull=True)
        assert tag is not None
        if not _exists(c, tag):
            build_once(tag, spec.name, lock_path(envs_dir, tag), log, record or log,
                       lambda: tag if _exists(c, tag) else None,
                       lambda tee: _build(c, spec, root, tag, tee, cancel))
        return Runtime(spec.name, "docker", digest, image=tag, network=spec.network)
    except docker.errors.DockerException as exc:
        raise EnvError(f"environment '{spec.name}' could not be prepared: {exc}") from None
    finally:
        c.close()


def current_tag(c: Any, spec: EnvSpec, digest: str, root: str, log: Log | None = None,
                pull: bool = False) -> str | None:
    """The tag a Dockerfile env's image has now; None when a base image is not on the
    engine and `pull` is off."""
    assert spec.dockerfile
    with open(os.path.join(root, spec.dockerfile), encoding="utf-8") as fh:
        text = fh.read()
    ids = []
    for ref in base_images(text):
        iid = _image_id(c, ref, log or (lambda line: None), pull=pull, env=spec.name)
        if iid is None:
            return None
        ids.append(iid)
    return image_tag(spec, digest, ids)


def _exists(c: Any, ref: str) -> bool:
    docker = _docker()
    try:
        c.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _image_id(c: Any, ref: str, log: Log, pull: bool, env: str) -> str | None:
    docker = _docker()
    try:
        return str(c.images.get(ref).id)
    except docker.errors.ImageNotFound:
        if not pull:
            return None
    log(f"mlmake: pulling image {ref} for environment '{env}'")
    repo, tag = docker.utils.parse_repository_tag(ref)
    try:
        for msg in c.api.pull(repo, tag or "latest", stream=True, decode=True):
            if "error" in msg:
                raise EnvError(f"environment '{env}': cannot pull image '{ref}': "
                               f"{msg['error']}")
            if msg.get("status") and not msg.get("progressDetail"):
                log(" ".join(str(msg[k]) for k in ("id", "status") if msg.get(k)))
        return str(c.images.get(ref).id)
    except docker.errors.DockerException as exc:
        raise EnvError(f"environment '{env}': cannot pull image '{ref}': "
                       f"{_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 400 else text[:400] + "…"


def _build(c: Any, spec: EnvSpec, root: str, tag: str, log: Log,
           cancel: threading.Event | None) -> None:
    from docker.api.build import process_dockerfile
    from docker.utils.build import tar

    assert spec.context and spec.dockerfile
    docker = _docker()
    ctx = os.path.join(root, spec.context)
    if not os.path.isdir(ctx):
        raise EnvError(f"environment '{spec.name}': the build context '{spec.context}' is "
                       "not a directory")
    patterns = dockerignore(ctx)
    if os.path.normpath(spec.context) == ".":
        patterns += list(EXCLUDED_AT_ROOT)
    dockerfile = process_dockerfile(os.path.join(root, spec.dockerfile), ctx)
    started = time.monotonic()
    log(f"mlmake: building image {tag} for environment '{spec.name}' from {spec.dockerfile} "
        f"(context {spec.context})")
    stop = threading.Event()
    if cancel is not None:
        threading.Thread(target=_close_on_cancel, args=(c, cancel, stop), daemon=True).start()
    try:
        with tar(ctx, exclude=list(patterns), dockerfile=dockerfile, gzip=False) as context:
            stream = c.api.build(fileobj=context, custom_context=True, tag=tag,
                                 dockerfile=dockerfile[0], rm=True, forcerm=True,
                                 decode=True, timeout=None,
                                 labels={LABEL_ENV: spec.name, LABEL_PROJECT: root})
            buf = ""
            for msg in stream:
                if "error" in msg:
                    if buf:
                        log(buf)
                    detail = str(msg.get("error", "")).strip()
                    log(detail)
                    raise EnvError(f"environment '{spec.name}' could not be built: docker "
                                   f"build failed: {detail.splitlines()[-1] if detail else '?'}"
                                   " (the full output is in the target's log)")
                buf += str(msg.get("stream", ""))
                *done, buf = buf.split("\n")
                for line in done:
                    log(line)
            if buf:
                log(buf)
    except (docker.errors.DockerException, OSError) as exc:
        if cancel is not None and cancel.is_set():
            raise EnvError(f"environment '{spec.name}': image build interrupted") from None
        raise EnvError(f"environment '{spec.name}' could not be built: {_short(exc)}") \
            from None
    finally:
        stop.set()
    if not _exists(c, tag):
        raise EnvError(f"environment '{spec.name}' could not be built: the engine did not "
                       f"tag {tag}")
    log(f"mlmake: image {tag} ready in {time.monotonic() - started:.1f}s")


def _close_on_cancel(c: Any, cancel: threading.Event, stop: threading.Event) -> None:
    while not stop.is_set():
        if cancel.wait(0.2):
            c.close()  # the engine stops a build whose client goes away
            return


# -- running ------------------------------------------------------------------------------
def container_config(job: Job, runtime: Runtime, uid: int | None = None,
                     gid: int | None = None) -> dict[str, Any]:
    """The keyword arguments of `containers.run` for one job (pure: no engine needed)."""
    t = job.target
    root = os.path.abspath(job.root)
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    env = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
    env.update(job.env)
    cfg: dict[str, Any] = dict(
        image=runtime.image, command=["sh", "-c", t.cmd], user=f"{uid}:{gid}",
        working_dir=os.path.normpath(os.path.join(root, t.wdir)),
        volumes={root: {"bind": root, "mode": "rw"}},
        network_mode=runtime.network, environment=env, detach=True, tty=False,
        stdin_open=False, labels={LABEL_TARGET: t.name, LABEL_PROJECT: root,
                                  LABEL_ENV: runtime.name},
        name=f"mlmake-{re.sub(r'[^A-Za-z0-9_.-]+', '-', t.name)}-{os.urandom(3).hex()}")
    if t.resources.cpus > 0:
        cfg["nano_cpus"] = int(round(t.resources.cpus * 1e9))
    if t.resources.memory > 0:
        cfg["mem_limit"] = int(t.resources.memory)
    if t.resources.gpus > 0:
        docker = _docker()
        if job.gpus:  # the devices the scheduler pinned (CUDA_VISIBLE_DEVICES on the host)
            req = docker.types.DeviceRequest(device_ids=list(job.gpus), capabilities=[["gpu"]])
        else:
            req = docker.types.DeviceRequest(count=math.ceil(t.resources.gpus),
                                             capabilities=[["gpu"]])
        cfg["device_requests"] = [req]
    return cfg


class ContainerRun:
    """One job's command in a container: start, stream its lines, wait, stop, remove."""

    def __init__(self, job: Job, runtime: Runtime) -> None:
        self.config = container_config(job, runtime)
        self._client: Any = None
        self.container: Any = None
        self.stopped = False
        self.oom_killed = False

    def start(self) -> None:
        docker = _docker()
        self._client = client()
        try:
            self.container = self._client.containers.run(**self.config)
        except docker.errors.DockerException as exc:
            self.close()
            raise EnvError(f"cannot start the container: {_short(exc)}") from None

    def lines(self) -> Iterator[bytes]:
        """The container's merged stdout and stderr, one line at a time (with its '\\n')."""
        buf = b""
        with _engine_errors("lost the container's output"):
            for chunk in self.container.logs(stream=True, follow=True):
                buf += chunk
                while True:
                    i = buf.find(b"\n")
                    if i < 0:
                        break
                    yield buf[:i + 1]
                    buf = buf[i + 1:]
        if buf:
            yield buf

    def wait(self) -> int:
        """The command's exit status once the container stops."""
        with _engine_errors("lost the container"):
            code = int(self.container.wait(timeout=None).get("StatusCode", 1))
            if code != 0:
                self.container.reload()
                self.oom_killed = bool(self.container.attrs.get("State", {}).get("OOMKilled"))
        return code

    def stop(self, grace: float) -> None:
        """SIGTERM the command, SIGKILL it after `grace` seconds."""
        docker = _docker()
        self.stopped = True
        if self.container is None:
            return
        try:
            self.container.stop(timeout=int(math.ceil(grace)))
        except docker.errors.DockerException:
            pass

    def close(self) -> None:
        """Remove the container (whatever state it is in) and drop the connection."""
        docker = _docker()
        try:
            if self.container is not None:
                self.container.remove(force=True)
        except docker.errors.DockerException:
            pass
        finally:
            if self._client is not None:
                self._client.close()


@contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    import requests

    docker = _docker()
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException,
            OSError) as exc:
        raise EnvError(f"the Docker engine failed: {what}: {_short(exc)}") from None


# -- inventory ----------------------------------------------------------------------------
def project_images(c: Any, root: str) -> list[tuple[str, str, int]]:
    """(tag, image id, size) of every `mlmake-env/…` tag built for the project at `root`."""
    out = []
    for img in c.images.list(filters={"label": f"{LABEL_PROJECT}={root}"}):
        for tag in img.tags:
            if tag.startswith(REPO + "/"):
                out.append((tag, str(img.id), int(img.attrs.get("Size") or 0)))
    return sorted(out)


def remove_image(c: Any, tag: str) -> str | None:
    """Untag (and so delete, when it was the last tag) an image; the reason when not."""
    docker = _docker()
    try:
        c.images.remove(tag)
        return None
    except docker.errors.DockerException as exc:
        return _short(exc)
