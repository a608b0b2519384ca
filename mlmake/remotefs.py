"""Where a remote's files live: a directory or any fsspec filesystem, written atomically.

A backend reads and writes files by path relative to the remote's root. Writes never expose a
partial file: filesystems that rename get a temporary name in the final directory and a
rename; object stores (S3, GCS, Azure) get a single PUT, invisible until complete. Credentials
are the filesystem's business (environment, profile); `scrub` keeps them out of messages.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from typing import Any
from collections.abc import Iterable, Iterator

from mlmake.atomic import (atomic_copy, atomic_write, is_temp, orphaned_remote_temp,
                           temp_name)
from mlmake.errors import RemoteSetupError

OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "azure", "oss", "memory"}


# -- secrets ------------------------------------------------------------------------------------
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_NAME = re.compile(r"secret|token|passw|credential|key|auth", re.I)


def scrub_url(url: str) -> str:
    """`url` without any `user:password@` part."""
    return _USERINFO.sub("", url)


def _secret_strings(key: str, value: Any, inherited: bool = False) -> Iterator[str]:
    """String values under a secret-looking key, at any depth of nested options."""
    secret = inherited or bool(_SECRET_NAME.search(key))
    if isinstance(value, str):
        if secret:
            yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _secret_strings(str(k), v, secret)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _secret_strings(key, v, secret)


def scrub(text: str, options: Iterable[tuple[str, Any]] = ()) -> str:
    """`text` with credentials masked: URL user info, the values of secret-looking options
    and environment variables. Applied to every message that quotes a remote's error."""
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6}
    for k, v in options:
        values.update(s for s in _secret_strings(k, v) if len(s) >= 4)
    for v in sorted(values, key=len, reverse=True):
        text = text.replace(v, "***")
    return scrub_url(text)


# -- backends -----------------------------------------------------------------------------------
TMP_DIR = "staging"  # a directory remote's temporary files, renamed into place
_HOST = "@" + "".join(c for c in socket.gethostname() if c.isalnum() or c in "-_")[:40]

class LocalBackend:
    """A directory remote (local disk or NFS): plain os calls, temp name + rename."""

    renames = True

    def __init__(self, root: str) -> None:
        self.root = root
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def _full(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def _tmp(self, full: str) -> str:
        """Make `full`'s directory; returns the remote's directory for temporary files
        (one for all, so a push finds what killed uploads left with one listing)."""
        tmp = os.path.join(self.root, TMP_DIR)
        for d in (os.path.dirname(full), tmp):
            if d not in self._made:
                os.makedirs(d, exist_ok=True)
                with self._lock:
                    self._made.add(d)
        return tmp

    def write(self, rel: str, data: bytes) -> None:
        full = self._full(rel)
        atomic_write(full, data, 0o644, tag=_HOST, tmp_dir=self._tmp(full))

    def upload(self, rel: str, local: str) -> None:
        full = self._full(rel)
        atomic_copy(local, full, 0o644, tag=_HOST, tmp_dir=self._tmp(full))

    def sweep(self) -> int:
        """Remove what uploads killed mid-way left (this host's dead writers, or any older
        than an hour)."""
        tmp = os.path.join(self.root, TMP_DIR)
        try:
            names = os.listdir(tmp)
        except OSError:
            return 0
        n = 0
        for f in names:
            if orphaned_remote_temp(f, os.path.join(tmp, f)):
                unlink(os.path.join(tmp, f))
                n += 1
        return n

    def read(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        with open(self._full(rel), "rb") as fh:
            if start is None:
                return fh.read()
            fh.seek(start)
            return fh.read((end or 0) - start)

    def download(self, rel: str, local: str) -> None:
        shutil.copyfile(self._full(rel), local)

    def remove(self, rel: str) -> None:
        unlink(self._full(rel))

    def exists(self, rel: str) -> bool:
        return os.path.isfile(self._full(rel))

    def names(self, rel_dir: str) -> list[str]:
        """Every file under `rel_dir`, relative to it (temporary files left out)."""
        base = self._full(rel_dir)
        out = []
        for d, _, files in os.walk(base):
            prefix = os.path.relpath(d, base).replace(os.sep, "/")
            for f in files:
                if not is_temp(f):
                    out.append(f if prefix == "." else f"{prefix}/{f}")
                elif orphaned_remote_temp(f, os.path.join(d, f)):
                    unlink(os.path.join(d, f))  # a killed upload's: it never became visible
        return out

    def probe(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise NotADirectoryError(f"'{self.root}' is not a directory")


class FsspecBackend:
    """Any fsspec filesystem; object stores get one PUT per file, others temp name + move."""

    def __init__(self, fs: Any, root: str, protocol: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.protocol = protocol
        self.renames = protocol not in OBJECT_STORES
        self._made: set[str] = set()

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def _dir(self, full: str) -> None:
        if self.renames:
            d = full.rsplit("/", 1)[0]
            if d not in self._made:
                self.fs.makedirs(d, exist_ok=True)
                self._made.add(d)

    def write(self, rel: str, data: bytes) -> None:
        full = self._full(rel)
        self._dir(full)
        if not self.renames:
            self.fs.pipe_file(full, data)
            return
        tmp = temp_name(full)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, full)

    def upload(self, rel: str, local: str) -> None:
        full = self._full(rel)
        self._dir(full)
        if not self.renames:
            self.fs.put_file(local, full)
            return
        tmp = temp_name(full)
        self.fs.put_file(local, tmp)
        self.fs.mv(tmp, full)

    def read(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        return bytes(self.fs.cat_file(self._full(rel), start=start, end=end))

    def download(self, rel: str, local: str) -> None:
        self.fs.get_file(self._full(rel), local)

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._full(rel))
        except FileNotFoundError:
            pass

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self._full(rel)))

    def names(self, rel_dir: str) -> list[str]:
        base = self._full(rel_dir).rstrip("/")
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        n = len(self.fs._strip_protocol(base).rstrip("/")) + 1
        return [p[n:] for p in (self.fs._strip_protocol(f) for f in found)
                if not is_temp(p.rsplit("/", 1)[-1])]

    def probe(self) -> None:
        """Fail fast when the bucket (or the top of the remote) cannot be reached."""
        top = self.root.split("/", 1)[0] if not self.renames else self.root
        if not top:
            return
        self.fs.invalidate_cache(top)
        if self.renames:
            return
        try:
            self.fs.info(top)
        except FileNotFoundError:
            raise FileNotFoundError(f"bucket '{top}' does not exist") from None


def connect(name: str, url: str, options: tuple[tuple[str, Any], ...], root: str,
            quick: bool = False) -> Any:
    """The backend for `url` (a directory relative to `root`, file://, or an fsspec URL);
    `quick` retries less (a build's lookups should not stall when the remote is away)."""
    protocol, path = split(url)
    if protocol in ("file", "local"):
        full = os.path.expanduser(path)
        if not os.path.isabs(full):
            full = os.path.join(root, full)
        return LocalBackend(os.path.normpath(full))
    opts = dict(options)
    if protocol in ("s3", "s3a"):
        config: dict[str, Any] = {"connect_timeout": 5}
        if "AWS_MAX_ATTEMPTS" not in os.environ:  # else botocore's own setting holds
            config["retries"] = {"max_attempts": 2 if quick else 4, "mode": "standard"}
        opts.setdefault("config_kwargs", config)
        opts.setdefault("use_listings_cache", False)
    opts.setdefault("skip_instance_cache", True)
    try:
        import fsspec

        fs = fsspec.filesystem(protocol, **opts)
    except ImportError as exc:
        extra = " (pip install 'mlmake[s3]')" if protocol in ("s3", "s3a") else ""
        raise RemoteSetupError(f"remote '{name}': {protocol}:// needs a package that is not "
                               f"installed{extra}: {scrub(str(exc), options)}") from None
    except (ValueError, TypeError) as exc:
        raise RemoteSetupError(f"remote '{name}' ({scrub_url(url)}) cannot be opened: "
                               f"{scrub(str(exc), options)}. Check its options.") from None
    return FsspecBackend(fs, fs._strip_protocol(url), protocol)


def transport_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errs += [BotoCoreError, ClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError as AioClientError

        errs.append(AioClientError)
    except ImportError:
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        errs.append(FSTimeoutError)
    except ImportError:
        pass
    return tuple(errs)


def default_jobs(url: str) -> int:
    """Parallel requests: many for object stores (latency-bound), fewer for directories."""
    protocol, _ = split(url)
    cores = os.cpu_count() or 2
    if protocol in ("file", "local"):
        return min(32, 4 * cores)
    return min(128, max(16, 8 * cores))


def split(url: str) -> tuple[str, str]:
    if "://" not in url:
        return "file", url
    protocol, rest = url.split("://", 1)
    return protocol.lower(), rest


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
