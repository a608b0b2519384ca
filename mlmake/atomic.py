"""Atomic file writes: a unique temporary name in the same directory, fsync, rename.

A crash at any instant leaves either the old file or the new one, never a mix; a killed
writer leaves at most a temporary file whose name `is_temp` recognises, for the next run to
remove (`sweep`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

TEMP_MARK = ".mlmake-tmp-"
_LEGACY_AGE_S = 60.0


def temp_name(path: str, tag: str = "") -> str:
    """A name beside `path` that no other call (thread or process) picks; `tag` names the
    host on storage that several machines share (a directory remote)."""
    return (f"{path}{TEMP_MARK}{os.getpid()}-{threading.get_ident() & 0xffffff:x}-"
            f"{os.urandom(4).hex()}{tag}")  # (the `secrets` module costs ~5 ms to import)


def is_temp(name: str, owned: bool = True) -> bool:
    """Whether `name` is a temporary file of a writer; in directories mlmake owns (cache,
    run cache) older names ending in `.tmp` count too, never in the work tree."""
    return TEMP_MARK in name or (owned and name.endswith(".tmp"))


def atomic_write(path: str, data: bytes | str, mode: int | None = None,
                 durable: bool = False, tag: str = "", tmp_dir: str | None = None,
                 sync: bool = True) -> None:
    """Replace `path` with `data` atomically (file contents fsynced before the rename);
    `durable` also fsyncs the directory, so the rename itself survives a power loss
    (for the lock, the run cache and remote indexes). `sync=False` leaves the fsync to
    the caller, who must make the file durable before anything durable names it."""
    raw = data.encode() if isinstance(data, str) else data
    write_with(path, lambda fh: fh.write(raw), mode, durable, tag, tmp_dir, sync)


def write_with(path: str, fill: Callable[[BinaryIO], object], mode: int | None = None,
               durable: bool = False, tag: str = "", tmp_dir: str | None = None,
               sync: bool = True) -> None:
    """Like atomic_write, with `fill(fh)` writing into the binary temp file. `tmp_dir`
    (on the same filesystem) holds the temp file instead of `path`'s directory, so that
    leftovers are found with one listing."""
    tmp = temp_name(path if tmp_dir is None else os.path.join(tmp_dir, os.path.basename(path)),
                    tag)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        elif os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def atomic_copy(src: str, path: str, mode: int | None = None, tag: str = "",
                tmp_dir: str | None = None) -> None:
    """Copy `src` to `path` atomically (fsynced)."""
    def fill(fh: BinaryIO) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, fh, 1 << 20)
    write_with(path, fill, mode, tag=tag, tmp_dir=tmp_dir)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_fs(path: str) -> None:
    """Flush the whole filesystem holding `path` (Linux syncfs; elsewhere sync): one call
    instead of an fsync per file when many files were written."""
    try:
        import ctypes

        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sweep(top: str, recursive: bool = True, owned: bool = True) -> int:
    """Remove temporary files under `top` whose writer is no longer alive (killed before
    its rename). A writer in another live process (a build in a worktree sharing the cache)
    keeps its file. Returns how many were removed."""
    removed = 0
    now = time.time()
    for path in _temps(top, recursive, owned):
        if not _orphaned(os.path.basename(path), now, path):
            continue
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


def _orphaned(name: str, now: float, path: str) -> bool:
    i = name.find(TEMP_MARK)
    if i >= 0:
        pid = name[i + len(TEMP_MARK):].split("-", 1)[0]
        if pid.isdigit():
            return int(pid) != os.getpid() and not _alive(int(pid))
    try:  # an older naming scheme: trust only its age
        return now - os.lstat(path).st_mtime > _LEGACY_AGE_S
    except OSError:
        return False


def orphaned_remote_temp(name: str, path: str, host_tag: str | None = None) -> bool:
    """Whether a temp file on shared storage belongs to a dead writer: one of this host
    (tagged `@host`) whose pid is gone, or any left for longer than an hour."""
    import socket

    tag = host_tag or "@" + "".join(c for c in socket.gethostname()
                                    if c.isalnum() or c in "-_")[:40]
    if name.endswith(tag):
        return _orphaned(name[:-len(tag)], time.time(), path)
    try:
        return time.time() - os.lstat(path).st_mtime > 3600
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temps(top: str, recursive: bool = True, owned: bool = True) -> Iterator[str]:
    if not recursive:
        try:
            names = os.listdir(top)
        except OSError:
            return
        for f in names:
            if is_temp(f, owned):
                yield os.path.join(top, f)
        return
    for d, _dirs, files in os.walk(top):
        for f in files:
            if is_temp(f, owned):
                yield os.path.join(d, f)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once at import, before any thread writes files
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK
