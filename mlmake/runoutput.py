"""The outputs of a recorded run: which out record a path falls under, and where the bytes that run
produced are in the object store (a file) or what they hold (a directory)."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlmake.errors import StoreError, UsageError
from mlmake.model import MANIFEST_SUFFIX, OutRecord

if TYPE_CHECKING:
    from mlmake.store import Store


@dataclass(frozen=True)
class Listed:
    """One file of a directory output: its path below the asked path, hash and size (None
    when its object is gone)."""

    path: str
    hash: str
    size: int | None


@dataclass(frozen=True)
class RunOutput:
    """An output path of a run: a file (`object`, the store file holding its exact bytes,
    and `size`) or a directory, whole or in part (`listing`)."""

    path: str
    object: str | None = None
    size: int | None = None
    listing: tuple[Listed, ...] | None = None


def normalize(path: str) -> str:
    """`path` as a project-relative POSIX path; UsageError for one that leaves the project."""
    rel = posixpath.normpath(path.strip("/"))
    if rel.startswith("..") or rel in ("", "."):
        raise UsageError(f"'{path}' is not an output path.")
    return rel


def find(store: Store, records: dict[str, OutRecord], path: str, run_id: str
         ) -> RunOutput:
    """Where `path` is among `records` (out path → lock record, as the run left them) in
    `store`. UsageError when no out holds it; StoreError when its object is no longer in
    the cache or is corrupt (and was taken out)."""
    rel = normalize(path)
    for out, rec in records.items():
        if rel != out and not rel.startswith(out + "/"):
            continue
        inner = "" if rel == out else rel[len(out) + 1:]
        if rec.is_dir:
            entries = store.manifest(rec.hash)
            if entries is None:
                raise StoreError(f"'{out}' of run '{run_id}' is no longer in the cache "
                                 f"(object {rec.hash[:12]}{MANIFEST_SUFFIX}).")
            exact = [e for e in entries if e.path == inner]
            if exact:
                return _object(store, exact[0].hash, rel)
            below = [e for e in entries if not inner or e.path.startswith(inner + "/")]
            if not below:
                break
            cut = len(inner) + 1 if inner else 0
            return RunOutput(rel, listing=tuple(Listed(e.path[cut:], e.hash,
                                                       _size(store, e.hash))
                                                for e in below))
        if inner:
            break
        return _object(store, rec.hash, rel)
    raise UsageError(f"run '{run_id}' produced no output '{rel}'.")


def _object(store: Store, oid: str, rel: str) -> RunOutput:
    st = store.verify(oid, rel)
    return RunOutput(rel, object=store.object_path(oid), size=st.st_size)


def _size(store: Store, oid: str) -> int | None:
    try:
        return os.path.getsize(store.object_path(oid))
    except OSError:
        return None
