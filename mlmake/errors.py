"""The exception tree: one root, one child per domain, each with its exit code; messages
built from structured fields."""

from __future__ import annotations

# What `mlmake` exits with: decided in one place (mlmake/cli/app.py) from the class of the
# error, listed here once for `mlmake --help` (the README repeats it). 2 is the code of
# anything a user must fix before a command can do anything (the command line, the Mlfile, a
# revision that does not exist, an optional package or engine this machine lacks); 4-8 say
# which part failed while working, so that a script can tell the input from the machinery.
# 10 is taken too: the hidden `hooks run` exits with it to block a push (hooks.BLOCK_EXIT).
EXIT_OK = 0
EXIT_STALE = 1  # something stale (`status`), a target failed (`run`)
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_REMOTE = 4
EXIT_STORE = 5
EXIT_GIT = 6
EXIT_ENV = 7
EXIT_EXECUTOR = 8
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "done, or up to date"),
    (EXIT_STALE, "something is stale (status) or a target failed (run)"),
    (EXIT_USAGE, "usage or Mlfile error: nothing ran; fix what the message names"),
    (EXIT_INTERNAL, "internal error: a bug; please report it with the traceback"),
    (EXIT_REMOTE, "remote: cannot be reached, or holds bad data"),
    (EXIT_STORE, "cache: a corrupt or missing object, or it cannot be written"),
    (EXIT_GIT, "Git: a Git operation failed"),
    (EXIT_ENV, "environment: cannot be built or started"),
    (EXIT_EXECUTOR, "executor: cannot start, or cannot reach its cluster"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C, SIGTERM)"),
)


class MlmakeError(Exception):
    """Root of every error mlmake reports to a user; `exit_code` (a class attribute, one per
    domain) is what the CLI exits with."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MlfileError(MlmakeError):
    """The Mlfile (or a params file) is invalid; carries the file, line and column when known."""

    def __init__(self, message: str, file: str = "Mlfile", line: int | None = None,
                 column: int | None = None) -> None:
        self.file = file
        self.line = line
        self.column = column
        where = file
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")
        self.detail = message


class CycleError(MlfileError):
    """The targets depend on each other in a loop; `cycle` lists it, first node repeated last."""

    def __init__(self, cycle: list[str], file: str = "Mlfile") -> None:
        self.cycle = cycle
        arrow = " → ".join(cycle)
        super().__init__(f"dependency cycle: {arrow}. Remove one of these edges "
                         "(a dep on another target's out, or an `after`).", file)


class MissingInputError(MlfileError):
    """A dep does not exist and no target produces it."""

    def __init__(self, target: str, path: str, file: str = "Mlfile",
                 line: int | None = None) -> None:
        self.target = target
        self.path = path
        super().__init__(
            f"target '{target}' needs '{path}', which is not in the project and no target "
            "produces it. Create it, fix the path, or add a target whose outs include it.",
            file, line)


class UsageError(MlmakeError):
    """The command line asks for something that does not exist or cannot be done."""


class BusyError(MlmakeError):
    """Another mlmake run holds the project lock and the caller asked not to wait."""


class StoreError(MlmakeError):
    """The object store is missing, holds a corrupt object or cannot be written."""

    exit_code = EXIT_STORE


class CorruptObjectError(StoreError):
    """A cache object's content does not match its hash; it has been removed."""

    def __init__(self, oid: str, out: str, found: str) -> None:
        self.oid = oid
        self.out = out
        super().__init__(
            f"the cached copy of '{out}' is corrupt (object {oid[:12]}… hashes to "
            f"{found[:12]}…); it was taken out of the cache under that name and nothing "
            "was linked. Rebuild it with `mlmake -B TARGET`, or fetch it again with "
            "`mlmake pull`.")


class MissingObjectError(StoreError):
    """An object an out needs is not in the local store."""

    def __init__(self, oid: str, out: str) -> None:
        self.oid = oid
        self.out = out
        super().__init__(f"'{out}' is not in the cache (object {oid[:12]}…). Fetch it with "
                         "`mlmake pull`, or rebuild it with `mlmake TARGET`.")


class RemoteError(MlmakeError):
    """A remote cannot be reached or holds bad data."""

    exit_code = EXIT_REMOTE


class RemoteSetupError(RemoteError):
    """A remote's settings cannot work here (a package its protocol needs is not installed,
    its options are invalid); a usage error (exit 2), unlike a remote that does not answer."""

    exit_code = EXIT_USAGE


class ExecutorError(MlmakeError):
    """An executor cannot start, reach its cluster or place a target."""

    exit_code = EXIT_EXECUTOR


class ExecutorSetupError(ExecutorError):
    """The executor asked for is not installed here; a usage error (exit 2)."""

    exit_code = EXIT_USAGE


class GitError(MlmakeError):
    """A Git operation failed."""

    exit_code = EXIT_GIT


class RevisionError(GitError):
    """A revision names no commit, or one is asked for outside a Git repository; a usage
    error (exit 2)."""

    exit_code = EXIT_USAGE


class EnvError(MlmakeError):
    """An environment cannot be built or started."""

    exit_code = EXIT_ENV


class EnvSetupError(EnvError):
    """An environment needs what this machine lacks (an interpreter, the docker package, a
    Docker engine answering); checked before anything runs, a usage error (exit 2)."""

    exit_code = EXIT_USAGE


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """` Did you mean 'x'?` for the closest choice (typos and swapped letters), or ''."""
    import difflib

    swapped = [c for c in choices if sorted(c) == sorted(word) and c != word]
    close = swapped or difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def store_write_error(exc: OSError, cache: str, root: str, src: str,
                      size: int | None = None) -> StoreError:
    """The message for a write into the cache `cache` that failed while storing `src` (a
    path in the work tree `root`, `size` bytes): full disk, read-only cache, other."""
    import errno
    import os

    where = os.path.relpath(src, root) if src.startswith(root) else src
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        if size is None:
            try:
                size = os.path.getsize(src)
            except OSError:
                size = 0
        return StoreError(
            f"no space left on the device of the cache {cache} while storing '{where}' "
            f"({_size(size)} needed, {_size(_free_bytes(cache))} free); free some space (or "
            "run `mlmake gc`) and run again. The lock and the outs were left as they were.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(
            f"the cache {cache} is not writable ({exc.strerror}); cannot store '{where}'. "
            "Make it writable (or point [project] cache elsewhere) and run again. The "
            "lock and the outs were left as they were.")
    return StoreError(f"cannot write into the cache {cache}: {exc}")


def _free_bytes(path: str) -> int:
    import os

    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or ".")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
