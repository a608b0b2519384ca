"""`mlmake doctor`: verify every object of the local cache and of the remote, and repair
what can be repaired (corrupt local objects removed, corrupt remote copies replaced by good
local ones, temporary files of killed writers removed)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from mlmake.hashing import Entry, hash_file, tree_digest
from mlmake.model import OutRecord
from mlmake.store import MANIFEST_SUFFIX, Store


@dataclass(frozen=True)
class DoctorReport:
    """What `doctor` checked and what it repaired."""

    checked: int  # local objects read and hashed
    removed: tuple[str, ...]  # corrupt local objects, removed (rebuilt or pulled again later)
    temps: int  # temporary files of dead writers removed from the cache
    remote: str | None = None
    remote_checked: int = 0
    replaced: tuple[str, ...] = ()  # corrupt remote copies replaced with good local ones
    unrepaired: tuple[str, ...] = ()  # corrupt on the remote, no good copy here
    needed_missing: tuple[str, ...] = ()  # outs of the lock whose objects are now absent

    @property
    def healthy(self) -> bool:
        return not self.unrepaired


def check(store: Store, remote: Any = None, needed: Iterable[tuple[str, OutRecord]] = ()
          ) -> DoctorReport:
    """Hash every local object (no stat cache trusted), remove the corrupt ones; then read
    every object of `remote` (when given) and replace corrupt copies from the local store.
    `needed`: (out, record) pairs of the lock, to name the outs that now lack objects."""
    temps = store.sweep_temps()
    checked, removed = 0, []
    for oid in sorted(store.all_oids()):
        checked += 1
        if not _intact_file(store.object_path(oid), oid):
            store.remove(oid)
            removed.append(oid)
    report = DoctorReport(checked, tuple(removed), temps)
    if remote is not None:
        report = _check_remote(store, remote, report)
    missing = [out for out, rec in needed if store.missing(rec)]
    return DoctorReport(**{**report.__dict__, "needed_missing": tuple(sorted(set(missing)))})


def _check_remote(store: Store, remote: Any, report: DoctorReport) -> DoctorReport:
    remote.check()
    with remote.errors("verify"):
        loose = [n.replace("/", "") for n in remote.backend.names("objects")]
        packed = remote.packed(refresh=True)
        seen, replaced, unrepaired = 0, [], []
        for oid in sorted(set(loose) | set(packed)):
            seen += 1
            if remote.intact_copy(oid):
                continue
            path = store.object_path(oid)
            if os.path.exists(path) and _intact_file(path, oid):
                # loose copies are read before packed ones (a fetch falls back to them)
                remote.backend.upload(f"objects/{oid[:2]}/{oid[2:]}", path)
                if remote.intact_copy(oid):
                    replaced.append(oid)
                    continue
            unrepaired.append(oid)
    if unrepaired:
        remote.note_suspects(unrepaired)
    return DoctorReport(report.checked, report.removed, report.temps, remote.name, seen,
                        tuple(replaced), tuple(unrepaired))


def _intact_file(path: str, oid: str) -> bool:
    if oid.endswith(MANIFEST_SUFFIX):
        try:
            with open(path, "rb") as fh:
                raw = json.loads(fh.read())
            entries = [Entry(p, h, bool(x)) for p, h, x in raw]
        except (OSError, ValueError, TypeError):
            return False
        return tree_digest(entries) == oid[:-len(MANIFEST_SUFFIX)]
    try:
        return hash_file(path) == oid
    except OSError:
        return False

