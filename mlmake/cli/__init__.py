"""The command line: a thin click layer over mlmake.Project (the only package that prints)."""


def main() -> None:
    """Console-script entry point. A `status` whose answer the no-op file still holds is
    answered before click or the engine is imported (mlmake.noop)."""
    import sys

    from mlmake import noop

    if noop.answer(sys.argv[1:]):
        raise SystemExit(0)
    from mlmake.cli.app import main as _main

    _exit(_main())


def _exit(code: int) -> None:
    """End the process with `code` once the output is flushed and the atexit handlers ran,
    skipping the interpreter's teardown of every module it loaded (10-25 ms after a build,
    pygit2's included), unless another thread still runs."""
    import atexit
    import os
    import sys
    import threading

    if threading.active_count() > 1:
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let Python's exit deal with it
        raise SystemExit(code) from None
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


__all__ = ["main"]
