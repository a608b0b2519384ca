"""Commands over outputs of commits: checkout, get, commit, gc."""

from __future__ import annotations

import json

import click

from mlmake.cli.app import Ctx, command

pass_ctx = click.make_pass_decorator(Ctx)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@command("checkout")
@click.argument("rev", required=False, default=None)
@click.argument("targets", nargs=-1)
@click.option("--force", is_flag=True, help="Overwrite outs that were modified by hand.")
@click.option("--metrics", is_flag=True,
              help="Also write REV's metrics files from Git (they are committed, so a plain "
                   "checkout leaves them as they are).")
@pass_ctx
def checkout_cmd(g: Ctx, rev: str | None, targets: tuple[str, ...], force: bool,
                 metrics: bool) -> int:
    """Restore the outputs recorded in REV's Mlfile.lock; nothing runs.

    Without REV, the work tree's Mlfile.lock (what `git checkout` just put there). Metrics
    files are committed to Git and stay as they are unless --metrics is given; `git checkout
    REV` with `mlmake hooks install` moves code, metrics and outputs together."""
    res = g.project().checkout(rev, targets, force, metrics)
    if not g.quiet:
        for out in res.restored:
            click.echo(f"restored {out}")
        for out in res.metrics_written:
            click.echo(f"restored {out} (from Git)")
    for out in res.missing:
        click.echo(f"warning: {out} is not in the cache; `mlmake pull` or build it", err=True)
    left = [m for m in res.metrics if m not in res.metrics_written]
    if rev is not None and left and not metrics:
        shown = ", ".join(left[:3]) + (" …" if len(left) > 3 else "")
        click.echo(f"note: metrics files ({shown}) are committed to Git and were left as they "
                   f"are, so they may not match these outputs. `mlmake checkout {rev} "
                   "--metrics` writes them too; `git checkout REV` with `mlmake hooks "
                   "install` moves code, metrics and outputs together.", err=True)
    where = res.commit[:10] if res.commit != "workspace" else "workspace"
    click.echo(f"{where}: restored {len(res.restored)} · unchanged "
               f"{len(res.unchanged)} · missing {len(res.missing)}")
    return 1 if res.missing else 0


@command("get")
@click.argument("rev", required=False)
@click.argument("path", required=False)
@click.option("-o", "--out", "dest", required=True, metavar="DEST",
              help="Where to write the file or directory.")
@click.option("--object", "oid", metavar="HASH", default=None,
              help="Write the cache object HASH instead (e.g. a hand-edited out that a build "
                   "kept before restoring the recorded version).")
@pass_ctx
def get_cmd(g: Ctx, rev: str | None, path: str | None, dest: str, oid: str | None) -> int:
    """Export PATH as it was at REV to DEST (an output from the cache or a tracked file)."""
    if oid is not None:
        if rev or path:
            raise click.UsageError("give either REV PATH or --object HASH, not both.")
        g.project().get_object(oid, dest)
        if not g.quiet:
            click.echo(f"wrote {dest} (object {oid[:12]}… from the cache)")
        return 0
    if not rev or not path:
        raise click.UsageError("give REV and PATH (or --object HASH).")
    source = g.project().get(rev, path, dest)
    if not g.quiet:
        click.echo(f"wrote {dest} ({path} at {rev}, from {source})")
    return 0


@command("commit")
@click.argument("targets", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Record even targets that are up to date.")
@pass_ctx
def commit_cmd(g: Ctx, targets: tuple[str, ...], force: bool) -> int:
    """Record current outs and deps as up to date without running (after a cosmetic edit)."""
    changed = g.project().commit(targets, force)
    for n in changed:
        click.echo(f"recorded {n}")
    if not changed:
        click.echo("nothing to record: everything is up to date")
    return 0


@command("gc")
@click.option("--workspace", "scope", flag_value="workspace", default=True,
              help="Keep what the work tree's Mlfile.lock needs (default).")
@click.option("--all-commits", "scope", flag_value="all-commits",
              help="Keep what the lock of any commit on any branch or tag needs.")
@click.option("-n", "--dry-run", is_flag=True, help="List what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def gc_cmd(g: Ctx, scope: str, dry_run: bool, as_json: bool) -> int:
    """Remove cached objects that no chosen lock file references."""
    res = g.project().gc(all_commits=scope == "all-commits", dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"kept": res.kept, "removed": res.removed,
                               "bytes_freed": res.bytes_freed, "dry_run": dry_run,
                               "runcache_removed": res.runcache_removed,
                               "items": [i.__dict__ for i in res.items]}, indent=2))
        return 0
    verb = "would remove" if dry_run else "removed"
    if not g.quiet:
        for i in res.items:
            where = f"{i.target}, commit {i.commit[:10]}" if i.commit else \
                f"{i.target}, in the run cache only" if i.target else ""
            what = f"{i.path} ({where})" if i.path else "objects no lock or run names"
            click.echo(f"{verb} {what}: {_size(i.bytes)} in {i.objects} "
                       f"object{'s' if i.objects != 1 else ''}")
    if g.verbose:
        for oid in res.removed:
            click.echo(f"{verb} object {oid}")
    click.echo(f"{verb} {len(res.removed)} objects ({_size(res.bytes_freed)}), kept "
               f"{res.kept}; {res.runcache_removed} run-cache entries dropped")
    return 0
