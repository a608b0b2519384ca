"""The exception tree: one root, one child per domain, messages built from structured fields."""

from __future__ import annotations


class MlmakeError(Exception):
    """Root of every error mlmake reports to a user; `exit_code` is what the CLI exits with."""

    exit_code = 2

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
    """The object store is missing or holds a corrupt object."""


class RemoteError(MlmakeError):
    """A remote cannot be reached or holds bad data."""


class ExecutorError(MlmakeError):
    """An executor cannot start or cannot place a target."""


class GitError(MlmakeError):
    """A Git operation failed or the revision does not exist."""


class EnvError(MlmakeError):
    """An environment spec is invalid or cannot be built."""


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """` Did you mean 'x'?` for the closest choice (typos and swapped letters), or ''."""
    import difflib

    swapped = [c for c in choices if sorted(c) == sorted(word) and c != word]
    close = swapped or difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
