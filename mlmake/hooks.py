"""Git hooks: mlmake's block in a repository's hooks, and the actions an Mlfile's [hooks] runs.

Installing moves a hook that is already there aside, unchanged, to `NAME.mlmake-orig` and
writes a small shell script in its place (a marked block) that runs the original first, with
its arguments and stdin, then `python -m mlmake hooks run NAME ARGS...`. Uninstalling moves
the original back, so it returns byte for byte with its mode, or deletes a hook that mlmake
created. The scheme works whatever language the original is written in.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake.errors import GitError, MlmakeError, UsageError
from mlmake.tables import HOOK_NAMES

if TYPE_CHECKING:
    from mlmake.model import Pipeline
    from mlmake.project import Project

BEGIN = "# >>> mlmake hooks >>>"
END = "# <<< mlmake hooks <<<"
ORIG_SUFFIX = ".mlmake-orig"
# Installed even when the Mlfile gives them nothing to do today, so that adding a remote or a
# [hooks] entry for them later needs no reinstall.
ALWAYS_INSTALLED = ("post-checkout", "post-merge", "post-rewrite", "pre-push")
DEFAULT_ACTIONS: dict[str, tuple[str, ...]] = {
    "post-checkout": ("checkout",), "post-merge": ("checkout",), "post-rewrite": ("checkout",)}
STDIN_HOOKS = ("pre-push", "post-rewrite")  # Git writes to these hooks' stdin
BLOCK_EXIT = 10  # `hooks run` exits with this to make the script fail (strict pre-push)
DEFAULT_TIMEOUT = 60.0
LOCK_WAIT = 10.0  # a restore waits this long at most for a running build to finish
TIMEOUT_ENV = "MLMAKE_HOOK_TIMEOUT"
KEEP_LOGS = 50
ZERO_SHA = "0" * 40
# Variables Git sets for hooks that point at a repository or an index; a detached build (whose
# commands may call git) and our own git calls must find the repository from their directory.
GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR",
                     "GIT_PREFIX", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                     "GIT_QUARANTINE_PATH", "GIT_NAMESPACE")


@dataclass(frozen=True)
class HookChange:
    """What install or uninstall did to one hook file."""

    name: str
    path: str
    change: str  # installed | updated | unchanged | removed | restored
    chained: bool = False  # an original hook runs before mlmake's block


@dataclass(frozen=True)
class HookState:
    """One Git hook as `hooks status` sees it."""

    name: str
    path: str
    state: str  # installed | outdated | absent | other (a hook mlmake did not write)
    chained: bool
    actions: tuple[str, ...]
    wanted: bool  # `hooks install` puts mlmake into it


@dataclass
class HookResult:
    """What running a hook's actions produced: lines for the user and the hook's exit code."""

    lines: list[str] = field(default_factory=list)
    code: int = 0


class HookTimeout(MlmakeError):
    """A hook's action took longer than the hook may hold Git up."""


class HookFailure(MlmakeError):
    """An action failed for a reason that is not an MlmakeError (a remote's own exception)."""


# -- where the hooks live ------------------------------------------------------------------

def _git_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in GIT_LOCATION_VARS}


def _git(root: str, *args: str) -> list[str]:
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                           env=_git_env(), timeout=30, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH); hooks need it.") from None
    if r.returncode != 0:
        raise GitError(f"'{root}' is not inside a Git work tree, so there are no hooks to "
                       f"manage ({r.stderr.strip() or 'git rev-parse failed'}). Run `git init` "
                       "first.")
    return r.stdout.splitlines()


def locate(root: str) -> tuple[str, str]:
    """(top of the work tree, hooks directory) for the project at `root`.

    The hooks directory is the one Git runs hooks from: `core.hooksPath` (relative or
    absolute) when set, else `hooks/` in the common Git directory shared by every worktree.
    """
    top, hooks = _git(root, "rev-parse", "--show-toplevel", "--git-path", "hooks")
    return top, os.path.normpath(os.path.join(root, hooks))


def wanted(pipeline: Pipeline) -> tuple[str, ...]:
    """The hooks `install` puts mlmake into for this Mlfile."""
    return tuple(n for n in HOOK_NAMES
                 if (n in ALWAYS_INSTALLED and n not in pipeline.hooks) or actions(pipeline, n))


def actions(pipeline: Pipeline, name: str, has_remote: bool | None = None
            ) -> tuple[str, ...]:
    """The actions of hook `name`: the [hooks] entry (a string or a list), else the default
    (pre-push pushes when a remote is configured; `has_remote` overrides the Mlfile's say)."""
    raw = pipeline.hooks.get(name)
    if raw is None:
        if has_remote is None:
            has_remote = bool(pipeline.remote or pipeline.remotes)
        if name == "pre-push" and has_remote:
            return ("push",)
        return DEFAULT_ACTIONS.get(name, ())
    return raw


# -- the script ------------------------------------------------------------------------------

def script(name: str, project: str, mlfile: str, python: str) -> str:
    """The hook file mlmake writes for `name`: the original (if any), then mlmake.

    `project` is the project directory relative to the top of the work tree (where Git runs
    hooks), so one script serves every worktree of the repository.
    """
    q = shlex.quote
    opts = "".join(f" {a}" for a in (
        (["-C", q(project)] if project != "." else []) +
        (["-f", q(mlfile)] if mlfile != "Mlfile" else [])))
    call = f"{opts} hooks run {name} \"$@\""
    stdin = name in STDIN_HOOKS
    feed = "printf '%s' \"$mlmake_in\" | " if stdin else ""
    gone = (f"mlmake: warning: mlmake is gone ({python} no longer exists and there is no "
            "mlmake on PATH); reinstall it, or remove it from this hook with `mlmake hooks "
            "uninstall`.")
    lines = [
        "#!/bin/sh",
        BEGIN,
        "# Added by `mlmake hooks install`. `mlmake hooks uninstall` takes it out again and",
        f"# puts back the hook that was here before, kept beside this file as {name}{ORIG_SUFFIX}.",
    ]
    if stdin:  # read once, hand the same bytes to the original hook and to mlmake
        lines += ["mlmake_in=$(cat; echo .)", "mlmake_in=${mlmake_in%.}"]
    lines += [
        "mlmake_rc=0",
        f'if [ -x "$0{ORIG_SUFFIX}" ]; then',
        f'    {feed}"$0{ORIG_SUFFIX}" "$@"',
        "    mlmake_rc=$?",
    ]
    if name.startswith("pre-"):  # the original refused: Git stops here, so does mlmake
        lines += ['    [ "$mlmake_rc" -eq 0 ] || exit "$mlmake_rc"']
    lines += [
        "fi",
        f"[ -f {q(posixpath.join(project, mlfile))} ] || exit \"$mlmake_rc\"  # no project here",
        f"if [ -x {q(python)} ]; then",
        f"    {feed}{q(python)} -m mlmake{call}",
        "elif command -v mlmake >/dev/null 2>&1; then",
        f"    {feed}mlmake{call}",
        "else",
        f"    echo {q(gone)} >&2",
        "    exit \"$mlmake_rc\"",
        "fi",
        "mlmake_st=$?",
        f'if [ "$mlmake_st" -eq {BLOCK_EXIT} ]; then',
        '    [ "$mlmake_rc" -ne 0 ] || mlmake_rc=1',
        'elif [ "$mlmake_st" -ne 0 ]; then',
        "    echo \"mlmake: warning: the mlmake hook failed (exit $mlmake_st); Git goes on.\" >&2",
        "fi",
        'exit "$mlmake_rc"',
        END,
    ]
    return "\n".join(lines) + "\n"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _is_ours(path: str) -> bool:
    data = None if os.path.islink(path) else _read(path)
    return data is not None and BEGIN.encode() in data


def _write(path: str, data: bytes, mode: int = 0o755) -> None:
    from mlmake.atomic import atomic_write

    atomic_write(path, data, mode)


def _strip_block(data: bytes) -> bytes:
    begin, end = data.find(BEGIN.encode()), data.find(END.encode())
    if begin < 0 or end < begin:
        return data
    end = data.find(b"\n", end)
    return data[:begin] + (data[end + 1:] if end >= 0 else b"")


# -- install, uninstall, status ------------------------------------------------------------

def install(root: str, mlfile: str = "Mlfile", names: tuple[str, ...] = ALWAYS_INSTALLED,
            python: str | None = None) -> list[HookChange]:
    """Put mlmake into the hooks `names` (chained after what is there) and take it out of
    the other hooks it knows; running it twice changes nothing the second time."""
    top, hooks_dir = locate(root)
    project = os.path.relpath(os.path.realpath(root), os.path.realpath(top))
    python = python or sys.executable
    for name in names:  # refuse before touching anything
        path = os.path.join(hooks_dir, name)
        if os.path.lexists(path + ORIG_SUFFIX) and not _is_ours(path):
            raise UsageError(
                f"'{path}{ORIG_SUFFIX}' is left from an earlier `mlmake hooks install`, but "
                f"'{name}' no longer calls mlmake (another tool replaced it). Move one of the "
                "two away (or back), then run `mlmake hooks install` again.")
    os.makedirs(hooks_dir, exist_ok=True)
    changes = []
    for name in names:
        path = os.path.join(hooks_dir, name)
        text = script(name, project, os.path.basename(mlfile), python)
        if _is_ours(path):
            same = _read(path) == text.encode()
            if not same:
                _write(path, text.encode(), os.stat(path).st_mode & 0o7777 | 0o111)
            changes.append(HookChange(name, path, "unchanged" if same else "updated",
                                      os.path.lexists(path + ORIG_SUFFIX)))
            continue
        chained = os.path.lexists(path)
        if chained:  # the same inode moves: bytes, mode and owner stay exactly as they were
            os.replace(path, path + ORIG_SUFFIX)
        _write(path, text.encode())
        changes.append(HookChange(name, path, "installed", chained))
    for name in HOOK_NAMES:
        if name not in names:
            change = _remove(os.path.join(hooks_dir, name))
            if change:
                changes.append(change)
    return changes


def uninstall(root: str) -> list[HookChange]:
    """Take mlmake out of every hook: put the original back, or delete what mlmake created."""
    _, hooks_dir = locate(root)
    changes = []
    for name in HOOK_NAMES:
        change = _remove(os.path.join(hooks_dir, name))
        if change:
            changes.append(change)
    return changes


def _remove(path: str) -> HookChange | None:
    name = os.path.basename(path)
    if not _is_ours(path):
        return None
    orig = path + ORIG_SUFFIX
    if os.path.lexists(orig):
        os.replace(orig, path)
        return HookChange(name, path, "restored", True)
    data = _read(path) or b""
    rest = _strip_block(data)
    if rest.strip() in (b"", b"#!/bin/sh"):
        os.remove(path)
    else:  # someone added their own lines around the block: keep them
        _write(path, rest, os.stat(path).st_mode & 0o7777)
    return HookChange(name, path, "removed", False)


def status(root: str, pipeline: Pipeline, mlfile: str = "Mlfile",
           python: str | None = None) -> list[HookState]:
    """The state of every hook mlmake knows, with the actions the Mlfile gives it."""
    top, hooks_dir = locate(root)
    project = os.path.relpath(os.path.realpath(root), os.path.realpath(top))
    want = wanted(pipeline)
    out = []
    for name in HOOK_NAMES:
        path = os.path.join(hooks_dir, name)
        if _is_ours(path):
            text = script(name, project, os.path.basename(mlfile), python or sys.executable)
            state = "installed" if _read(path) == text.encode() else "outdated"
        else:
            state = "other" if os.path.lexists(path) else "absent"
        out.append(HookState(name, path, state, os.path.lexists(path + ORIG_SUFFIX),
                             actions(pipeline, name), name in want))
    return out


# -- running a hook --------------------------------------------------------------------------

def run(project: Project, name: str, args: tuple[str, ...] = (), stdin: str = "",
        timeout: float | None = None) -> HookResult:
    """Do what the [hooks] table maps Git hook `name` to; `args` and `stdin` are Git's.

    Nothing here waits longer than `timeout` seconds (default: $MLMAKE_HOOK_TIMEOUT or 60);
    problems become `mlmake: warning:` lines, and only a failed push in a `pre-` hook with
    `[hooks] strict = true` gives a non-zero code (BLOCK_EXIT).
    """
    if name not in HOOK_NAMES:
        raise UsageError(f"unknown Git hook '{name}'; mlmake handles {', '.join(HOOK_NAMES)}.")
    from mlmake.project import STATE_DIR

    if STATE_DIR in os.path.normpath(project.root).split(os.sep):
        return HookResult()  # a worktree mlmake made itself (serve): it manages its outputs
    pipeline = project.pipeline
    has_remote = None
    if name == "pre-push" and name not in pipeline.hooks:
        has_remote = _has_remote(project)
    todo = actions(pipeline, name, has_remote)
    result = HookResult()
    if not todo:
        return result
    same_commit = False
    if name == "post-checkout":
        if len(args) >= 3 and args[2] == "0":
            return result  # `git checkout -- FILE`: only files changed, outputs stay
        if _rebasing(project.root):
            return result  # post-rewrite restores once the rebase is done
        same_commit = len(args) >= 2 and args[0] == args[1]
    seconds = timeout if timeout is not None else _timeout()
    deadline = time.monotonic() + seconds
    strict = pipeline.hooks.strict and name.startswith("pre-")
    for action in todo:
        if action == "checkout" and same_commit:
            continue  # a new branch at the same commit: the lock, hence the outputs, stay
        try:
            result.lines += _act(project, name, action, stdin, deadline, seconds)
        except MlmakeError as exc:
            text = " ".join(str(exc).split())
            if strict and action == "push":
                result.lines.append(f"mlmake: error: the cache push failed, so the push is "
                                    f"blocked ([hooks] strict = true): {text} Fix it, or push "
                                    "with `git push --no-verify`.")
                result.code = BLOCK_EXIT
                return result
            result.lines.append(f"mlmake: warning: {name} {action}: {text}")
            if isinstance(exc, HookTimeout):
                return result
    return result


def _act(project: Project, hook: str, action: str, stdin: str, deadline: float,
         seconds: float) -> list[str]:
    """Do one action; the lines it has for the user."""
    if action == "checkout":
        return _checkout(project, deadline)
    if action == "status":
        with _deadline(deadline, seconds):
            return [_status_line(project)]
    if action == "push":
        try:
            with _deadline(deadline, seconds):
                return _push(project, stdin)
        except MlmakeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a remote's own errors: strict must block
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
    if action == "run" or action.startswith("run:"):
        targets = [t.strip() for t in action[4:].split(",") if t.strip()]
        return [_spawn(project, hook, targets)]
    raise UsageError(f"unknown action '{action}' (use checkout, run, run:TARGET,..., push "
                     "or status).")


def _has_remote(project: Project) -> bool:
    """Whether a remote is configured: in the Mlfile or this clone's .mlmake/config.toml."""
    try:
        remote = project.remote(quick=True)
    except MlmakeError:
        return True  # misconfigured: let the push say what is wrong
    if remote is None:
        return False
    remote.close()
    return True


def _timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))
    except ValueError:
        return DEFAULT_TIMEOUT


def _rebasing(root: str) -> bool:
    from mlmake import git

    gd = git.git_dir(root)
    return gd is not None and any(os.path.isdir(os.path.join(gd, d))
                                  for d in ("rebase-merge", "rebase-apply"))


@contextmanager
def _deadline(at: float, seconds: float) -> Iterator[None]:
    """Raise HookTimeout in the main thread once `at` (a monotonic time) has passed."""
    message = (f"gave up after {seconds:g} s so that Git does not hang (set ${TIMEOUT_ENV} "
               "to wait longer); run the mlmake command yourself.")
    left = at - time.monotonic()
    if left <= 0:
        raise HookTimeout(message)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise HookTimeout(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, left)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _wait_until_free(project: Project, deadline: float) -> None:
    """Wait, until `deadline`, for no mlmake run to hold the project lock.

    Project.checkout waits for the lock without a limit; a background build can hold it for
    hours, and a hook must not keep Git waiting that long. Restoring itself is never cut
    short: an interrupted restore would leave a half-written directory behind.
    """
    from mlmake.filelock import file_lock, holder

    path = project.state_path("run.lock")
    with file_lock(path, timeout=max(0.0, deadline - time.monotonic())) as got:
        if not got:
            raise HookTimeout(f"another mlmake run (pid {holder(path)}) is building this "
                              "project, so the outputs of this commit were not restored; "
                              "run `mlmake checkout` once it has finished.")


def _checkout(project: Project, deadline: float) -> list[str]:
    from mlmake.checkout import ModifiedOutError

    _wait_until_free(project, min(deadline, time.monotonic() + LOCK_WAIT))
    try:
        res = project.checkout()
    except ModifiedOutError as exc:
        shown = ", ".join(exc.paths[:3]) + (" …" if len(exc.paths) > 3 else "")
        raise UsageError(f"outputs not restored: {shown} changed by hand and would be "
                         "overwritten; save your changes, then run `mlmake checkout "
                         "--force`.") from None
    lines = []
    if res.restored:
        shown = ", ".join(res.restored[:3]) + (" …" if len(res.restored) > 3 else "")
        lines.append(f"mlmake: restored {_count(len(res.restored), 'output')} ({shown})")
    if res.missing:
        shown = ", ".join(res.missing[:3]) + (" …" if len(res.missing) > 3 else "")
        lines.append(f"mlmake: {_count(len(res.missing), 'output')} of this commit not in the "
                     f"cache ({shown}); run `mlmake pull` or `mlmake` to get them")
    return lines


def _status_line(project: Project) -> str:
    plan = project.status()
    stale = plan.stale
    if not stale:
        return f"mlmake: all {_count(len(plan.order), 'target')} up to date"
    shown = ", ".join(stale[:5]) + (" …" if len(stale) > 5 else "")
    return (f"mlmake: {len(stale)} of {_count(len(plan.order), 'target')} stale ({shown}); "
            "run `mlmake` to rebuild")


def pushed_commits(stdin: str) -> list[str]:
    """The local commits a pre-push hook's stdin says are being pushed (deletions skipped)."""
    shas = []
    for line in stdin.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] != ZERO_SHA and parts[1] not in shas:
            shas.append(parts[1])
    return shas


def _push(project: Project, stdin: str) -> list[str]:
    tips = pushed_commits(stdin)
    if not tips:
        return []  # nothing goes out, or only deletions: no commit needs anything
    whole = _needs_history(project, tips, stdin)
    result = project.push(all_commits=whole)
    pushed = _count(result.pushed, "object")
    lines = [f"mlmake: pushed the cache to '{result.remote}' ({pushed} uploaded, "
             f"{result.present} already there)"]
    if result.missing:
        shown = ", ".join(result.missing[:3]) + (" …" if len(result.missing) > 3 else "")
        lines.append(f"mlmake: warning: {_count(len(result.missing), 'output')} not in the local "
                     f"cache, so not pushed ({shown}); build them, then `mlmake push`")
    return lines


def _needs_history(project: Project, tips: list[str], stdin: str) -> bool:
    """Whether the push must cover every commit's lock rather than the work tree's.

    The work tree's lock is enough when the only commit going out is HEAD itself (one new
    commit on top of what the remote has) and the work tree's lock is HEAD's; anything
    else (other branches, several new commits, a rebuilt lock not committed yet) pushes the
    objects of every commit's lock, of which the remote lacks only the new ones.
    """
    from mlmake import git

    head = git.head_commit(project.root)
    if head is None or any(t != head for t in tips):
        return True
    for line in stdin.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[1] == ZERO_SHA:
            continue
        if parts[3] != head and git.parents(project.root, head) != [parts[3]]:
            return True
    try:
        with open(project.lock_path, encoding="utf-8") as fh:
            here = fh.read()
    except FileNotFoundError:
        here = ""
    return here != git.lock_text_at(project.root, project.lock_path, head)[1]


def _spawn(project: Project, hook: str, targets: list[str]) -> str:
    """Start a build of `targets` detached from Git; it waits for the project lock itself."""
    log_dir = project.state_path("logs", "hooks")
    os.makedirs(log_dir, exist_ok=True)
    _prune(log_dir)
    log = os.path.join(log_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-{hook}-"
                                f"{secrets.token_hex(3)}.log")
    cmd = [sys.executable, "-m", "mlmake", "-C", project.root, "-f", project.mlfile_path,
           "hooks", "build", "--trigger", f"hook:{hook}", "--", *targets]
    with open(log, "ab") as fh:
        # A new session: no terminal, no signals from Git's process group, and no inherited
        # pipes, so Git (and anything reading its output) never waits for the build.
        subprocess.Popen(cmd, cwd=project.root, env=_git_env(), stdin=subprocess.DEVNULL,
                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                         close_fds=True)
    what = ", ".join(targets) if targets else "stale targets"
    return (f"mlmake: rebuilding {what} in the background; log: "
            f"{os.path.relpath(log, project.root)}")


def _prune(log_dir: str) -> None:
    logs = sorted(f for f in os.listdir(log_dir) if f.endswith(".log"))
    for old in logs[:-KEEP_LOGS]:
        try:
            os.remove(os.path.join(log_dir, old))
        except OSError:
            pass


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
