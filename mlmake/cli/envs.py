"""`mlmake envs`: list, pre-build and prune the project's environments."""

from __future__ import annotations

import json

import click

from mlmake.cli.app import Ctx, cli

pass_ctx = click.make_pass_decorator(Ctx)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(n)


@cli.group("envs")
def envs_group() -> None:
    """Environments targets run in: venvs from requirements files, Docker images."""


@envs_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the environments as JSON.")
@pass_ctx
def list_cmd(g: Ctx, as_json: bool) -> int:
    """Show every [env] with its digest, where it lives, whether it is built and who uses
    it, then what no target uses any more."""
    rep = g.project().envs()
    if as_json:
        click.echo(json.dumps({"envs": [e.as_dict() for e in rep.envs],
                               "unused": [u.as_dict() for u in rep.unused],
                               "notes": rep.notes}, indent=2, sort_keys=True))
        return 0
    for note in rep.notes:
        click.echo(f"note: {note}", err=True)
    if not rep.envs:
        click.echo("no environments: the Mlfile has no [env.NAME] table")
    rows = [(e.name, e.kind, e.state, e.digest[:16], e.location, _size(e.size),
             ("used by " + ", ".join(e.targets)) if e.targets else "used by no target")
            for e in rep.envs]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(6)]
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(6)]
        note = next((e.note for e in rep.envs if e.name == r[0]), "")
        click.echo("  ".join(cells + [r[6]]) + (f" ({note})" if note else ""))
    if rep.unused:
        click.echo("unused (`mlmake envs prune` removes them):")
        for u in rep.unused:
            click.echo(f"  {u.location}  ({u.kind}{', ' + _size(u.size) if u.size else ''})")
    return 0


@envs_group.command("build")
@click.argument("names", nargs=-1)
@pass_ctx
def build_cmd(g: Ctx, names: tuple[str, ...]) -> int:
    """Build (or pull) environments NAMES now (default: all), so no run waits for them."""

    def log(env: str, line: str) -> None:
        if not g.quiet:
            click.echo(f"[{env}] {line}")

    results = g.project().build_envs(names, log)
    failed = 0
    for r in results:
        if r.ok:
            click.echo(f"✓ {r.name}: {r.location}")
        else:
            failed += 1
            click.echo(f"✗ {r.name}: {r.message}", err=True)
    return 1 if failed else 0


@envs_group.command("prune")
@click.option("-n", "--dry-run", is_flag=True, help="List what would be removed.")
@pass_ctx
def prune_cmd(g: Ctx, dry_run: bool) -> int:
    """Remove the venvs and images that no target of the current Mlfile uses."""
    res = g.project().prune_envs(dry_run)
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    verb = "would remove" if dry_run else "removed"
    for u in res.removed:
        click.echo(f"{verb} {u.location} ({u.kind}{', ' + _size(u.size) if u.size else ''})")
    for b in res.busy:
        click.echo(f"kept {b}: in use by a build right now", err=True)
    click.echo(f"{verb} {len(res.removed)} environments ({_size(res.bytes_freed)})")
    return 0
