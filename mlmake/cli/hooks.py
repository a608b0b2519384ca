"""`mlmake hooks`: install, uninstall and inspect the Git hooks, and the hidden commands they
call."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from mlmake.cli.app import Ctx, cli, reporter_for

pass_ctx = click.make_pass_decorator(Ctx)


@cli.group("hooks")
def hooks_group() -> None:
    """Keep outputs in step with Git: restore them on checkout, rebuild after merges, push
    the cache before `git push` (driven by the Mlfile's [hooks] table)."""


@hooks_group.command("install")
@pass_ctx
def install_cmd(g: Ctx) -> int:
    """Add mlmake to this repository's Git hooks, after any hook already there."""
    changes = g.project().install_hooks()
    for c in changes:
        if c.change == "unchanged" and not g.verbose:
            continue
        extra = f" (runs after the existing hook, kept as {c.name}.mlmake-orig)" \
            if c.chained and c.change == "installed" else ""
        click.echo(f"{c.change} {_rel(c.path)}{extra}")
    if changes and all(c.change == "unchanged" for c in changes):
        click.echo("hooks already installed; nothing changed")
    return 0


@hooks_group.command("uninstall")
@pass_ctx
def uninstall_cmd(g: Ctx) -> int:
    """Take mlmake out of the Git hooks and put back the hooks that were there before."""
    changes = g.project().uninstall_hooks()
    for c in changes:
        how = "restored the original" if c.change == "restored" else "removed"
        click.echo(f"{how} {_rel(c.path)}")
    if not changes:
        click.echo("no mlmake hooks installed; nothing changed")
    return 0


@hooks_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the states as JSON.")
@pass_ctx
def status_cmd(g: Ctx, as_json: bool) -> int:
    """Show which hooks call mlmake and what each does (exit 1 when one is missing)."""
    states = g.project().hooks_status()
    missing = [s for s in states if s.wanted and s.state != "installed"]
    if as_json:
        click.echo(json.dumps([{"hook": s.name, "path": s.path, "state": s.state,
                                "chained": s.chained, "actions": list(s.actions),
                                "wanted": s.wanted} for s in states], indent=2))
        return 1 if missing else 0
    width = max(len(s.name) for s in states)
    for s in states:
        acts = ", ".join(s.actions) or "-"
        note = " (after the original hook)" if s.chained else ""
        click.echo(f"{s.name:<{width}}  {s.state:<9}  {acts}{note}")
    if missing:
        click.echo(f"{', '.join(s.name for s in missing)} not up to date: run "
                   "`mlmake hooks install`")
    return 1 if missing else 0


@hooks_group.command("run", hidden=True,
                     context_settings={"ignore_unknown_options": True})
@click.argument("hook")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def run_cmd(g: Ctx, hook: str, args: tuple[str, ...]) -> int:
    """Do what the [hooks] table says for HOOK (called by the hook scripts)."""
    from mlmake.hooks import BLOCK_EXIT, STDIN_HOOKS

    stdin = ""
    if hook in STDIN_HOOKS and not sys.stdin.isatty():
        stdin = sys.stdin.read()
    mlfile = os.path.join(g.directory, g.file or "Mlfile")
    if not os.path.isfile(mlfile):
        return 0  # this commit predates the project (or drops it): nothing to keep in step
    try:
        result = g.project().run_hook(hook, args, stdin)
    except Exception as exc:  # noqa: BLE001 - a hook never makes Git fail over mlmake
        click.echo(f"mlmake: warning: {hook}: {' '.join(str(exc).split()) or type(exc).__name__}"
                   , err=True)
        return 0
    for line in result.lines:
        click.echo(line, err=True)
    return BLOCK_EXIT if result.code else 0


@hooks_group.command("build", hidden=True)
@click.option("--trigger", default="hook", help="What the run records as its trigger.")
@click.argument("targets", nargs=-1)
@pass_ctx
def build_cmd(g: Ctx, trigger: str, targets: tuple[str, ...]) -> int:
    """Build TARGETS in the background for a hook (its output goes to a log)."""
    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {trigger}: building "
               f"{' '.join(targets) or 'the default targets'} (pid {os.getpid()})")
    project = g.project()
    result = project.run(targets, reporter=reporter_for(g), trigger=trigger)
    return 0 if result.ok else 1


def _rel(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("../..") else rel
