"""What a Git hook does when it fires: the [hooks] actions (restore outputs, report status, push
the cache, rebuild in the background), each within the time a hook may hold Git up.

The project's operations come in as callables (`HookContext`), so this module never sees a
`Project`; problems become lines for the user, never an exception that fails Git.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake.errors import MlmakeError, UsageError
from mlmake.hooks import (
    BLOCK_EXIT,
    TIMEOUT_ENV,
    ZERO_SHA,
    actions,
    git_env,
    pushed_commits,
)
from mlmake.tables import HOOK_NAMES

if TYPE_CHECKING:
    from mlmake.checkout import CheckoutResult
    from mlmake.model import Pipeline
    from mlmake.plan import Plan
    from mlmake.push import PushResult

DEFAULT_TIMEOUT = 60.0
LOCK_WAIT = 10.0  # a restore waits this long at most for a running build to finish
KEEP_LOGS = 50  # background builds' logs kept in .mlmake/logs/hooks

@dataclass(frozen=True)
class HookContext:
    """The project as the hook actions see it: where it is and the operations they call.

    `managed`: the project is a worktree mlmake made itself (a triggered run), which
    manages its own outputs, so hooks leave it alone. `state_path(*parts)` makes a path in
    .mlmake/ (creating the directory) only when an action needs one.
    """

    root: str
    mlfile_path: str
    lock_path: str
    pipeline: Callable[[], Pipeline]  # read only when a hook has something to do
    state_path: Callable[..., str]
    checkout: Callable[[], CheckoutResult]
    status: Callable[[], Plan]
    push: Callable[[bool], PushResult]  # all_commits
    has_remote: Callable[[], bool]
    managed: bool = False


@dataclass
class HookResult:
    """What running a hook's actions produced: lines for the user and the hook's exit code."""

    lines: list[str] = field(default_factory=list)
    code: int = 0


class HookTimeout(MlmakeError):
    """A hook's action took longer than the hook may hold Git up."""


class HookFailure(MlmakeError):
    """An action failed for a reason that is not an MlmakeError (a remote's own exception)."""


def run(ctx: HookContext, name: str, args: tuple[str, ...] = (), stdin: str = "",
        timeout: float | None = None) -> HookResult:
    """Do what the [hooks] table maps Git hook `name` to; `args` and `stdin` are Git's.

    Nothing here waits longer than `timeout` seconds (default: $MLMAKE_HOOK_TIMEOUT or 60);
    problems become `mlmake: warning:` lines, and only a failed push in a `pre-` hook with
    `[hooks] strict = true` gives a non-zero code (BLOCK_EXIT).
    """
    if name not in HOOK_NAMES:
        raise UsageError(f"unknown Git hook '{name}'; mlmake handles {', '.join(HOOK_NAMES)}.")
    if ctx.managed:
        return HookResult()  # a worktree mlmake made itself (serve): it manages its outputs
    pipeline = ctx.pipeline()
    has_remote = None
    if name == "pre-push" and name not in pipeline.hooks:
        has_remote = ctx.has_remote()
    todo = actions(pipeline, name, has_remote)
    result = HookResult()
    if not todo:
        return result
    same_commit = False
    if name == "post-checkout":
        if len(args) >= 3 and args[2] == "0":
            return result  # `git checkout -- FILE`: only files changed, outputs stay
        if _rebasing(ctx.root):
            return result  # post-rewrite restores once the rebase is done
        same_commit = len(args) >= 2 and args[0] == args[1]
    seconds = timeout if timeout is not None else _timeout()
    deadline = time.monotonic() + seconds
    strict = pipeline.hooks.strict and name.startswith("pre-")
    for action in todo:
        if action == "checkout" and same_commit:
            continue  # a new branch at the same commit: the lock, hence the outputs, stay
        try:
            result.lines += _act(ctx, name, action, stdin, deadline, seconds)
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


def _act(ctx: HookContext, hook: str, action: str, stdin: str, deadline: float,
         seconds: float) -> list[str]:
    """Do one action; the lines it has for the user."""
    if action == "checkout":
        return _checkout(ctx, deadline)
    if action == "status":
        with _deadline(deadline, seconds):
            return [_status_line(ctx)]
    if action == "push":
        from mlmake import remotefs

        try:
            with _deadline(deadline, seconds):
                return _push(ctx, stdin)
        except remotefs.transport_errors() as exc:  # a remote's own: strict must block
            if isinstance(exc, MlmakeError):
                raise
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
    if action == "run" or action.startswith("run:"):
        targets = [t.strip() for t in action[4:].split(",") if t.strip()]
        return [_spawn(ctx, hook, targets)]
    raise UsageError(f"unknown action '{action}' (use checkout, run, run:TARGET,..., push "
                     "or status).")


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


def _wait_until_free(ctx: HookContext, deadline: float) -> None:
    """Wait, until `deadline`, for no mlmake run to hold the project lock.

    A checkout waits for the lock without a limit; a background build can hold it for
    hours, and a hook must not keep Git waiting that long. Restoring itself is never cut
    short: an interrupted restore would leave a half-written directory behind.
    """
    from mlmake.filelock import file_lock, holder

    path = ctx.state_path("run.lock")
    with file_lock(path, timeout=max(0.0, deadline - time.monotonic())) as got:
        if not got:
            raise HookTimeout(f"another mlmake run (pid {holder(path)}) is building this "
                              "project, so the outputs of this commit were not restored; "
                              "run `mlmake checkout` once it has finished.")


def _checkout(ctx: HookContext, deadline: float) -> list[str]:
    from mlmake.checkout import ModifiedOutError

    _wait_until_free(ctx, min(deadline, time.monotonic() + LOCK_WAIT))
    try:
        res = ctx.checkout()
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


def _status_line(ctx: HookContext) -> str:
    plan = ctx.status()
    stale = plan.stale
    if not stale:
        return f"mlmake: all {_count(len(plan.order), 'target')} up to date"
    shown = ", ".join(stale[:5]) + (" …" if len(stale) > 5 else "")
    return (f"mlmake: {len(stale)} of {_count(len(plan.order), 'target')} stale ({shown}); "
            "run `mlmake` to rebuild")


def _push(ctx: HookContext, stdin: str) -> list[str]:
    tips = pushed_commits(stdin)
    if not tips:
        return []  # nothing goes out, or only deletions: no commit needs anything
    result = ctx.push(_needs_history(ctx, tips, stdin))
    pushed = _count(result.pushed, "object")
    lines = [f"mlmake: pushed the cache to '{result.remote}' ({pushed} uploaded, "
             f"{result.present} already there)"]
    if result.missing:
        shown = ", ".join(result.missing[:3]) + (" …" if len(result.missing) > 3 else "")
        lines.append(f"mlmake: warning: {_count(len(result.missing), 'output')} not in the local "
                     f"cache, so not pushed ({shown}); build them, then `mlmake push`")
    return lines


def _needs_history(ctx: HookContext, tips: list[str], stdin: str) -> bool:
    """Whether the push must cover every commit's lock rather than the work tree's.

    The work tree's lock is enough when the only commit going out is HEAD itself (one new
    commit on top of what the remote has) and the work tree's lock is HEAD's; anything
    else (other branches, several new commits, a rebuilt lock not committed yet) pushes the
    objects of every commit's lock, of which the remote lacks only the new ones.
    """
    from mlmake import git

    head = git.head_commit(ctx.root)
    if head is None or any(t != head for t in tips):
        return True
    for line in stdin.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[1] == ZERO_SHA:
            continue
        if parts[3] != head and git.parents(ctx.root, head) != [parts[3]]:
            return True
    try:
        with open(ctx.lock_path, encoding="utf-8") as fh:
            here = fh.read()
    except FileNotFoundError:
        here = ""
    return here != git.lock_text_at(ctx.root, ctx.lock_path, head)[1]


def _spawn(ctx: HookContext, hook: str, targets: list[str]) -> str:
    """Start a build of `targets` detached from Git; it waits for the project lock itself."""
    log_dir = ctx.state_path("logs", "hooks")
    os.makedirs(log_dir, exist_ok=True)
    _prune(log_dir)
    log = os.path.join(log_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-{hook}-"
                                f"{secrets.token_hex(3)}.log")
    cmd = [sys.executable, "-m", "mlmake", "-C", ctx.root, "-f", ctx.mlfile_path,
           "hooks", "build", "--trigger", f"hook:{hook}", "--", *targets]
    with open(log, "ab") as fh:
        # A new session: no terminal, no signals from Git's process group, and no inherited
        # pipes, so Git (and anything reading its output) never waits for the build.
        subprocess.Popen(cmd, cwd=ctx.root, env=git_env(), stdin=subprocess.DEVNULL,
                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                         close_fds=True)
    what = ", ".join(targets) if targets else "stale targets"
    return (f"mlmake: rebuilding {what} in the background; log: "
            f"{os.path.relpath(log, ctx.root)}")


def _prune(log_dir: str) -> None:
    logs = sorted(f for f in os.listdir(log_dir) if f.endswith(".log"))
    for old in logs[:-KEEP_LOGS]:
        try:
            os.remove(os.path.join(log_dir, old))
        except OSError:
            pass


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
