"""Sharing through a remote: which remote, push and pull of lock entries, and the build's view.

`push` and `pull` move the objects that chosen lock entries reference plus the run-cache
entries of their keys. `BuildRemote` is what a build talks to: run-cache lookups after the
local run cache, downloads of the outs it reuses, uploads after each success; its first
failure to reach the remote warns once and the build carries on without it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from mlmake import events as ev
from mlmake.errors import MlfileError, RemoteError, StoreError, UsageError, did_you_mean
from mlmake.lockfile import Lock, LockEntry
from mlmake.model import Pipeline, RemoteSpec
from mlmake.remote import CorruptRemoteObjectError, Progress, Remote
from mlmake.runcache import RunCache
from mlmake.store import MANIFEST_SUFFIX, Store

CONFIG = "config.toml"  # per-user, in .mlmake/ (which Git ignores)
_CONFIG_KEYS = ("project", "remote")
_CONFIG_PROJECT_KEYS = ("remote", "push")
_CONFIG_REMOTE_KEYS = ("url", "options")


# -- which remote ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UserConfig:
    """`.mlmake/config.toml`: this clone's default remote, push setting and remote overrides
    (an endpoint, a profile), never committed."""

    remote: str | None = None
    push: bool | None = None
    remotes: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_config(path: str) -> UserConfig:
    """Parse the per-user config; a missing file is an empty config."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    name = os.path.join(".mlmake", CONFIG)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        return UserConfig()
    except tomllib.TOMLDecodeError as exc:
        raise MlfileError(f"invalid TOML: {exc}. Fix or delete the file.", name) from None
    _keys(raw, _CONFIG_KEYS, "the top level", name)
    proj = raw.get("project", {})
    _keys(proj, _CONFIG_PROJECT_KEYS, "[project]", name)
    remote = proj.get("remote")
    push = proj.get("push")
    if remote is not None and not isinstance(remote, str):
        raise MlfileError("[project] remote must be a string (a remote's name).", name)
    if push is not None and not isinstance(push, bool):
        raise MlfileError("[project] push must be true or false.", name)
    remotes: dict[str, dict[str, Any]] = {}
    for rname, spec in raw.get("remote", {}).items():
        if not isinstance(spec, dict):
            raise MlfileError(f"[remote.{rname}] must be a table.", name)
        _keys(spec, _CONFIG_REMOTE_KEYS, f"[remote.{rname}]", name)
        if "url" in spec and not (isinstance(spec["url"], str) and spec["url"]):
            raise MlfileError(f"[remote.{rname}] url must be a non-empty string.", name)
        if not isinstance(spec.get("options", {}), dict):
            raise MlfileError(f"[remote.{rname}] options must be a table.", name)
        remotes[rname] = spec
    return UserConfig(remote, push, remotes)


def _keys(table: Any, allowed: tuple[str, ...], where: str, name: str) -> None:
    if not isinstance(table, dict):
        raise MlfileError(f"{where} must be a table.", name)
    for k in table:
        if k not in allowed:
            raise MlfileError(f"unknown key '{k}' in {where}; allowed: {', '.join(allowed)}."
                              + did_you_mean(k, allowed), name)


def remotes(pipeline: Pipeline, config: UserConfig) -> dict[str, RemoteSpec]:
    """The Mlfile's remotes with the per-user config's overrides and additions."""
    out = dict(pipeline.remotes)
    for name, spec in config.remotes.items():
        base = out.get(name)
        url = spec.get("url") or (base.url if base else None)
        if url is None:
            raise MlfileError(f"[remote.{name}] needs a `url`: the Mlfile defines no remote "
                              f"'{name}' to override.", os.path.join(".mlmake", CONFIG))
        options = dict(base.options if base else ())
        options.update(spec.get("options", {}))
        out[name] = RemoteSpec(name, url, tuple(sorted(options.items())))
    return out


def choose(pipeline: Pipeline, config: UserConfig, name: str | None) -> RemoteSpec | None:
    """The remote to use: `name`, else the config's or the Mlfile's default, else the only
    one defined; None when there is none."""
    known = remotes(pipeline, config)
    chosen = name or config.remote or pipeline.remote
    if chosen is None:
        return next(iter(known.values())) if len(known) == 1 else None
    if chosen not in known:
        hint = f" Known: {', '.join(sorted(known))}." if known else \
            " Add a [remote.NAME] table with a url to the Mlfile or to .mlmake/config.toml."
        raise UsageError(f"no remote named '{chosen}'.{did_you_mean(chosen, list(known))}"
                         f"{hint}")
    return known[chosen]


# -- push and pull ------------------------------------------------------------------------------
@dataclass
class PushResult:
    """What `push` moved: objects uploaded and already there, run-cache entries uploaded,
    outs that could not be pushed because the local cache lacks them."""

    remote: str
    pushed: int = 0
    nbytes: int = 0
    present: int = 0
    runcache: int = 0
    missing: list[str] = field(default_factory=list)
    duration: float = 0.0
    replaced: list[str] = field(default_factory=list)  # corrupt remote copies re-uploaded


@dataclass
class PullResult:
    """What `pull` fetched, the outs the remote lacks, and what the checkout restored."""

    remote: str
    fetched: int = 0
    nbytes: int = 0
    present: int = 0
    runcache: int = 0
    missing: list[str] = field(default_factory=list)
    checkout: Any = None
    duration: float = 0.0


def lock_entries(lock_path: str, names: set[str] | None, all_commits: bool,
                 root: str) -> list[tuple[str, LockEntry]]:
    """(target, entry) of the work tree's lock, and of every commit's with `all_commits`,
    for the targets in `names` (all when None)."""
    locks = [Lock.read(lock_path)]
    if all_commits:
        from mlmake import git

        locks += [Lock.parse(text, os.path.basename(lock_path))
                  for text in git.all_lock_texts(root, lock_path)]
    out = []
    seen: set[str] = set()
    for lock in locks:
        for n, e in sorted(lock.entries.items()):
            if names is not None and n not in names:
                continue
            sig = json.dumps([n, e.key, e.outs], sort_keys=True)
            if sig not in seen:
                seen.add(sig)
                out.append((n, e))
    return out


def push(remote: Remote, store: Store, runcache: RunCache,
         entries: list[tuple[str, LockEntry]], progress: Progress | None = None
         ) -> PushResult:
    """Upload the objects of `entries` and the run-cache entries of their keys; objects
    first, so a run-cache entry on the remote always finds its objects there."""
    t0 = time.monotonic()
    res = PushResult(remote.name)
    remote.check()
    oids: set[str] = set()
    complete: set[str] = set()
    for target, e in entries:
        need, whole = _local_oids(store, e.outs, res.missing)
        oids.update(need)
        if whole:
            complete.add(e.key)
    raws: dict[str, bytes] = {}
    for target, e in entries:
        if e.key not in complete:
            continue
        raw = runcache.raw(e.key)
        if raw is None:
            runcache.put(e.key, target, e.outs)  # a lock entry is a run-cache entry too
            raw = runcache.raw(e.key)
        outs = _outs_of(raw)
        if outs is None:
            continue
        extra, whole = _local_oids(store, outs, [])
        if whole:
            oids.update(extra)
            raws[e.key] = raw  # type: ignore[assignment]
    moved = remote.push_objects(store, oids, progress)
    res.pushed, res.nbytes, res.present = moved.objects, moved.nbytes, moved.present
    res.replaced = moved.replaced
    res.runcache = remote.runcache_put(raws)
    res.duration = time.monotonic() - t0
    return res


def pull(remote: Remote, store: Store, runcache: RunCache,
         entries: list[tuple[str, LockEntry]], progress: Progress | None = None
         ) -> PullResult:
    """Download the objects of `entries` and the run-cache entries of their keys into the
    local store; every object is verified before it is stored. Links nothing."""
    t0 = time.monotonic()
    res = PullResult(remote.name)
    remote.check()
    records = [(out, rec) for _, e in entries for out, rec in sorted(e.outs.items())]
    manifests = {rec["hash"] + MANIFEST_SUFFIX: out for out, rec in records
                 if rec.get("type") == "dir"}
    remote.fetch_objects(store, manifests)
    wanted, executable, owner = _wanted(store, records, res.missing)
    moved = remote.fetch_objects(store, wanted, executable, progress)
    res.fetched, res.nbytes, res.present = moved.objects, moved.nbytes, moved.present
    res.missing += sorted({owner[o] for o in moved.missing})
    keys = {e.key for _, e in entries if runcache.raw(e.key) is None}
    for key, raw in remote.runcache_get_many(keys).items():
        if _outs_of(raw) is not None:
            runcache.put_raw(key, raw)
            res.runcache += 1
    res.duration = time.monotonic() - t0
    return res


def _local_oids(store: Store, outs: dict[str, dict[str, Any]], missing: list[str]
                ) -> tuple[list[str], bool]:
    """The objects of `outs` that the local store holds, and whether that is all of them;
    outs it lacks are noted in `missing`."""
    need: list[str] = []
    whole = True
    for out, rec in sorted(outs.items()):
        try:
            oids = store.record_oids(rec)
        except StoreError:
            oids = []
        if not oids or not all(store.has(o) for o in oids):
            if out not in missing:
                missing.append(out)
            whole = False
            continue
        need += oids
    return need, whole


def _wanted(store: Store, records: list[tuple[str, dict[str, Any]]], missing: list[str]
            ) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """Objects (oid → what it is) that records need once their manifests are local, the
    executable ones, and which out each belongs to."""
    wanted: dict[str, str] = {}
    executable: set[str] = set()
    owner: dict[str, str] = {}
    for out, rec in records:
        if rec.get("type") == "dir":
            try:
                entries = store.manifest(rec["hash"])
            except StoreError:
                entries = None
            if entries is None:
                if out not in missing:
                    missing.append(out)
                continue
            for e in entries:
                wanted.setdefault(e.hash, f"{out}/{e.path}")
                owner.setdefault(e.hash, out)
                if e.executable:
                    executable.add(e.hash)
        else:
            wanted.setdefault(rec["hash"], out)
            owner.setdefault(rec["hash"], out)
            if rec.get("exec"):
                executable.add(rec["hash"])
    return wanted, executable, owner


def _outs_of(raw: bytes | None) -> dict[str, dict[str, Any]] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    outs = data.get("outs") if isinstance(data, dict) else None
    if not isinstance(outs, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("hash"), str) for r in outs.values()):
        return None
    return outs


# -- the build's view ---------------------------------------------------------------------------
class BuildRemote:
    """A remote as one build uses it; also the build's run cache (`get`/`put`), layered over
    the local one. Called from worker threads.

    Lookups and downloads stop at the first failure to reach the remote (one warning), and so
    do uploads; a corrupt object is refused per target and that target runs instead.
    """

    def __init__(self, remote: Remote, store: Store, local: RunCache, reporter: ev.Reporter,
                 lookup: bool = True, push: bool = False) -> None:
        self.remote = remote
        self.name = remote.name
        self.store = store
        self.local = local
        self.reporter = reporter
        self.lookup = lookup
        self.push = push
        self._hits: dict[str, bytes] = {}
        self._misses: set[str] = set()
        self._lock = threading.Lock()
        self._checked = False
        self._down = False

    # -- run cache --------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, dict[str, Any]] | None:
        """Out records for `key`: the local run cache's, else the remote's (whose directory
        manifests are fetched, so dependents' keys can be computed without the files)."""
        recs = self.local.get(key)
        if recs is not None or not self.lookup:
            return recs
        with self._lock:
            if key in self._hits:
                return _outs_of(self._hits[key])
            if key in self._misses:
                return None
        raw = self._call(self.remote.runcache_get, key)
        outs = _outs_of(raw)
        if outs is not None:
            manifests = {r["hash"] + MANIFEST_SUFFIX: out for out, r in outs.items()
                         if r.get("type") == "dir"}
            try:
                self._call(self.remote.fetch_objects, self.store, manifests)
            except CorruptRemoteObjectError:
                pass
            if not all(self.store.has(o) for o in manifests):
                outs = None  # a directory out that cannot be described: not usable
        with self._lock:
            if outs is None:
                self._misses.add(key)
            else:
                self._hits[key] = raw  # type: ignore[assignment]
        return outs

    def put(self, key: str, target: str, outs: dict[str, dict[str, Any]]) -> None:
        self.local.put(key, target, outs)

    def raw(self, key: str) -> bytes | None:
        return self.local.raw(key)

    def source(self, key: str | None) -> str:
        """"local", or this remote's name when `key`'s entry came from it."""
        with self._lock:
            return self.name if key in self._hits else "local"

    def adopt(self, key: str | None) -> None:
        """Keep a remote entry in the local run cache once its outs are local."""
        with self._lock:
            raw = self._hits.get(key) if key else None
        if raw is not None and key is not None and self.local.raw(key) is None:
            self.local.put_raw(key, raw)

    # -- objects ----------------------------------------------------------------------------
    def available(self, outs: dict[str, dict[str, Any]]) -> bool:
        """True when every object of `outs` is in the local store or on the remote."""
        try:
            missing = {o for rec in outs.values() for o in self.store.missing(rec)}
        except StoreError:
            return False
        if not missing:
            return True
        if not self.lookup:
            return False
        there = self._call(self.remote.present, missing)
        return there is not None and missing <= there

    def fetch(self, outs: dict[str, dict[str, Any]]) -> bool:
        """Download the objects of `outs` that the local store lacks; True when something
        came from the remote. CorruptRemoteObjectError names a refused object."""
        if not self.lookup:
            return False
        records = sorted(outs.items())
        if not any(self.store.missing(rec) for _, rec in records):
            return False
        manifests = {rec["hash"] + MANIFEST_SUFFIX: out for out, rec in records
                     if rec.get("type") == "dir"}
        if self._call(self.remote.fetch_objects, self.store, manifests) is None:
            return False
        wanted, executable, _ = _wanted(self.store, records, [])
        moved = self._call(self.remote.fetch_objects, self.store, wanted, executable)
        return bool(moved and moved.objects)

    def prefetch(self, entries: Iterable[LockEntry]) -> None:
        """Fetch the directory manifests the lock records (small), so a fresh clone can plan
        with them before any out is downloaded."""
        if not self.lookup:
            return
        manifests = {rec["hash"] + MANIFEST_SUFFIX: out for e in entries
                     for out, rec in e.outs.items() if rec.get("type") == "dir"}
        manifests = {o: label for o, label in manifests.items() if not self.store.has(o)}
        if manifests:
            try:
                self._call(self.remote.fetch_objects, self.store, manifests)
            except CorruptRemoteObjectError:
                pass  # planning falls back to the work tree; the target is rebuilt

    def upload(self, target: str, key: str | None, outs: dict[str, dict[str, Any]]) -> None:
        """Push one target's objects and run-cache entry right after it succeeded."""
        if not self.push or key is None or self._down:  # (a down remote warned already)
            return
        need, whole = _local_oids(self.store, outs, [])
        raw = self.local.raw(key)
        if not whole or raw is None:
            return
        try:
            self.remote.push_objects(self.store, need)
            self.remote.runcache_put({key: raw})
        except RemoteError as exc:
            with self._lock:
                if not self.push:
                    return
                self.push = False
            self.reporter.emit(ev.Notice(f"{exc} Not pushing the rest of this build; push it "
                                         "later with `mlmake push`.", "warning"))

    # -- failures ---------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any) -> Any:
        """fn(*args), or None once the remote failed (the first failure warns)."""
        if self._down:
            return None
        try:
            if not self._checked:
                self.remote.check()
                self._checked = True
            return fn(*args)
        except CorruptRemoteObjectError:
            raise
        except RemoteError as exc:
            with self._lock:
                first = not self._down
                self._down = True
            if first:
                self.reporter.emit(ev.Notice(f"{exc} Building without it.", "warning"))
            return None

    def close(self) -> None:
        self.remote.close()
