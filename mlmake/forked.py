"""Mapping a function over many items in forked worker processes, one per CPU."""

from __future__ import annotations

import fcntl
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
_START = struct.Struct("<Q")  # each batch to do: the index of its first item


def forked_map(fn: Callable[[T], Any], items: Sequence[T],
               each: Callable[[list[int], list[Any]], None] | None = None,
               batch: int = 128) -> list[Any] | None:
    """[fn(item) for item in items], computed in one forked process per CPU (at most 8);
    None where forking is not safe: not Linux, threads running, or no process to spare.

    Processes rather than threads: no lock (the GIL) is shared, so every CPU works at once.
    An item whose call raised OSError, or whose worker died, comes back None: the caller
    redoes it itself, so that its error surfaces there. Results must be what marshal
    carries; each worker sees the items as they were when it was forked.

    The items are cut into batches of at most `batch`, which the workers take one at a
    time as they get free (from a pipe holding every batch's start), so that a worker that
    gets less of a CPU than the others does less of the work. Each batch's results come
    back as one frame; `each(indices, results)` (when given) is called here with every
    batch as it arrives, while the workers go on, so the caller's own work on the results
    overlaps theirs. A batch a worker never finished is not passed to `each` (its items
    come back None)."""
    if not sys.platform.startswith("linux") or threading.active_count() > 1 or not items:
        return None
    n = max(1, min(8, _cpus(), len(items)))
    kids: dict[int, int] = {}  # read end -> pid
    results: list[Any] = [None] * len(items)
    sel = selectors.DefaultSelector()
    work_r, work_w = os.pipe()
    try:
        # at least four batches a worker (a few large files are shared out one by one),
        # and every batch's start fits in the pipe, written before any worker reads it
        fits = fcntl.fcntl(work_w, fcntl.F_GETPIPE_SZ) // _START.size
        batch = max(1, min(batch, -(-len(items) // (4 * n))), -(-len(items) // fits))
        os.write(work_w, b"".join(_START.pack(i) for i in range(0, len(items), batch)))
        os.close(work_w)
        for _ in range(n):
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(r)
                os.close(w)
                if kids:
                    break  # fewer workers
                return None
            if pid == 0:
                _worker(fn, items, work_r, w, batch)  # never returns
            os.close(w)
            kids[r] = pid
            sel.register(r, selectors.EVENT_READ, bytearray())
        while kids:
            for key, _ in sel.select():
                r, buf = int(key.fd), key.data
                chunk = os.read(r, 1 << 20)
                if chunk:
                    buf += chunk
                    _deliver(buf, len(items), batch, results, each)
                    continue
                sel.unregister(r)
                os.close(r)
                os.waitpid(kids.pop(r), 0)
    finally:
        sel.close()
        os.close(work_r)
        for r, pid in kids.items():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
    return results


def _deliver(buf: bytearray, total: int, batch: int, results: list[Any],
             each: Callable[[list[int], list[Any]], None] | None) -> None:
    """Take the complete frames at the head of `buf` (a worker's output so far)."""
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
            if type(start) is not int or type(found) is not list or start % batch \
                    or not 0 <= start < total or len(found) != min(batch, total - start):
                continue
            indices = list(range(start, start + len(found)))
            results[start:start + len(found)] = found
            if each is not None:
                each(indices, found)
    del buf[:pos]  # once: deleting each batch from the front would move the rest each time


def _worker(fn: Callable[[T], Any], items: Sequence[T], work: int, w: int,
            batch: int) -> NoReturn:
    """A forked worker: takes batch starts from the pipe `work` until it is empty, sends
    each batch's results through the pipe `w`, then leaves without running any of the
    parent's cleanup (atexit, buffered output, locks)."""
    code = 1
    try:
        for lo, hi in ((3, min(work, w)), (min(work, w) + 1, max(work, w)),
                       (max(work, w) + 1, 1 << 16)):
            os.closerange(lo, hi)  # not the parent's locks and files
        while len(head := os.read(work, _START.size)) == _START.size:
            (start,) = _START.unpack(head)  # reads of whole starts: they never split
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
