"""Mapping a function over many items in forked worker processes, one per CPU."""

from __future__ import annotations

import marshal
import os
import selectors
import signal
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

__all__ = ["forked_map"]

_FRAME = struct.Struct("<Q")  # each batch a worker sends: its length, then its marshal


def forked_map(fn: Callable[[T], Any], items: Sequence[T],
               each: Callable[[list[int], list[Any]], None] | None = None,
               batch: int = 128) -> list[Any] | None:
    """[fn(item) for item in items], computed in one forked process per CPU (at most 8);
    None where forking is not safe: not Linux, threads running, or no process to spare.

    Processes rather than threads: no lock (the GIL) is shared, so every CPU works at once.
    An item whose call raised OSError, or whose worker died, comes back None: the caller
    redoes it itself, so that its error surfaces there. Results must be what marshal
    carries; each worker sees the items as they were when it was forked.

    Workers send their results `batch` items at a time; `each(indices, results)` (when
    given) is called here with every batch as it arrives, while the workers go on, so the
    caller's own work on the results overlaps theirs. A batch a worker never finished is
    not passed to `each` (its items come back None)."""
    if not sys.platform.startswith("linux") or threading.active_count() > 1 or not items:
        return None
    n = max(1, min(8, _cpus(), len(items)))
    kids: dict[int, tuple[int, range]] = {}  # read end -> (pid, the items it was dealt)
    results: list[Any] = [None] * len(items)
    sel = selectors.DefaultSelector()
    try:
        for part in (range(i, len(items), n) for i in range(n)):  # dealt round-robin
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(r)
                os.close(w)
                return None
            if pid == 0:
                _worker(fn, [items[i] for i in part], w, batch)  # never returns
            os.close(w)
            kids[r] = (pid, part)
            sel.register(r, selectors.EVENT_READ, bytearray())
        while kids:
            for key, _ in sel.select():
                r, buf = int(key.fd), key.data
                chunk = os.read(r, 1 << 20)
                if chunk:
                    buf += chunk
                    _deliver(buf, kids[r][1], results, each)
                    continue
                sel.unregister(r)
                os.close(r)
                pid, _ = kids.pop(r)
                os.waitpid(pid, 0)
    finally:
        sel.close()
        for r, (pid, _) in kids.items():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
    return results


def _deliver(buf: bytearray, part: range, results: list[Any],
             each: Callable[[list[int], list[Any]], None] | None) -> None:
    """Take the complete batches at the head of `buf` (a worker's output so far)."""
    pos = 0
    with memoryview(buf) as view:
        while len(buf) - pos >= _FRAME.size:
            (size,) = _FRAME.unpack_from(view, pos)
            end = pos + _FRAME.size + size
            if len(buf) < end:
                break
            try:
                start, found = marshal.loads(view[pos + _FRAME.size:end])
            except (EOFError, ValueError, TypeError):
                start, found = 0, None
            pos = end
            if type(start) is not int or type(found) is not list:
                continue
            indices = list(part[start:start + len(found)])
            if len(indices) != len(found):
                continue
            for i, res in zip(indices, found, strict=True):
                results[i] = res
            if each is not None:
                each(indices, found)
    del buf[:pos]  # once: deleting each batch from the front would move the rest each time


def _worker(fn: Callable[[T], Any], items: list[T], w: int, batch: int) -> NoReturn:
    """A forked worker: fn over `items`, results through the pipe `w` a batch at a time,
    then leave without running any of the parent's cleanup (atexit, buffered output,
    locks)."""
    code = 1
    try:
        os.closerange(3, w)  # not the parent's locks and files
        os.closerange(w + 1, 1 << 16)
        for start in range(0, len(items), batch):
            found: list[Any] = []
            for item in items[start:start + batch]:
                try:
                    found.append(fn(item))
                except OSError:
                    found.append(None)
            data = marshal.dumps((start, found))
            view = memoryview(_FRAME.pack(len(data)) + data)
            while view:
                view = view[os.write(w, view):]
        code = 0
    finally:
        os._exit(code)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
