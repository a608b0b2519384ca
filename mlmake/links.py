"""How a stored object reaches a path (hard link, reflink, symlink or copy), and removing
such paths again."""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
import sys
from typing import Any

from mlmake import atomic

__all__ = ["copy_file", "link", "reflink", "remove_path", "unlink_quiet"]
_FICLONE = 0x40049409  # Linux ioctl: clone a file's extents (btrfs, XFS, ...)


def link(kind: str, obj: str, dest: str) -> None:
    """Make `dest` a `kind` link of the object file `obj` (copies are writable)."""
    if kind == "hardlink":
        os.link(obj, dest)
    elif kind == "reflink":
        reflink(obj, dest)
        os.chmod(dest, 0o644 | (os.stat(obj).st_mode & 0o111))
    elif kind == "symlink":
        os.symlink(obj, dest)
    else:
        copy_file(obj, dest)


def reflink(src: str, dest: str) -> None:
    """Make `dest` a copy-on-write clone of `src` (OSError where the filesystem cannot)."""
    if not sys.platform.startswith("linux"):
        from dvc_objects.fs.system import reflink as clone

        clone(src, dest)
        return
    import fcntl  # one ioctl: no need to load dvc_objects' filesystem layer for it

    fd = os.open(src, os.O_RDONLY)
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            fcntl.ioctl(out, _FICLONE, fd)
        except OSError:
            unlink_quiet(dest)
            raise
        finally:
            os.close(out)
    finally:
        os.close(fd)


def copy_file(src: str, dest: str) -> None:
    """A private, writable copy of `src` at `dest` (written atomically)."""
    atomic.atomic_copy(src, dest, 0o644 | (os.stat(src).st_mode & 0o111))


def unlink_quiet(path: str) -> None:
    """Remove a file if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_path(path: str) -> None:
    """Delete a file or a directory tree (read-only links included); nothing if absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat_mod.S_ISDIR(st.st_mode):
        shutil.rmtree(path, onerror=_force_writable)
    else:
        os.unlink(path)


def _force_writable(func: Any, path: str, _exc: Any) -> None:
    os.chmod(os.path.dirname(path), 0o755)
    func(path)
