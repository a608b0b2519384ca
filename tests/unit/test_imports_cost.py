"""What each command imports: a command loads the modules it uses and no others, so that
`status`, `graph`, `runs`, `log`, `--help`, `--version` and the Git hooks start fast (issue 21).

Each case runs the real CLI in a fresh interpreter and reads `sys.modules` when it is done.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from mlmake.cli import app

# mlmake.cli.main ends the process (after the atexit handlers): the probe reports from one
PROBE = ("import atexit, json, sys; sys.argv = ['mlmake', *sys.argv[1:]]\n"
         "atexit.register(lambda: sys.stderr.write("
         "'\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n'))\n"
         "from mlmake.cli import main\n"
         "main()\n")

# Loaded only by the commands that use them: builds (executors, scheduler, store links, run
# records), remotes, environments, the server, the terminal UI, Git and the object store's
# filesystem layer.
ENGINE_PARTS = ("mlmake.executors", "mlmake.build", "mlmake.scheduler", "mlmake.runcache",
                "mlmake.remote", "mlmake.remotefs", "mlmake.buildremote", "mlmake.push",
                "mlmake.pull", "mlmake.envs", "mlmake.serve", "mlmake.git",
                "mlmake.experiments", "mlmake.exp_store", "mlmake.trigger",
                "mlmake.cli.serve", "mlmake.cli.exp", "mlmake.cli.remote", "mlmake.cli.envs")
LIBRARIES = ("rich", "pygit2", "dvc_objects", "fsspec", "starlette", "uvicorn", "docker", "ray",
             "asyncio", "secrets")
RECORDS = ("mlmake.runs", "sqlite3")


def modules(root: str, *args: str) -> tuple[int, set[str]]:
    """(exit code, every module loaded) of `mlmake ARGS` run in `root`."""
    r = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=root, capture_output=True,
                       text=True, env=dict(os.environ))
    line = [x for x in r.stderr.splitlines() if x.startswith("MODULES ")]
    assert line, r.stderr
    return r.returncode, set(json.loads(line[-1][len("MODULES "):]))


def loaded(mods: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if any(m == n or m.startswith(n + ".") for n in names))


def test_a_full_check_status_loads_no_part_it_does_not_use(built):
    noop = built.root / ".mlmake" / "noop"
    if noop.exists():
        noop.unlink()  # the full check, not the answer the no-op file holds
    code, mods = modules(str(built.root), "status")
    assert code == 0
    assert "mlmake.plan" in mods  # it did check
    assert loaded(mods, ENGINE_PARTS + LIBRARIES + RECORDS + ("mlmake.events",)) == []


def test_a_stale_status_loads_no_more(built):
    built.write({"raw.txt": "other\n"})
    code, mods = modules(str(built.root), "status")
    assert code == 1
    assert loaded(mods, ENGINE_PARTS + LIBRARIES + RECORDS) == []


@pytest.mark.parametrize("args, allowed", [
    (("graph",), ()),
    (("runs",), ("rich", "mlmake.runs", "sqlite3")),  # records, drawn as a table
    (("log", "train"), ("mlmake.runs", "sqlite3")),
    (("--help",), ("mlmake.cli.serve", "mlmake.cli.exp", "mlmake.cli.remote",
                   "mlmake.cli.envs")),  # every command's module, for the list
    (("--version",), ()),
    # (hookactions names each hook run with `secrets`); a file checkout (flag 0) has
    # nothing to restore
    (("hooks", "run", "pre-commit"), ("secrets",)),
    (("hooks", "run", "post-checkout", "HEAD", "HEAD", "0"), ("secrets",)),
])
def test_inspection_commands_load_no_engine_part_they_do_not_use(built, args, allowed):
    code, mods = modules(str(built.root), *args)
    assert code == 0
    assert [m for m in loaded(mods, ENGINE_PARTS + LIBRARIES + RECORDS)
            if not any(m == a or m.startswith(a + ".") for a in allowed)] == []


@pytest.mark.parametrize("args", [("--help",), ("--version",)])
def test_help_and_version_do_not_load_the_project(built, args):
    _, mods = modules(str(built.root), *args)
    assert "mlmake.project" not in mods and "click" in mods
    if args == ("--version",):
        assert sorted(m for m in mods if m.startswith("mlmake")) == [
            "mlmake", "mlmake.cli", "mlmake.cli.app", "mlmake.errors", "mlmake.noop"]


def test_every_command_is_found_where_the_cli_looks_for_it():
    for module in app.COMMAND_MODULES:
        importlib.import_module(f"mlmake.cli.{module}")
    found = {name: cmd.callback.__module__.rsplit(".", 1)[-1]
             for name, cmd in app.cli.commands.items() if cmd.callback is not None}
    groups = {name: sys.modules[type(cmd).__module__].__name__ for name, cmd in
              app.cli.commands.items() if cmd.callback is None}
    assert not groups
    assert found == app.COMMANDS
