"""Data source commands: add, import and update (what `dvc add` and `dvc import-url` do)."""

from __future__ import annotations

from typing import Any

import click

from mlmake.cli.app import Ctx, command
from mlmake.cli.outputs import _size
from mlmake.errors import UsageError

pass_ctx = click.make_pass_decorator(Ctx)

_COMMIT_HINT = "commit Mlfile.lock and .gitignore to record it: git add Mlfile.lock .gitignore"


def _counts(kind: str, files: int, size: int) -> str:
    if kind == "dir":
        return f"{files} {'file' if files == 1 else 'files'}, {_size(size)}"
    return _size(size)


@command("add")
@click.argument("paths", nargs=-1, required=True)
@pass_ctx
def add_cmd(g: Ctx, paths: tuple[str, ...]) -> int:
    """Track data that no target produces: store it by hash, link it back read-only,
    Git-ignore it and record its version in Mlfile.lock. Run again to record a new version."""
    done = g.project().add(paths)
    if not g.quiet:
        for a in done:
            name = a.path + ("/" if a.kind == "dir" else "")
            click.echo(f"{a.status} {name} {a.hash[:8]} ({_counts(a.kind, a.files, a.size)})")
        if any(a.status != "unchanged" for a in done):
            click.echo(_COMMIT_HINT)
    return 0


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"-o takes KEY=VALUE (a filesystem option such as "
                             f"endpoint_url=http://…), not '{p}'.")
        k, v = p.split("=", 1)
        out[k] = v
    return out


@command("import")
@click.argument("url")
@click.argument("path")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A filesystem option (e.g. endpoint_url=…); recorded, so no secrets.")
@pass_ctx
def import_cmd(g: Ctx, url: str, path: str, options: tuple[str, ...]) -> int:
    """Download URL (s3://, https://, any fsspec scheme, or a path outside the project) to
    PATH and track it, recording the URL and the version seen (ETag, version id or content
    hash). `mlmake update PATH` records a newer version; builds never download it."""
    res = g.project().import_data(url, path, _options(options))
    if not g.quiet:
        click.echo(f"{res.status} {res.path} {res.hash[:8]} from {res.url} "
                   f"(version {res.version[:16]}, "
                   f"{_counts('dir' if res.path.endswith('/') else 'file', res.files, res.size)})")
        click.echo(_COMMIT_HINT)
    return 0


@command("update")
@click.argument("paths", nargs=-1)
@pass_ctx
def update_cmd(g: Ctx, paths: tuple[str, ...]) -> int:
    """Ask the origin of imported data (default: every import) for a new version; download
    and record it if there is one."""
    done = g.project().update_data(paths)
    if not g.quiet:
        if not done:
            click.echo("nothing imported: `mlmake import URL PATH` tracks data from elsewhere")
        for r in done:
            if r.status == "unchanged":
                click.echo(f"{r.path} is up to date (version {r.version[:16]})")
            else:
                click.echo(f"updated {r.path} {r.hash[:8]} from {r.url} "
                           f"(version {r.version[:16]})")
        if any(r.status != "unchanged" for r in done):
            click.echo(_COMMIT_HINT)
    return 0
