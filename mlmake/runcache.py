"""The run cache: target key → the outs that key produced, one small JSON file per key."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from mlmake.atomic import atomic_write, is_temp
from mlmake.model import OutRecord, outs_json

RUNCACHE_FORMAT = 1


class RunCache:
    """Entries under `path/ab/cdef…`; written atomically, never modified once written."""

    def __init__(self, path: str) -> None:
        self.path = path

    def entry_path(self, key: str) -> str:
        return os.path.join(self.path, key[:2], key[2:])

    def get(self, key: str) -> dict[str, OutRecord] | None:
        """The out records for `key`, or None (also for an entry it cannot read)."""
        return outs_of(self.raw(key))

    def put(self, key: str, target: str, outs: dict[str, OutRecord],
            durable: bool = True) -> None:
        """Record `key` → `outs`; not `durable`: the caller fsyncs the entry and its
        directory later (a build does before its next lock write)."""
        path = self.entry_path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = {"version": RUNCACHE_FORMAT, "target": target, "created": time.time(),
                "outs": outs_json(outs)}
        atomic_write(path, json.dumps(data, sort_keys=True), durable=durable, sync=durable)

    def raw(self, key: str) -> bytes | None:
        try:
            with open(self.entry_path(key), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def put_raw(self, key: str, data: bytes) -> None:
        path = self.entry_path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data, durable=True)

    def remove(self, key: str) -> None:
        try:
            os.unlink(self.entry_path(key))
        except FileNotFoundError:
            pass

    def keys(self) -> Iterator[str]:
        if not os.path.isdir(self.path):
            return
        for prefix in sorted(os.listdir(self.path)):
            d = os.path.join(self.path, prefix)
            if len(prefix) != 2 or not os.path.isdir(d):
                continue
            for rest in os.listdir(d):
                if not is_temp(rest):
                    yield prefix + rest


def parse_entry(raw: bytes | None) -> tuple[str, dict[str, OutRecord]] | None:
    """(target, out records) of a run-cache entry's bytes (local or a remote's); None when
    there are none or they are not a valid entry."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    outs = data.get("outs") if isinstance(data, dict) else None
    if not isinstance(outs, dict):
        return None
    try:
        records = {str(path): OutRecord.from_json(rec) for path, rec in outs.items()}
    except (TypeError, ValueError):
        return None
    return str(data.get("target") or ""), records


def outs_of(raw: bytes | None) -> dict[str, OutRecord] | None:
    """The out records of a run-cache entry's bytes, or None (see `parse_entry`)."""
    entry = parse_entry(raw)
    return None if entry is None else entry[1]
