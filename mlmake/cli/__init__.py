"""The command line: a thin click layer over mlmake.Project (the only package that prints)."""


def main() -> None:
    """Console-script entry point. A `status` whose answer the no-op file still holds is
    answered before click or the engine is imported (mlmake.noop)."""
    import sys

    from mlmake import noop

    if noop.answer(sys.argv[1:]):
        raise SystemExit(0)
    from mlmake.cli.app import main as _main

    raise SystemExit(_main())


__all__ = ["main"]
