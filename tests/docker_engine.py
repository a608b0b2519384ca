"""A Docker engine for the container tests, offline.

Uses DOCKER_HOST when it answers (`.ci/run` starts one and exports it); otherwise, as root
with `dockerd` installed (`apt-get install docker.io busybox-static`), starts a private
dockerd for the session under /tmp (no iptables, no bridge, so it needs no network set-up);
otherwise the default socket when it answers. The base image the tests build FROM is made
without a registry: `docker import` of a tarball holding a static busybox and its applet
links. `start()` returns the engine or the reason there is none, for a skip message.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass

BASE_IMAGE = "mlmake-test/busybox:1"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


@dataclass
class Engine:
    """A reachable engine: its address, and the dockerd we started (None: not ours)."""

    host: str
    base_image: str = BASE_IMAGE
    proc: subprocess.Popen[bytes] | None = None
    workdir: str | None = None

    def client(self):  # type: ignore[no-untyped-def]
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)

    def stop(self) -> None:
        """Stop the dockerd this module started, and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _answers(host: str) -> bool:
    import docker

    try:
        c = docker.DockerClient(base_url=host, timeout=5)
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:  # noqa: BLE001 - any failure means "not this one"
        return False


def _start_dockerd() -> Engine | str:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return ("dockerd is not installed (on Debian: apt-get install docker.io "
                "busybox-static)")
    if os.getuid() != 0:
        return "dockerd is installed but starting a private one needs root"
    logs = []
    for driver in ("overlay2", "vfs"):
        work = tempfile.mkdtemp(prefix="mlmk-dockerd-", dir="/tmp")
        sock = os.path.join(work, "docker.sock")
        host = f"unix://{sock}"
        log = open(os.path.join(work, "dockerd.log"), "wb")
        proc = subprocess.Popen(
            [dockerd, "--data-root", os.path.join(work, "data"),
             "--exec-root", os.path.join(work, "exec"), "-H", host,
             "--pidfile", os.path.join(work, "docker.pid"), f"--storage-driver={driver}",
             "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--bridge=none"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        engine = Engine(host, proc=proc, workdir=work)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(sock) and _answers(host):
                return engine
            time.sleep(0.2)
        with open(os.path.join(work, "dockerd.log"), "rb") as fh:
            tail = fh.read().decode(errors="replace").strip().splitlines()[-3:]
        logs.append(f"{driver}: " + (" | ".join(tail) or "no output"))
        engine.stop()
    return "dockerd did not start: " + "; ".join(logs)


def _static(path: str) -> bool:
    """Whether an ELF executable has no program interpreter (so runs in an empty image)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            phoff = struct.unpack_from("<Q", head, 0x20)[0]
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def _base_image(engine: Engine) -> str | None:
    """Import the busybox base image unless the engine has it; the reason when it cannot."""
    import docker

    c = engine.client()
    try:
        try:
            c.images.get(engine.base_image)
            return None
        except docker.errors.ImageNotFound:
            pass
        busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox",
                                    shutil.which("busybox") or "") if p and _static(p)), None)
        if busybox is None:
            return "no static busybox to make a base image from (apt-get install busybox-static)"
        applets = subprocess.run([busybox, "--list"], capture_output=True,
                                 text=True).stdout.split()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for d, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            tar.add(busybox, "bin/busybox")
            for a in applets:
                if a != "busybox":
                    info = tarfile.TarInfo(f"bin/{a}")
                    info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(info)
            passwd = b"root:x:0:0:root:/root:/bin/sh\n"
            info = tarfile.TarInfo("etc/passwd")
            info.size = len(passwd)
            tar.addfile(info, io.BytesIO(passwd))
        repo, tag = engine.base_image.split(":")
        c.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,
                                     changes=['ENV PATH=/bin'])
        c.containers.run(engine.base_image, ["true"], remove=True, network_mode="none")
        return None
    except docker.errors.DockerException as exc:
        return f"the engine cannot make or run the base image: {exc}"
    finally:
        c.close()


def start() -> Engine | str:
    """An engine with the base image, or why there is none."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the Python package 'docker' is not installed"
    reasons = []
    host = os.environ.get("DOCKER_HOST")
    engine: Engine | str
    if host and _answers(host):
        engine = Engine(host)
    else:
        if host:
            reasons.append(f"DOCKER_HOST={host} does not answer")
        engine = _start_dockerd()
        if isinstance(engine, str):
            reasons.append(engine)
            if _answers(DEFAULT_SOCKET):
                engine = Engine(DEFAULT_SOCKET)
            else:
                reasons.append(f"nothing answers at {DEFAULT_SOCKET}")
                return "no Docker engine: " + "; ".join(reasons)
    why = _base_image(engine)
    if why is not None:
        engine.stop()
        return why
    return engine
