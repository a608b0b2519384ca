"""The data model: small frozen values shared by every layer (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MANIFEST_SUFFIX = ".dir"  # a directory out's manifest object is named by its tree hash + this
OUT_KINDS = ("file", "dir")


@dataclass(frozen=True, slots=True)
class Resources:
    """What a target holds while it runs: CPUs, GPUs, memory in bytes, custom Ray resources."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int = 0
    custom: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    """One buildable step after matrix expansion and `${}` interpolation.

    Paths are project-relative POSIX strings without a trailing slash; `deps` may hold globs.
    `params` lists the dotted keys the target reads (declared tables and keys used in `cmd`).
    """

    name: str
    base: str
    cmd: str
    deps: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    env: str | None = None
    resources: Resources = Resources()
    after: tuple[str, ...] = ()
    desc: str = ""
    wdir: str = "."
    cache: bool = True
    always: bool = False
    persist: bool = False
    track_imports: bool = True  # the project-local modules a Python cmd imports are deps
    matrix: tuple[tuple[str, str], ...] = ()
    cmd_source: str | tuple[str, ...] = ""  # the Mlfile's cmd before `${}` (exec form: a tuple)
    line: int | None = None

    @property
    def all_outs(self) -> tuple[str, ...]:
        """Every path the target writes: outs, then metrics, then plots."""
        return self.outs + self.metrics + self.plots

    @property
    def cached_outs(self) -> tuple[str, ...]:
        """Outs kept in the object store and ignored by Git (metrics are committed instead)."""
        return self.outs + self.plots


@dataclass(frozen=True, slots=True)
class EnvSpec:
    """An environment a target's command runs in: a venv or a container image."""

    name: str
    kind: str  # "venv" | "docker" | "image"
    requirements: str | None = None
    dockerfile: str | None = None
    context: str | None = None
    image: str | None = None
    network: str = "none"
    python: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """A named shared cache location with fsspec options."""

    name: str
    url: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A published pipeline: what a REST call builds, at which rev, with which params allowed."""

    name: str
    targets: tuple[str, ...]
    rev: str = "HEAD"
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When an endpoint fires by itself: exactly one of every, cron, on_commit, watch."""

    name: str
    endpoint: str
    every: float | None = None
    cron: str | None = None
    on_commit: str | None = None
    watch: tuple[str, ...] = ()
    poll: float = 10.0
    params: tuple[tuple[str, Any], ...] = ()  # param overrides for its runs (dotted keys)


@dataclass(frozen=True, slots=True)
class HooksSpec:
    """The Mlfile's [hooks] table: the actions it gives each Git hook it names (in table
    order), and whether a failed push blocks a `pre-` hook (`strict`)."""

    actions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    strict: bool = False

    def get(self, hook: str) -> tuple[str, ...] | None:
        """The actions the table gives `hook`; None when it does not name it."""
        for name, acts in self.actions:
            if name == hook:
                return acts
        return None

    def __contains__(self, hook: object) -> bool:
        return any(name == hook for name, _ in self.actions)


@dataclass(frozen=True, slots=True)
class RemoteOverride:
    """A [remote.NAME] table of the per-user config: a url and options that replace or add to
    the Mlfile's remote of that name (or define a new one, with a url)."""

    name: str
    url: str | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class UserConfig:
    """`.mlmake/config.toml`: this clone's default remote, push setting and remote overrides
    (an endpoint, a profile), never committed."""

    remote: str | None = None
    push: bool | None = None
    remotes: dict[str, RemoteOverride] = field(default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    """A parsed, validated Mlfile: targets in declaration order and project settings."""

    path: str
    root: str
    targets: dict[str, Target]
    default: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    params_files: tuple[str, ...] = ()
    jobs: int | None = None
    executor: str = "local"
    remote: str | None = None
    remotes: dict[str, RemoteSpec] = field(default_factory=dict)
    envs: dict[str, EnvSpec] = field(default_factory=dict)
    link: tuple[str, ...] = ("reflink", "hardlink", "copy")
    push: bool = False
    ray_data: str = "auto"
    lean: bool = False  # [project] materialize = "requested": only needed outs in the work tree
    hooks: HooksSpec = HooksSpec()
    endpoints: dict[str, EndpointSpec] = field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = field(default_factory=dict)
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutRecord:
    """What one out held when it was recorded, as the lock and the run cache store it.

    `hash` names a file's object, or a directory's tree, whose manifest object is
    `hash + MANIFEST_SUFFIX`. `as_json` gives the stored form byte for byte (an out's
    record is part of the lock file's and the run cache's formats): keys `hash`, `type`,
    then `files` and `size` when known, `exec` and `metric` only when true.
    """

    hash: str
    kind: str = "file"  # "file" | "dir"
    size: int | None = None
    files: int | None = None  # a directory's file count
    executable: bool = False
    metric: bool = False  # a metrics file: committed to Git, copied rather than linked

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def oid(self) -> str:
        """The object that names this out: the file's, or the directory's manifest."""
        return self.hash + MANIFEST_SUFFIX if self.kind == "dir" else self.hash

    @classmethod
    def from_json(cls, d: Any) -> OutRecord:
        """Read the stored form; TypeError or ValueError when it is not an out record."""
        if not isinstance(d, dict) or not isinstance(d.get("hash"), str):
            raise TypeError("an out record is an object with a string \"hash\"")
        kind = d.get("type", "file")
        if kind not in OUT_KINDS:
            raise ValueError(f"an out's type is {kind!r}, not \"file\" or \"dir\"")
        sizes = [d.get("size"), d.get("files")]
        for v in sizes:
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError("an out's size and file count are integers")
        return cls(d["hash"], kind, sizes[0], sizes[1], bool(d.get("exec")),
                   bool(d.get("metric")))

    def as_json(self) -> dict[str, Any]:
        """The stored form (see the class)."""
        d: dict[str, Any] = {"hash": self.hash, "type": self.kind}
        if self.files is not None:
            d["files"] = self.files
        if self.size is not None:
            d["size"] = self.size
        if self.executable:
            d["exec"] = True
        if self.metric:
            d["metric"] = True
        return d


ORIGIN_FIELDS = ("url", "version", "options")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A data source as Mlfile.lock records it: the out record of its content (stored and
    linked like a target's out) and, for imported data, where it came from: the URL, the
    version the origin reported (ETag, version id or content hash) and the filesystem
    options (never secrets: credentials come from the environment)."""

    out: OutRecord
    url: str | None = None
    version: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def hash(self) -> str:
        return self.out.hash

    @property
    def is_dir(self) -> bool:
        return self.out.is_dir

    @property
    def imported(self) -> bool:
        return self.url is not None

    @classmethod
    def from_json(cls, d: Any) -> SourceRecord:
        """Read the stored form; TypeError or ValueError when it is not a source record."""
        if not isinstance(d, dict):
            raise TypeError("a data source record is an object")
        out = OutRecord.from_json({k: v for k, v in d.items() if k not in ORIGIN_FIELDS})
        url, version, options = d.get("url"), d.get("version"), d.get("options", {})
        if url is not None and not isinstance(url, str):
            raise ValueError("a data source's \"url\" is a string")
        if not isinstance(options, dict):
            raise ValueError("a data source's \"options\" is an object")
        return cls(out, url, None if version is None else str(version),
                   tuple(sorted(options.items())))

    def as_json(self) -> dict[str, Any]:
        """The stored form: the out record's keys, then the origin's."""
        d = self.out.as_json()
        if self.url is not None:
            d["url"] = self.url
        if self.version is not None:
            d["version"] = self.version
        if self.options:
            d["options"] = dict(self.options)
        return d


def outs_json(outs: dict[str, OutRecord]) -> dict[str, dict[str, Any]]:
    """The stored form of a target's out records (path → record)."""
    return {path: rec.as_json() for path, rec in outs.items()}


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a target is stale: a kind and the subject with old and new values where they apply."""

    kind: str  # new|forced|always|cmd|dep|param|env|outs|out-missing|out-modified|upstream
    subject: str = ""
    old: Any = None
    new: Any = None
    via: str = ""  # an implicit dep: the file that imports it

    def describe(self) -> str:
        """One human line, e.g. `param train.lr: 0.1 → 0.2`."""
        k, s = self.kind, self.subject
        if k == "new":
            return "never built"
        if k == "forced":
            return "forced (-B / --force-only)"
        if k == "always":
            return "always = true"
        if k == "cmd":
            return "command changed"
        if k == "env":
            return f"environment '{s}' changed" if s else "no longer runs in an environment"
        if k == "outs":
            return "declared outs changed"
        if k == "dep":
            by = f" (imported by {self.via})" if self.via else ""
            if self.new is None:
                return f"dep missing: {s}{by}"
            if self.old is None:
                return f"dep added: {s}{by}"
            return f"dep {s} changed{by}" if by else f"dep changed: {s}"
        if k == "dep-removed":
            return f"dep removed: {s}"
        if k == "param":
            return f"param {s}: {_fmt(self.old)} → {_fmt(self.new)}"
        if k == "out-missing":
            return f"out missing: {s}"
        if k == "out-modified":
            return f"out modified: {s}"
        if k == "upstream":
            return f"upstream '{s}' is stale"
        return f"{k}: {s}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form used by `status --json`."""
        d: dict[str, Any] = {"kind": self.kind, "message": self.describe()}
        if self.subject:
            d["subject"] = self.subject
        if self.kind == "param":
            d["old"], d["new"] = self.old, self.new
        if self.via:
            d["imported_by"] = self.via
        return d


def _fmt(v: Any) -> str:
    return "(unset)" if v is None else repr(v) if isinstance(v, str) else str(v)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one target in a build: ran, reused, uptodate, failed or blocked."""

    target: str
    status: str  # ran | reused | uptodate | failed | blocked | skipped
    duration: float = 0.0
    exit_code: int | None = None
    log: str | None = None
    message: str = ""
    key: str | None = None
    source: str = ""  # where a reused result came from: "local" | remote name
    node: str = ""  # where it ran when not on this host (a Ray node id)

    @property
    def ok(self) -> bool:
        """True for every outcome that leaves the target's outs valid."""
        return self.status in ("ran", "reused", "uptodate")
