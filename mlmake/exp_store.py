"""Experiment records as Git objects: a commit per experiment under refs/mlmake/exps/NAME whose
tree is what it built (code, params, lock, metrics) and whose message carries its record as
JSON; plus the snapshot of an uncommitted work tree that an experiment builds."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from mlmake.errors import GitError, UsageError

REF_PREFIX = "refs/mlmake/exps/"
REF_GLOB = REF_PREFIX + "*"
_SUBJECT = "mlmake exp "
_FIELD, _RECORD = "\x1f", "\x1e"


@dataclass(frozen=True)
class Experiment:
    """One recorded experiment: `commit` holds its tree, `base` the commit it started from,
    `code` the snapshot of the uncommitted code it ran (None: a clean work tree).

    `params` are every param it saw (dotted), `metrics` path → dotted key → value, `outs`
    target → out path → content hash, `run_id` the build in the run records."""

    name: str
    commit: str
    base: str
    code: str | None
    status: str
    created: float
    targets: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    outs: dict[str, dict[str, str]] = field(default_factory=dict)
    run_id: str = ""
    message: str = ""

    def record(self) -> dict[str, Any]:
        """The JSON kept in the commit message (everything but the commit itself)."""
        return {"name": self.name, "base": self.base, "code": self.code,
                "status": self.status, "created": self.created, "targets": list(self.targets),
                "overrides": self.overrides, "params": self.params, "metrics": self.metrics,
                "outs": self.outs, "run_id": self.run_id, "message": self.message}

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form, with the commit as `rev`."""
        return {"rev": self.commit, **self.record()}

    @classmethod
    def from_record(cls, commit: str, data: dict[str, Any]) -> Experiment:
        return cls(name=str(data["name"]), commit=commit, base=str(data.get("base", "")),
                   code=data.get("code"), status=str(data.get("status", "")),
                   created=float(data.get("created", 0)),
                   targets=tuple(data.get("targets") or ()),
                   overrides=dict(data.get("overrides") or {}),
                   params=dict(data.get("params") or {}),
                   metrics=dict(data.get("metrics") or {}),
                   outs=dict(data.get("outs") or {}), run_id=str(data.get("run_id", "")),
                   message=str(data.get("message", "")))


def git(cwd: str, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run a git command in `cwd` (no hooks) and return its stdout; GitError when it fails."""
    r = _run(cwd, args, env)
    if check and r.returncode != 0:
        raise GitError(f"git {' '.join(args[:3])} failed in '{cwd}': "
                       f"{(r.stderr or r.stdout).strip()}")
    return r.stdout


def _run(cwd: str, args: tuple[str, ...], env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=cwd,
                          capture_output=True, text=True, env=full, check=False)


def _identity(cwd: str) -> dict[str, str]:
    """Author and committer for records made where Git has no identity configured."""
    if git(cwd, "config", "user.name", check=False).strip() and \
            git(cwd, "config", "user.email", check=False).strip():
        return {}
    return {"GIT_AUTHOR_NAME": "mlmake", "GIT_AUTHOR_EMAIL": "mlmake@localhost",
            "GIT_COMMITTER_NAME": "mlmake", "GIT_COMMITTER_EMAIL": "mlmake@localhost"}


def snapshot(repo_root: str, scratch_dir: str) -> tuple[str, str | None]:
    """(HEAD's sha, a commit on HEAD holding the work tree as it is now, or None when the
    work tree matches HEAD). Tracked and untracked files that Git does not ignore are
    included; a temporary index is used, so the user's index is not touched."""
    base = git(repo_root, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).strip()
    if not base:
        raise UsageError("experiments start from a commit: this repository has none yet. "
                         "Commit the project first (`git add -A && git commit`).")
    os.makedirs(scratch_dir, exist_ok=True)
    fd, index = tempfile.mkstemp(prefix="exp-index-", dir=scratch_dir)
    os.close(fd)
    os.unlink(index)
    env = {"GIT_INDEX_FILE": index}
    try:
        git(repo_root, "read-tree", base, env=env)
        git(repo_root, "add", "-A", "--", ":/", env=env)
        tree = git(repo_root, "write-tree", env=env).strip()
    finally:
        if os.path.exists(index):
            os.unlink(index)
    if tree == git(repo_root, "rev-parse", base + "^{tree}").strip():
        return base, None
    code = git(repo_root, "commit-tree", tree, "-p", base, "-m",
               "mlmake exp: uncommitted changes", env=_identity(repo_root)).strip()
    return base, code


def record(worktree: str, parent: str, exp: Experiment) -> Experiment:
    """Commit the worktree as it is (its own index) on `parent`, with `exp`'s record as the
    message, and point refs/mlmake/exps/NAME at it. Returns `exp` with its commit."""
    git(worktree, "add", "-A", "--", ":/")
    tree = git(worktree, "write-tree").strip()
    msg = _SUBJECT + exp.name + "\n\n" + json.dumps(exp.record(), sort_keys=True,
                                                      default=str)
    sha = _commit_tree(worktree, tree, parent, msg)
    git(worktree, "update-ref", REF_PREFIX + exp.name, sha)
    return Experiment.from_record(sha, exp.record())


def record_files(repo_root: str, parent: str, files: dict[str, bytes],
                 exp: Experiment) -> Experiment:
    """Record `exp` as `parent`'s tree with `files` (paths from the repository root →
    bytes) replaced, through a temporary index; no work tree is needed."""
    git_dir = git(repo_root, "rev-parse", "--absolute-git-dir").strip()
    with tempfile.TemporaryDirectory(prefix="mlmake-exp-", dir=git_dir) as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git(repo_root, "read-tree", parent, env=env)
        lines = []
        for i, (rel, data) in enumerate(sorted(files.items())):
            path = os.path.join(tmp, f"f{i}")
            with open(path, "wb") as fh:
                fh.write(data)
            lines.append((rel, path))
        shas = git(repo_root, "hash-object", "-w", *(p for _, p in lines)).split() \
            if lines else []
        info = "".join(f"100644 {sha}\t{rel}\n" for (rel, _), sha in zip(lines, shas))
        r = subprocess.run(["git", "update-index", "--add", "--index-info"], cwd=repo_root,
                           input=info, capture_output=True, text=True, check=False,
                           env={**os.environ, **env})
        if r.returncode != 0:
            raise GitError(f"cannot record the experiment: {r.stderr.strip()}")
        tree = git(repo_root, "write-tree", env=env).strip()
    msg = _SUBJECT + exp.name + "\n\n" + json.dumps(exp.record(), sort_keys=True,
                                                      default=str)
    sha = _commit_tree(repo_root, tree, parent, msg)
    git(repo_root, "update-ref", REF_PREFIX + exp.name, sha)
    return Experiment.from_record(sha, exp.record())


def _commit_tree(cwd: str, tree: str, parent: str, message: str) -> str:
    env = dict(os.environ)
    env.update(_identity(cwd))
    r = subprocess.run(["git", "commit-tree", tree, "-p", parent, "-F", "-"], cwd=cwd,
                       input=message, capture_output=True, text=True, env=env,
                       check=False)
    if r.returncode != 0:
        raise GitError(f"cannot record the experiment: {r.stderr.strip()}")
    return r.stdout.strip()


def load(repo_root: str) -> list[Experiment]:
    """Every recorded experiment, oldest first."""
    out = git(repo_root, "for-each-ref", "--format=%(objectname)%1f%(contents)%1e", REF_PREFIX)
    found: list[Experiment] = []
    for chunk in out.split(_RECORD):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        sha, _, message = chunk.partition(_FIELD)
        _, _, body = message.partition("\n\n")
        try:
            data = json.loads(body)
        except ValueError:
            continue  # not an mlmake record: left alone
        if isinstance(data, dict) and "name" in data:
            found.append(Experiment.from_record(sha.strip(), data))
    return sorted(found, key=lambda e: (e.created, e.name))


def check_name(repo_root: str, name: str) -> None:
    """Refuse a name that cannot name a Git ref (spaces, `..`, `~`, …)."""
    if "/" in name or _bad_ref(repo_root, name):
        raise UsageError(f"'{name}' cannot name an experiment: use letters, digits, '-', "
                         "'_' and '.' (a Git ref name).")


def _bad_ref(repo_root: str, name: str) -> bool:
    r = subprocess.run(["git", "check-ref-format", REF_PREFIX + name], cwd=repo_root,
                       capture_output=True, check=False)
    return r.returncode != 0


def delete(repo_root: str, name: str) -> None:
    """Remove the ref of experiment `name` (its objects go with Git's own gc)."""
    git(repo_root, "update-ref", "-d", REF_PREFIX + name)


def file_at(repo_root: str, commit: str, relpath: str) -> bytes | None:
    """Bytes of `relpath` (from the repository root) in `commit`, None when absent."""
    r = subprocess.run(["git", "cat-file", "blob", f"{commit}:{relpath}"], cwd=repo_root,
                       capture_output=True, check=False)
    return r.stdout if r.returncode == 0 else None


def changed_paths(repo_root: str, a: str | None, b: str | None = None) -> set[str]:
    """Paths that differ between commit `a` and `b` (None: the work tree)."""
    args = ["diff", "--name-only", "--no-renames"]
    if a is not None:
        args.append(a)
    if b is not None:
        args.append(b)
    return {p for p in git(repo_root, *args, "--").splitlines() if p}


def code_diff(repo_root: str, exp: Experiment) -> str:
    """The patch of uncommitted code that `exp` ran ('' when the work tree was clean)."""
    if not exp.code:
        return ""
    return git(repo_root, "diff", "--binary", exp.base, exp.code)


def restore(repo_root: str, commit: str) -> None:
    """Make the work tree and index match `commit` (files it lacks that Git tracks go)."""
    git(repo_root, "restore", f"--source={commit}", "--staged", "--worktree", "--", ":/")


def branch(repo_root: str, commit: str, name: str) -> None:
    """Create Git branch `name` at `commit`; an existing branch is refused."""
    if git(repo_root, "rev-parse", "--verify", "-q", f"refs/heads/{name}", check=False).strip():
        raise UsageError(f"branch '{name}' exists already; pick another name.")
    git(repo_root, "branch", name, commit)


# -- sharing through a Git remote --------------------------------------------------------------
@dataclass
class RefSync:
    """What a push or fetch of experiment refs did with Git remote `remote` (None: the
    repository has none, and nothing moved): the experiments it moved, how many the sending
    side holds, those it left alone because the other side holds another experiment of the
    same name (neither side's is overwritten unless asked), and, for a fetch that could not
    reach the remote, why (`error`)."""

    remote: str | None
    moved: list[str] = field(default_factory=list)
    recorded: int = 0
    clashed: list[str] = field(default_factory=list)
    error: str = ""


def toplevel(path: str) -> str | None:
    """The work tree root of the Git repository holding `path`; None outside one, or where
    no `git` program is installed (push and pull then leave experiments out)."""
    try:
        r = _run(path, ("rev-parse", "--show-toplevel"))
    except OSError:
        return None
    return os.path.realpath(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() \
        else None


def git_remote(repo_root: str) -> str | None:
    """The Git remote experiments are shared with: the current branch's upstream remote,
    else `origin`, else the only remote; None when the repository has none to pick."""
    remotes = git(repo_root, "remote", check=False).split()
    if not remotes:
        return None
    branch = git(repo_root, "symbolic-ref", "-q", "--short", "HEAD", check=False).strip()
    if branch:
        upstream = git(repo_root, "config", f"branch.{branch}.remote", check=False).strip()
        if upstream in remotes:
            return upstream
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else None


def _refs(listing: str) -> dict[str, str]:
    """Experiment name → commit, from lines of `SHA<whitespace>REFNAME`."""
    found: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, ref = line.strip().partition("\t")
        if ref.startswith(REF_PREFIX) and not ref.endswith("^{}"):
            found[ref[len(REF_PREFIX):]] = sha
    return found


def _local_refs(repo_root: str) -> dict[str, str]:
    return _refs(git(repo_root, "for-each-ref", "--format=%(objectname)%09%(refname)",
                     REF_PREFIX))


def _on_remote(repo_root: str, remote: str, verb: str, *args: str) -> str:
    """Run git `args` against Git remote `remote`; a failure names the remote."""
    r = _run(repo_root, args)
    if r.returncode == 0:
        return r.stdout
    url = git(repo_root, "remote", "get-url", remote, check=False).strip()
    where = f"'{remote}'" + (f" ({url})" if url and url != remote else "")
    lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
    detail = (lines[0].removeprefix("fatal: ").removeprefix("error: ").rstrip(".")
              if lines else f"git {args[0]} failed")
    raise GitError(f"cannot {verb} experiments (refs/mlmake/exps/*) with Git remote {where}: "
                   f"{detail}")


def push_refs(repo_root: str, remote: str | None = None, names: list[str] | None = None,
              replace: bool = False) -> RefSync:
    """Push the refs of the experiments recorded here (those of `names`, else all) that
    Git remote `remote` (default: `git_remote`) lacks. One that it holds as another
    experiment of the same name is left in `clashed`, unless `replace`. No experiments
    here: nothing runs, no remote is asked."""
    ours = _local_refs(repo_root)
    if names is not None:
        ours = {n: ours[n] for n in names if n in ours}
    remote = (remote or git_remote(repo_root)) if ours else remote
    res = RefSync(remote, recorded=len(ours))
    if not ours or remote is None:
        return res
    theirs = _refs(_on_remote(repo_root, remote, "list", "ls-remote", "--refs", remote,
                              REF_GLOB))
    for name, sha in sorted(ours.items()):
        if theirs.get(name) != sha:
            (res.moved if replace or name not in theirs else res.clashed).append(name)
    plus = "+" if replace else ""
    for i in range(0, len(res.moved), _BATCH):
        _on_remote(repo_root, remote, "push", "push", "--quiet", "--no-verify", remote,
                   *(f"{plus}{REF_PREFIX}{n}:{REF_PREFIX}{n}"
                     for n in res.moved[i:i + _BATCH]))
    return res


def fetch_refs(repo_root: str, remote: str | None = None) -> RefSync:
    """Fetch the refs of the experiments of Git remote `remote` (default: `git_remote`;
    none: nothing is done) that this repository lacks; one recorded here under the same
    name as another there is kept, and left in `clashed`. FETCH_HEAD, tags and branches are
    not touched."""
    remote = remote or git_remote(repo_root)
    if remote is None:
        return RefSync(None)
    theirs = _refs(_on_remote(repo_root, remote, "list", "ls-remote", "--refs", remote,
                              REF_GLOB))
    res = RefSync(remote, recorded=len(theirs))
    if not theirs:
        return res
    ours = _local_refs(repo_root)
    for name, sha in sorted(theirs.items()):
        if ours.get(name) != sha:
            (res.clashed if name in ours else res.moved).append(name)
    for i in range(0, len(res.moved), _BATCH):
        _on_remote(repo_root, remote, "fetch", "fetch", "--quiet", "--no-tags",
                   "--no-write-fetch-head", remote,
                   *(f"{REF_PREFIX}{n}:{REF_PREFIX}{n}" for n in res.moved[i:i + _BATCH]))
    return res


_BATCH = 500  # refspecs per git command: far below any command-line limit


# -- what an experiment records ----------------------------------------------------------------
def describe(root: str, params_files: tuple[str, ...], lock_path: str, metrics: list[str],
             name: str, base: str, code: str | None, overrides: dict[str, Any],
             targets: tuple[str, ...], build_id: str, status: str,
             message: str = "") -> Experiment:
    """The record of a project just built at `root` (a worktree): every param, the metrics
    files (None for one that is absent or unreadable), and each target's out hashes."""
    import time

    from mlmake import metrics as metrics_mod
    from mlmake import params as params_mod
    from mlmake.errors import MlmakeError
    from mlmake.lockfile import Lock

    values = params_mod.flatten(params_mod.load(root, params_files))
    found: dict[str, dict[str, Any] | None] = {}
    for path in metrics:
        try:
            with open(os.path.join(root, path), "rb") as fh:
                found[path] = metrics_mod.parse(fh.read(), path)
        except (OSError, MlmakeError):
            found[path] = None
    outs = {t: {p: rec.hash for p, rec in e.outs.items()}
            for t, e in Lock.read(lock_path).entries.items()}
    return Experiment(name, "", base, code, status, time.time(), targets, overrides, values,
                      found, outs, build_id, message)


def recorded_files(root: str, worktree: str, paths: list[str]) -> dict[str, bytes]:
    """The bytes of `paths` (project-relative, under `root` inside `worktree`) keyed by
    their path in the worktree: what an experiment's commit changes against its base."""
    files: dict[str, bytes] = {}
    for rel in dict.fromkeys(paths):
        full = os.path.join(root, rel)
        if os.path.isfile(full) and not os.path.islink(full):
            with open(full, "rb") as fh:
                files[os.path.relpath(full, worktree).replace(os.sep, "/")] = fh.read()
    return files


def kept_locks(repo_root: str, lock_rel: str) -> list[Any]:
    """The lock (mlmake.lockfile.Lock) of every recorded experiment, `lock_rel` being the
    lock's path in the repository: what `gc` keeps and push moves. One git process reads
    them all; no experiments, no process."""
    from mlmake.errors import MlmakeError
    from mlmake.lockfile import Lock

    locks = []
    for data in files_at(repo_root, [f"{e.commit}:{lock_rel}" for e in load(repo_root)]):
        if data is not None:
            try:
                locks.append(Lock.parse(data.decode("utf-8"), lock_rel))
            except (MlmakeError, UnicodeDecodeError):
                continue
    return locks


def lock_at(repo_root: str, commit: str, lock_rel: str) -> Any:
    """The lock (mlmake.lockfile.Lock) recorded at `commit`, None when absent or unreadable."""
    from mlmake.errors import MlmakeError
    from mlmake.lockfile import Lock

    data = file_at(repo_root, commit, lock_rel)
    try:
        return None if data is None else Lock.parse(data.decode("utf-8"), lock_rel)
    except (MlmakeError, UnicodeDecodeError):
        return None


def files_at(repo_root: str, specs: list[str]) -> list[bytes | None]:
    """The bytes of each `COMMIT:PATH` of `specs` (None for one that is not a blob),
    through one `git cat-file --batch`."""
    if not specs:
        return []
    r = subprocess.run(["git", "cat-file", "--batch"], cwd=repo_root, check=False,
                       input="".join(s + "\n" for s in specs).encode(), capture_output=True)
    if r.returncode != 0:
        raise GitError(f"git cat-file failed in '{repo_root}': "
                       f"{r.stderr.decode(errors='replace').strip()}")
    out: list[bytes | None] = []
    data, pos = r.stdout, 0
    for _ in specs:
        end = data.index(b"\n", pos)
        line, pos = data[pos:end], end + 1
        if line.endswith((b" missing", b" ambiguous")):
            out.append(None)
            continue
        _, kind, size = line.rsplit(b" ", 2)
        n = int(size)
        out.append(data[pos:pos + n] if kind == b"blob" else None)
        pos += n + 1
    return out
