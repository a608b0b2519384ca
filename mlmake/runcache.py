"""The run cache: target key → the outs that key produced, one small JSON file per key."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

from mlmake.atomic import atomic_write, is_temp

RUNCACHE_FORMAT = 1


class RunCache:
    """Entries under `path/ab/cdef…`; written atomically, never modified once written."""

    def __init__(self, path: str) -> None:
        self.path = path

    def entry_path(self, key: str) -> str:
        return os.path.join(self.path, key[:2], key[2:])

    def get(self, key: str) -> dict[str, dict[str, Any]] | None:
        """The out records for `key`, or None."""
        try:
            with open(self.entry_path(key), encoding="utf-8") as fh:
                data = json.load(fh)
        except (FileNotFoundError, ValueError):
            return None
        outs = data.get("outs") if isinstance(data, dict) else None
        return outs if isinstance(outs, dict) else None

    def put(self, key: str, target: str, outs: dict[str, dict[str, Any]]) -> None:
        path = self.entry_path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = {"version": RUNCACHE_FORMAT, "target": target, "created": time.time(),
                "outs": outs}
        atomic_write(path, json.dumps(data, sort_keys=True), durable=True)

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
