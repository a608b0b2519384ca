"""The click entry point: global options, the default `run` command, exit codes in one place."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from mlmake import __version__
from mlmake.errors import (EXIT_CODES, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE,
                           MlmakeError)

# Each command and the module under mlmake/cli/ that defines it (add yours here): a command
# line imports only its command's module, so `mlmake status` never loads `serve` or `exp`.
COMMANDS = {
    "run": "commands", "status": "commands", "graph": "commands", "runs": "commands",
    "log": "commands", "init": "commands",
    "checkout": "outputs", "get": "outputs", "commit": "outputs", "gc": "outputs",
    "metrics": "compare", "params": "compare", "hooks": "hooks", "envs": "envs",
    "push": "remote", "pull": "remote", "doctor": "remote", "serve": "serve",
    "trigger": "serve", "add": "data", "import": "data", "update": "data", "exp": "exp",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))

GLOBAL_WITH_VALUE = {"-C", "--directory", "-f", "--file"}
GLOBAL_FLAGS = {"-q", "--quiet", "-v", "--verbose", "--version", "-h", "--help"}


class Ctx:
    """Global options shared by every command."""

    def __init__(self, directory: str, file: str | None, quiet: bool, verbose: bool) -> None:
        self.directory = directory
        self.file = file
        self.quiet = quiet
        self.verbose = verbose

    def project(self) -> Any:
        from mlmake.project import Project

        return Project(self.directory, self.file)


class DefaultGroup(click.Group):
    """A group where an unknown first word means `run` (so `mlmake -j 4 train` works), and
    where the global options may come anywhere, as make takes them (`mlmake train -v`,
    `mlmake status -C dir`): they are moved before the subcommand unless it has an option of
    the same name (`commit -f` is its own `--force`). A command's module is imported when
    the command is looked up (COMMANDS), all of them only for the help's list."""

    def _command(self, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            import importlib

            importlib.import_module(f"mlmake.cli.{COMMANDS[name]}")
        return self.commands.get(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._command(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for name in COMMANDS:
            self._command(name)
        return sorted(self.commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        i = 0
        while i < len(args):
            a = args[i]
            if a in GLOBAL_WITH_VALUE:
                i += 2
                continue
            if a in GLOBAL_FLAGS or (a.startswith(("--directory=", "--file="))) or \
                    (a.startswith(("-C", "-f")) and len(a) > 2 and not a.startswith("--")):
                i += 1
                continue
            if a == "--":
                args = args[:i] + ["run"] + args[i:]
                break
            if self._command(a) is None:
                args = args[:i] + ["run"] + args[i:]
            break
        else:
            if not any(a in ("--help", "-h", "--version") for a in args):
                args = args + ["run"]
        if i < len(args):
            cmd = self._command(args[i])
            assert cmd is not None  # `run` was put in front of anything else
            args = args[:i] + _hoist_globals(cmd, args[i:])
        return super().parse_args(ctx, args)


_HOISTED_FLAGS = {"-q", "--quiet", "-v", "--verbose"}
_HOISTED_VALUES = {"-C", "--directory", "-f", "--file"}


def _own_options(cmd: click.Command) -> tuple[set[str], set[str]]:
    """(option names, names that take a value) of a command and its subcommands."""
    names: set[str] = set()
    valued: set[str] = set()
    todo = [cmd]
    while todo:
        c = todo.pop()
        for p in c.params:
            if isinstance(p, click.Option):
                opts = set(p.opts) | set(p.secondary_opts)
                names |= opts
                if not p.is_flag and not p.count:
                    valued |= opts
        if isinstance(c, click.Group):
            todo += list(c.commands.values())
    return names, valued


def _hoist_globals(cmd: click.Command, rest: list[str]) -> list[str]:
    """`rest` (the subcommand and what follows it) with the global options that the
    subcommand does not define itself moved to its front; `--` ends the scan."""
    own, valued = _own_options(cmd)
    moved: list[str] = []
    kept = [rest[0]]
    i = 1
    while i < len(rest):
        a = rest[i]
        if a == "--":
            kept += rest[i:]
            break
        name = a.split("=", 1)[0] if a.startswith("--") else a
        if name in own:
            kept.append(a)
            if name in valued and "=" not in a and i + 1 < len(rest):
                kept.append(rest[i + 1])
                i += 1
        elif a in _HOISTED_FLAGS or (a.startswith(("--directory=", "--file="))
                                     and name not in own):
            moved.append(a)
        elif a in _HOISTED_VALUES and i + 1 < len(rest):
            moved += [a, rest[i + 1]]
            i += 1
        elif a[:2] in ("-C", "-f") and len(a) > 2 and not a.startswith("--") \
                and a[:2] not in own:
            moved.append(a)
        elif len(a) > 2 and a[0] == "-" and a[1] != "-" and set(a[1:]) & {"q", "v"} and \
                all(f"-{c}" in own - valued or c in "qv" for c in a[1:]):
            # a cluster of flags such as -Bq: the global ones move, the rest stay
            moved += [f"-{c}" for c in a[1:] if c in "qv" and f"-{c}" not in own]
            rest_flags = "".join(c for c in a[1:] if not (c in "qv" and f"-{c}" not in own))
            if rest_flags:
                kept.append("-" + rest_flags)
        else:
            kept.append(a)
        i += 1
    return moved + kept


# \b keeps click from rewrapping the table
EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EPILOG)
@click.option("-C", "--directory", default=".", metavar="DIR",
              help="Change to DIR before doing anything.")
@click.option("-f", "--file", default=None, metavar="FILE", help="Use FILE as the Mlfile.")
@click.option("-q", "--quiet", is_flag=True, help="Print only failures and the summary.")
@click.option("-v", "--verbose", is_flag=True, help="Print every reason and up-to-date target.")
@click.version_option(__version__, "--version", prog_name="mlmake")
@click.pass_context
def cli(ctx: click.Context, directory: str, file: str | None, quiet: bool,
        verbose: bool) -> None:
    """mlmake: make for machine learning, native to Git.

    `mlmake [TARGET...]` builds targets (the same as `mlmake run`).
    """
    if not os.path.isdir(directory):
        raise click.UsageError(f"-C {directory}: no such directory")
    ctx.obj = Ctx(directory, file, quiet, verbose)


def reporter_for(g: Ctx, json_mode: bool = False) -> Any:
    from mlmake.cli.reporter import LiveReporter, PlainReporter

    if not json_mode and sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        return LiveReporter(g.quiet, g.verbose)
    return PlainReporter(sys.stderr if json_mode else sys.stdout, g.quiet, g.verbose)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every exit code is decided here."""
    if threading_main():
        import signal

        signal.signal(signal.SIGTERM, _sigterm)
    try:
        rv = cli.main(args=argv, prog_name="mlmake", standalone_mode=False)
        code = rv if isinstance(rv, int) else EXIT_OK
    except MlmakeError as exc:  # its class (its domain) carries the code: errors.EXIT_CODES
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("interrupted: every child process was stopped; the lock holds what "
                   "finished. Run again to resume.", err=True)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_OK
    except Exception:  # noqa: BLE001 - the one place that turns bugs into exit 3
        import traceback

        traceback.print_exc()
        click.echo("mlmake hit an internal error. Please report it with the traceback above.",
                   err=True)
        code = EXIT_INTERNAL
    return code


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def command(*args: Any, **kwargs: Any) -> Callable[..., Any]:
    """Register a subcommand on the mlmake group."""
    return cli.command(*args, **kwargs)
