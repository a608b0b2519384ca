"""Virtualenvs built once per environment digest under .mlmake/envs/, published atomically.

Layout of `.mlmake/envs/`:

    sk-0123456789abcdef -> .real/sk-0123456789abcdef.k3j2h1   the published env (a symlink)
    .real/sk-0123456789abcdef.k3j2h1/                         the venv itself
    .locks/sk-0123456789abcdef.lock                           held while it is built

A venv is not relocatable (installed scripts name its interpreter by absolute path), so it
is built in its final directory under `.real/` and published by atomically replacing the
`NAME-HASH` link once it is complete; a failed or interrupted build removes its directory,
and a build never runs twice at once (a file lock, plus a thread lock in-process).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from mlmake.envs import Log, Runtime, has_requirements
from mlmake.envs.once import build_once, file_lock, lock_path
from mlmake.errors import EnvError, EnvSetupError
from mlmake.model import EnvSpec

MARKER = "mlmake-env.json"
REAL = ".real"
TOOL_VAR = "MLMAKE_VENV_TOOL"  # "uv" or "pip"; default: uv when it is on PATH


def env_path(envs_dir: str, name: str, digest: str) -> str:
    """The published path of env `name` with `digest`: `.mlmake/envs/NAME-<digest[:16]>`."""
    return os.path.join(envs_dir, f"{name}-{digest[:16]}")


def ensure(spec: EnvSpec, digest: str, root: str, envs_dir: str, log: Log,
           cancel: threading.Event | None = None, record: Log | None = None) -> Runtime:
    """The venv for `spec`, built first unless a complete one is already published."""
    link = env_path(envs_dir, spec.name, digest)
    real = ready(link)
    if real is None:
        real = _build_once(spec, digest, root, envs_dir, link, log, cancel, record or log)
    return Runtime(spec.name, "venv", digest, prefix=real)


def ready(link: str) -> str | None:
    """The directory of the complete venv published at `link`, else None (also when the
    project was moved since it was built: its scripts would name the old place)."""
    real = os.path.realpath(link)
    try:
        with open(os.path.join(real, MARKER), encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    return real if meta.get("prefix") == real else None


def read_marker(real: str) -> dict[str, Any] | None:
    """The record a complete venv keeps about itself (name, digest, python, tool, ...)."""
    try:
        with open(os.path.join(real, MARKER), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _build_once(spec: EnvSpec, digest: str, root: str, envs_dir: str, link: str, log: Log,
                cancel: threading.Event | None, record: Log) -> str:
    return build_once(os.path.abspath(link), spec.name,
                      lock_path(envs_dir, os.path.basename(link)), log, record,
                      lambda: ready(link),
                      lambda tee: _build(spec, digest, root, envs_dir, link, tee, cancel))


def _build(spec: EnvSpec, digest: str, root: str, envs_dir: str, link: str, log: Log,
           cancel: threading.Event | None) -> str:
    assert spec.requirements
    exe = interpreter(spec)
    os.makedirs(os.path.join(envs_dir, REAL), exist_ok=True)
    real_dir = os.path.realpath(os.path.join(envs_dir, REAL))  # what ready() compares
    key = os.path.basename(link)
    previous = os.path.realpath(link) if os.path.islink(link) else None
    remove_leftovers(envs_dir, key, keep={previous} if previous else set())
    real = os.path.join(real_dir, f"{key}.{secrets.token_hex(3)}")
    req = os.path.join(root, spec.requirements)
    rel_link = os.path.relpath(link, root)
    tool = _tool()
    started = time.monotonic()
    log(f"mlmake: building environment '{spec.name}' ({spec.requirements}, "
        f"{_version_of(exe)}, with {tool}) in {rel_link}")
    try:
        install = has_requirements(req)
        if tool == "uv":
            uv = shutil.which("uv") or "uv"
            _run([uv, "venv", "--python", exe, real], root, log, cancel, spec, "uv venv")
            if install:
                _run([uv, "pip", "install", "--python", _python(real), "-r", req],
                     os.path.dirname(req), log, cancel, spec,
                     f"uv pip install -r {spec.requirements}")
        elif _parent_pip_ok():
            # no pip inside the venv: creating one takes ~0.2 s instead of ~8 s, and the
            # pip running mlmake installs into it (`pip --python`, pip >= 22.3)
            _run([exe, "-m", "venv", "--without-pip", real], root, log, cancel, spec,
                 "python -m venv")
            if install:
                _run([sys.executable, "-m", "pip", "--python", _python(real), "install",
                      "--disable-pip-version-check", "--no-input", "-r", req],
                     os.path.dirname(req), log, cancel, spec,
                     f"pip install -r {spec.requirements}")
        else:
            _run([exe, "-m", "venv", real], root, log, cancel, spec, "python -m venv")
            if install:
                _run([_python(real), "-m", "pip", "install", "--disable-pip-version-check",
                      "--no-input", "-r", req], os.path.dirname(req), log, cancel, spec,
                     f"pip install -r {spec.requirements}")
        _write_marker(real, {"name": spec.name, "kind": "venv", "digest": digest,
                             "requirements": spec.requirements, "python": _version_of(exe),
                             "tool": tool, "created": time.time(), "prefix": real})
        from mlmake.atomic import temp_name

        tmp_link = temp_name(link)
        os.symlink(os.path.relpath(real, envs_dir), tmp_link)
        os.replace(tmp_link, link)  # the commit point: the env is visible, complete
    except BaseException:
        shutil.rmtree(real, ignore_errors=True)
        raise
    if previous and previous != real:
        shutil.rmtree(previous, ignore_errors=True)
    log(f"mlmake: environment '{spec.name}' ready in {time.monotonic() - started:.1f}s")
    return real


def _run(argv: list[str], cwd: str, log: Log, cancel: threading.Event | None,
         spec: EnvSpec, what: str) -> None:
    """Run one build step with its output sent to `log`; an EnvError when it fails."""
    env = dict(os.environ)
    for var in ("VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(var, None)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as exc:
        raise EnvError(f"environment '{spec.name}' could not be built: cannot start "
                       f"{what}: {exc}") from None
    stop = threading.Event()
    watcher = None
    if cancel is not None:
        watcher = threading.Thread(target=_watch, args=(proc, cancel, stop), daemon=True)
        watcher.start()
    last_error = ""
    assert proc.stdout is not None
    try:
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not last_error and line.lstrip().startswith(("ERROR:", "error:", "× ")):
                last_error = line.strip()
            log(line)
        code = proc.wait()
    finally:
        stop.set()
        if proc.poll() is None:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if cancel is not None and cancel.is_set():
        raise EnvError(f"environment '{spec.name}': build interrupted")
    if code != 0:
        detail = f": {last_error}" if last_error else ""
        raise EnvError(f"environment '{spec.name}' could not be built: {what} exited with "
                       f"{code}{detail} (the full output is in the target's log)")


def _watch(proc: subprocess.Popen[bytes], cancel: threading.Event,
           stop: threading.Event) -> None:
    while not stop.is_set():
        if cancel.wait(0.2):
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
            return


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _write_marker(real: str, data: dict[str, Any]) -> None:
    path = os.path.join(real, MARKER)
    from mlmake.atomic import atomic_write

    atomic_write(path, json.dumps(data, indent=2, sort_keys=True))


def _python(real: str) -> str:
    return os.path.join(real, "bin", "python")


def _tool() -> str:
    chosen = os.environ.get(TOOL_VAR, "").strip().lower()
    if chosen in ("uv", "pip"):
        return chosen
    return "uv" if shutil.which("uv") else "pip"


def _parent_pip_ok() -> bool:
    """Whether the interpreter running mlmake has a pip that can install into another
    environment (`pip --python`, new in pip 22.3)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        v = version("pip")
    except (ImportError, PackageNotFoundError):
        return False
    m = re.match(r"(\d+)\.(\d+)", v)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (22, 3)


_versions: dict[str, str] = {}


def _version_of(exe: str) -> str:
    if exe == sys.executable:
        return "python " + ".".join(map(str, sys.version_info[:3]))
    if exe not in _versions:
        try:
            out = subprocess.run([exe, "-c", "import sys; print('.'.join(map(str, "
                                  "sys.version_info[:3])))"], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = "?"
        _versions[exe] = "python " + out
    return _versions[exe]


def interpreter(spec: EnvSpec, target: str | None = None) -> str:
    """The interpreter a venv is made from: `python = …` (a version like "3.11", a command
    like "pypy3", or a path), else the one running mlmake."""
    want = spec.python
    if not want:
        return sys.executable
    if re.fullmatch(r"\d+(\.\d+){0,2}", want):
        current = ".".join(map(str, sys.version_info[:3]))
        if (current + ".").startswith(want + "."):
            return sys.executable
        found = shutil.which(f"python{want}")
    elif "/" in want:
        found = want if os.access(want, os.X_OK) else None
    else:
        found = shutil.which(want)
    if found is None:
        who = f" (target '{target}' runs in it)" if target else ""
        raise EnvSetupError(f"[env.{spec.name}] python = '{want}': no such interpreter "
                                  f"on this machine{who}; looked for "
                                  f"'{want if not want[0].isdigit() else 'python' + want}' on "
                                  "PATH. Install it or change `python`.")
    return found


# -- inventory ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    """One published venv on disk: its link name, the env name, directory and record."""

    key: str  # NAME-<digest[:16]>
    name: str
    path: str  # the published link
    real: str
    meta: dict[str, Any] | None


def installed(envs_dir: str) -> list[Installed]:
    """Every published venv under `envs_dir`, by key."""
    out: list[Installed] = []
    try:
        names = sorted(os.listdir(envs_dir))
    except FileNotFoundError:
        return out
    for key in names:
        path = os.path.join(envs_dir, key)
        if key.startswith(".") or not os.path.islink(path):
            continue
        real = os.path.realpath(path)
        meta = read_marker(real)
        name = meta.get("name") if meta else key.rsplit("-", 1)[0]
        out.append(Installed(key, str(name), path, real, meta))
    return out


def remove(envs_dir: str, item: Installed) -> bool:
    """Delete a published venv (link first, so no one starts using it); False when it is
    being built or used by a build right now."""
    with file_lock(lock_path(envs_dir, item.key), wait=False) as got:
        if not got:
            return False
        try:
            os.unlink(item.path)
        except FileNotFoundError:
            pass
        if os.path.realpath(item.real).startswith(os.path.join(os.path.realpath(envs_dir),
                                                               REAL) + os.sep):
            shutil.rmtree(item.real, ignore_errors=True)
    return True


def remove_leftovers(envs_dir: str, key: str | None = None,
                     keep: set[str] | None = None) -> list[str]:
    """Remove directories under `.real/` that no link publishes (an interrupted build's);
    only those of `key` when given (the caller then holds that key's lock)."""
    real_dir = os.path.join(envs_dir, REAL)
    try:
        entries = os.listdir(real_dir)
    except FileNotFoundError:
        return []
    published = {os.path.realpath(i.path) for i in installed(envs_dir)} | (keep or set())
    removed = []
    for e in sorted(entries):
        full = os.path.realpath(os.path.join(real_dir, e))
        ekey = e.rsplit(".", 1)[0]
        if full in published or (key is not None and ekey != key):
            continue
        if key is None:
            with file_lock(lock_path(envs_dir, ekey), wait=False) as got:
                if not got:
                    continue
                shutil.rmtree(full, ignore_errors=True)
        else:
            shutil.rmtree(full, ignore_errors=True)
        removed.append(full)
    return removed


def size_of(path: str) -> int:
    """Bytes used by the files under `path` (links not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total

