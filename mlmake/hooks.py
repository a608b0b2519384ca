"""Git hooks: mlmake's block in a repository's hooks, and which actions an Mlfile's [hooks] gives
each (mlmake.hookactions runs them).

Installing moves a hook that is already there aside, unchanged, to `NAME.mlmake-orig` and
writes a small shell script in its place (a marked block) that runs the original first, with
its arguments and stdin, then `python -m mlmake hooks run NAME ARGS...`. Uninstalling moves
the original back, so it returns byte for byte with its mode, or deletes a hook that mlmake
created. The scheme works whatever language the original is written in.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlmake.errors import GitError, UsageError
from mlmake.tables import HOOK_NAMES

if TYPE_CHECKING:
    from mlmake.model import Pipeline

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
TIMEOUT_ENV = "MLMAKE_HOOK_TIMEOUT"  # seconds a hook's actions may hold Git up
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


# -- where the hooks live ------------------------------------------------------------------

def git_env() -> dict[str, str]:
    """The environment without Git's location variables (see GIT_LOCATION_VARS)."""
    return {k: v for k, v in os.environ.items() if k not in GIT_LOCATION_VARS}


def _git(root: str, *args: str) -> list[str]:
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                           env=git_env(), timeout=30, check=False)
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


def pushed_commits(stdin: str) -> list[str]:
    """The local commits a pre-push hook's stdin says are being pushed (deletions skipped)."""
    shas = []
    for line in stdin.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] != ZERO_SHA and parts[1] not in shas:
            shas.append(parts[1])
    return shas
