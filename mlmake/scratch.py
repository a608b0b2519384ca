"""Running a target away from the project's filesystem: its inputs travel by hash through a
remote cache into a scratch directory, and its outs travel back the same way.

Used by the Ray executor for nodes that cannot see the project path. The driver side packs
inputs (`pack_inputs`) and brings outs home (`unpack_outs`); the node side materializes
inputs (`materialize`) and collects outs (`collect`). Nothing here knows about Ray.
"""

from __future__ import annotations

import glob as globmod
import os
import shutil
import tempfile
from typing import Any

from mlmake.errors import RemoteError, StoreError
from mlmake.hashing import Hasher, StatCache, hash_file, is_glob
from mlmake.model import OutRecord
from mlmake.store import Store


def pack_inputs(deps: tuple[str, ...], root: str, hasher: Hasher, store: Store,
                remote: Any) -> list[tuple[str, OutRecord]]:
    """Driver side: put every dep (files, trees, glob matches) of the work tree into the
    local store and push what the remote lacks; returns (path, record) pairs."""
    inputs: list[tuple[str, OutRecord]] = []
    for dep in deps:
        paths = sorted(globmod.glob(dep, root_dir=root, recursive=True)) if is_glob(dep) \
            else [dep]
        for p in paths:
            full = os.path.join(root, p)
            if os.path.isdir(full):
                digest, entries = hasher.tree(p, manifest=True)
                for e in entries:
                    store.add_file(os.path.join(full, e.path), e.hash, e.executable,
                                   move=False)
                store.add_manifest(entries)
                inputs.append((p, OutRecord(digest, "dir")))
            elif os.path.isfile(full):
                st = os.stat(full)
                digest = hasher.file(p, st)
                store.add_file(full, digest, bool(st.st_mode & 0o111), move=False)
                inputs.append((p, OutRecord(digest, executable=bool(st.st_mode & 0o111))))
    oids = [o for _, rec in inputs for o in store.record_oids(rec)]
    moved = remote.push_objects(store, oids)
    if moved.missing:
        raise StoreError(f"cannot send inputs: {len(moved.missing)} objects are missing from "
                         "the local cache")
    return inputs


def node_store(cache_dir: str, root: str) -> Store:
    """A store on the node (shared by its tasks) linking into the scratch directory `root`."""
    os.makedirs(cache_dir, exist_ok=True)
    return Store(cache_dir, root, StatCache(None), ("hardlink", "copy"))


def _fetch(store: Store, remote: Any, records: list[tuple[str, OutRecord]]) -> None:
    manifests = {rec.oid: path for path, rec in records if rec.is_dir}
    if manifests:
        remote.fetch_objects(store, manifests)
    wanted: dict[str, str] = {}
    executable: set[str] = set()
    for path, rec in records:
        if rec.is_dir:
            for e in store.manifest(rec.hash) or []:
                wanted[e.hash] = f"{path}/{e.path}"
                if e.executable:
                    executable.add(e.hash)
        else:
            wanted[rec.hash] = path
            if rec.executable:
                executable.add(rec.hash)
    moved = remote.fetch_objects(store, wanted, executable)
    if moved.missing:
        raise RemoteError(f"remote '{remote.name}' lacks {len(moved.missing)} objects of "
                          f"{', '.join(sorted({wanted.get(o, o) for o in moved.missing})[:3])}")


def materialize(inputs: list[tuple[str, OutRecord]], outs: tuple[str, ...], remote: Any,
                cache_dir: str) -> str:
    """Node side: a fresh scratch directory holding the inputs (linked read-only from the
    node's store after every object was fetched and verified) and the outs' parents."""
    scratch = tempfile.mkdtemp(prefix="mlmake-scratch-")
    store = node_store(cache_dir, scratch)
    _fetch(store, remote, inputs)
    for path, rec in inputs:
        store.restore(path, rec)
    for out in outs:
        os.makedirs(os.path.dirname(os.path.join(scratch, out)) or scratch, exist_ok=True)
    return scratch


def collect(scratch: str, outs: tuple[str, ...], remote: Any,
            cache_dir: str) -> tuple[dict[str, OutRecord], list[str]]:
    """Node side: hash the outs the command wrote, push them; (records, missing outs)."""
    store = node_store(cache_dir, scratch)
    hasher = Hasher(scratch, StatCache(None))
    records: dict[str, OutRecord] = {}
    missing: list[str] = []
    for out in outs:
        full = os.path.join(scratch, out)
        if os.path.isdir(full):
            digest, entries = hasher.tree(out, manifest=True)
            rec = OutRecord(digest, "dir")
            store.save_out(out, rec, entries, link=False)
        elif os.path.isfile(full):
            mode = os.stat(full).st_mode
            rec = OutRecord(hash_file(full), executable=bool(mode & 0o111))
            store.save_out(out, rec, None, link=False)
        else:
            missing.append(out)
            continue
        records[out] = rec
    oids = [o for rec in records.values() for o in store.record_oids(rec)]
    remote.push_objects(store, oids)
    return records, missing


def unpack_outs(records: dict[str, OutRecord], metrics: tuple[str, ...], store: Store,
                remote: Any) -> None:
    """Driver side: fetch the outs a node produced and place them in the work tree (cached
    outs linked from the store, metrics as ordinary files)."""
    _fetch(store, remote, list(records.items()))
    for out, rec in records.items():
        if out in metrics:
            store.export(rec, os.path.join(store.root, out))
        else:
            store.restore(out, rec)


def discard(scratch: str) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
