"""The command line: a thin click layer over mlmake.Project (the only package that prints)."""

from mlmake.cli.app import main as _main


def main() -> None:
    """Console-script entry point."""
    raise SystemExit(_main())


__all__ = ["main"]
