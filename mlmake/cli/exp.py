"""`mlmake exp`: run, queue, compare, keep and share experiments (a thin layer over
mlmake.experiments.Experiments, itself over Project)."""

from __future__ import annotations

import csv
import io
import json
import sys
import threading
from typing import Any

import click

from mlmake import events as ev
from mlmake.cli.app import Ctx, cli

pass_ctx = click.make_pass_decorator(Ctx)


@cli.group("exp")
def exp_group() -> None:
    """Run experiments with other params in isolated worktrees, and compare and keep them."""


def _progress(g: Ctx) -> Any:
    """A per-experiment progress printer: one line per target as it starts and ends."""
    lock = threading.Lock()

    def emit(name: str, event: ev.Event) -> None:
        line = None
        if isinstance(event, ev.BuildStarted):
            line = f"[{name}] started: {len(event.targets)} targets"
        elif isinstance(event, ev.TargetStarted) and not g.quiet:
            line = f"[{name}] ▶ {event.name}"
        elif isinstance(event, ev.TargetFinished):
            o = event.outcome
            if o.status == "failed" or (not g.quiet and (o.status != "uptodate" or g.verbose)):
                line = f"[{name}] {o.target}: {o.status} ({o.duration:.1f}s)" + \
                    (f" {o.message}" if o.message else "")
        elif isinstance(event, ev.TargetOutput) and g.verbose:
            line = f"[{name}] [{event.name}] {event.line}"
        elif isinstance(event, ev.BuildFinished) and not event.summary.interrupted:
            line = f"[{name}] {event.summary.line}"
        elif isinstance(event, ev.Notice):
            line = f"[{name}] {event.text}"
        if line is not None:
            with lock:
                click.echo(line)
    return emit


def _ran(g: Ctx, exps: list[Any]) -> int:
    for e in exps:
        rev = f" {e.commit[:12]}" if e.commit else ""
        click.echo(f"experiment {e.name}{rev}: {e.status}" +
                   (f" ({e.message})" if e.message else ""))
    return 1 if any(e.status != "succeeded" for e in exps) else 0


@exp_group.command("run")
@click.argument("targets", nargs=-1)
@click.option("-S", "--set-param", "sets", multiple=True, metavar="KEY=VALUE[,VALUE…]",
              help="Override a param; a comma list makes a grid (repeatable).")
@click.option("-n", "--name", default=None, help="Name the experiment (NAME-1… for a grid).")
@click.option("--queue", "only_queue", is_flag=True, help="Queue only; `exp start` runs it.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Experiments of a grid to run at once.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Run each experiment's targets here or as Ray tasks.")
@click.option("--address", default=None, metavar="ADDR",
              help="Ray cluster to join (auto, host:port, ray://...).")
@pass_ctx
def exp_run(g: Ctx, targets: tuple[str, ...], sets: tuple[str, ...], name: str | None,
            only_queue: bool, jobs: int, executor: str | None, address: str | None) -> int:
    """Build the work tree's code with params set by -S in an isolated worktree, and record
    it as an experiment; the work tree, index and lock are not touched."""
    exps = _exps(g)
    if only_queue:
        for q in exps.queue(sets, name, targets):
            click.echo(f"queued {q.name} " + " ".join(f"{k}={json.dumps(v)}"
                                                       for k, v in q.overrides.items()))
        return 0
    return _ran(g, exps.run(sets, name, targets, jobs, executor, _progress(g), address))


@exp_group.command("start")
@click.argument("names", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Experiments to run at once.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Run each experiment's targets here or as Ray tasks.")
@click.option("--address", default=None, metavar="ADDR",
              help="Ray cluster to join (auto, host:port, ray://...).")
@pass_ctx
def exp_start(g: Ctx, names: tuple[str, ...], jobs: int, executor: str | None,
              address: str | None) -> int:
    """Run the queued experiments (or those NAMEd), JOBS at a time."""
    done = _exps(g).start(jobs, executor, _progress(g), list(names) if names else None,
                          address)
    if not done:
        click.echo("no queued experiments: queue some with `mlmake exp run --queue -S …`.")
        return 0
    return _ran(g, done)


@exp_group.command("show")
@click.option("-a", "--all", "all_columns", is_flag=True,
              help="Show every param and metric column, not only those that differ.")
@click.option("--sort-by", default=None, metavar="METRIC",
              help="Sort experiments by a metric (KEY or PATH:KEY) or param.")
@click.option("--sort-order", type=click.Choice(["asc", "desc"]), default="asc",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--precision", type=click.IntRange(min=0), default=4, show_default=True,
              metavar="N", help="Round floats in the table to N decimal places.")
@pass_ctx
def exp_show(g: Ctx, all_columns: bool, sort_by: str | None, sort_order: str,
             as_json: bool, as_csv: bool, precision: int) -> int:
    """A table of the work tree, the base commit and the experiments × params × metrics."""
    from mlmake import exp_table
    from mlmake.cli.compare import _cell, _get, _print, _table

    t = exp_table.table(exp_table.rows(_exps(g)), all_columns or as_json,
                        sort_by, sort_order == "desc")
    if as_json:
        click.echo(json.dumps(t.as_json(), indent=2, default=str))
        return 0
    mcols = [k if sum(1 for _, k2 in t.metrics if k2 == k) == 1 else f"{p}:{k}"
             for p, k in t.metrics]
    header = ["experiment", "rev", "status", *mcols, *t.params]
    body = [[r.name, (r.rev or "")[:7], r.status,
             *(r.metric(p, k) for p, k in t.metrics),
             *(_get(r.params, k) for k in t.params)] for r in t.rows]
    if as_csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for row in body:
            w.writerow(row[:3] + [_csv(v) for v in row[3:]])
        sys.stdout.write(buf.getvalue())
        return 0
    table = _table(header, numeric_from=3)
    for row in body:
        table.add_row(*(str(v) for v in row[:3]), *(_cell(v, precision) for v in row[3:]))
    _print(table)
    return 0


def _csv(v: Any) -> str:
    from mlmake.metrics import ABSENT

    if v is ABSENT or v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


@exp_group.command("diff")
@click.argument("a")
@click.argument("b", required=False)
@click.option("-a", "--all", "all_rows", is_flag=True, help="List unchanged keys too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--precision", type=click.IntRange(min=0), default=4, show_default=True,
              metavar="N")
@pass_ctx
def exp_diff(g: Ctx, a: str, b: str | None, all_rows: bool, as_json: bool,
             precision: int) -> int:
    """Compare the params and metrics of experiment A with B (default: the work tree);
    `workspace` and `baseline` name those rows."""
    from mlmake import exp_table
    from mlmake.cli.compare import _cell, _delta, _print, _table

    old, new, params, metrics = exp_table.diff(_exps(g), a, b, all_rows)
    if as_json:
        click.echo(json.dumps({"old": old.name, "new": new.name,
                               "params": [r.as_json() for r in params],
                               "metrics": [r.as_json() for r in metrics]}, indent=2,
                              default=str))
        return 0
    if not params and not metrics:
        click.echo(f"no params or metrics differ between {old.name} and {new.name}")
        return 0
    table = _table(["path", "key", old.name, new.name, "change"], numeric_from=2)
    for r in [*params, *metrics]:
        table.add_row(r.path, r.key, _cell(r.old, precision), _cell(r.new, precision),
                      _delta(r.change, precision))
    _print(table)
    return 0


@exp_group.command("apply")
@click.argument("ident", metavar="ID")
@click.option("-f", "--force", is_flag=True, help="Overwrite uncommitted changes.")
@pass_ctx
def exp_apply(g: Ctx, ident: str, force: bool) -> int:
    """Bring experiment ID into the work tree (code, params, lock, outs), running nothing;
    outs the cache lacks come from the mlmake remote. `git commit` then makes it the new
    baseline."""
    e = _exps(g).apply(ident, force)
    click.echo(f"applied {e.name} ({e.commit[:12]}): `git commit` to keep it")
    return 0


@exp_group.command("branch")
@click.argument("ident", metavar="ID")
@click.argument("name")
@pass_ctx
def exp_branch(g: Ctx, ident: str, name: str) -> int:
    """Make Git branch NAME of experiment ID."""
    e = _exps(g).branch(ident, name)
    click.echo(f"branch {name} at {e.name} ({e.commit[:12]})")
    return 0


@exp_group.command("remove")
@click.argument("idents", nargs=-1, metavar="[ID]...")
@click.option("--all", "everything", is_flag=True, help="Remove every experiment.")
@click.option("--queued", is_flag=True, help="Remove the queued experiments.")
@pass_ctx
def exp_remove(g: Ctx, idents: tuple[str, ...], everything: bool, queued: bool) -> int:
    """Remove experiments (their outs leave the cache with the next `gc`)."""
    if not (idents or everything or queued):
        raise click.UsageError("name experiments to remove, or pass --all or --queued")
    for n in _exps(g).remove(idents, everything, queued):
        click.echo(f"removed {n}")
    return 0


@exp_group.command("push")
@click.argument("git_remote", required=False)
@click.argument("names", nargs=-1)
@click.option("-r", "--remote", default=None, help="The mlmake remote for the outs.")
@pass_ctx
def exp_push(g: Ctx, git_remote: str | None, names: tuple[str, ...], remote: str | None
             ) -> int:
    """Push experiments (all, or NAMES) to GIT_REMOTE (default: the branch's upstream
    remote, else origin) as refs/mlmake/exps/*, and their outs to the mlmake remote
    (`mlmake push` does this too). NAMES replace what GIT_REMOTE holds under their names;
    without NAMES, an experiment it holds under the same name is left alone."""
    res = _exps(g).push(git_remote, remote, names)
    _shared("pushed", res)
    return 0


@exp_group.command("pull")
@click.argument("git_remote", required=False)
@click.option("-r", "--remote", default=None, help="The mlmake remote for the outs.")
@pass_ctx
def exp_pull(g: Ctx, git_remote: str | None, remote: str | None) -> int:
    """Fetch the experiments of GIT_REMOTE (default: the branch's upstream remote, else
    origin) and the outs of every experiment from the mlmake remote (`mlmake pull` fetches
    the experiments alone; `exp apply` then downloads the outs of the one it applies)."""
    res = _exps(g).pull(git_remote, remote)
    _shared("pulled", res)
    return 0


def _shared(verb: str, res: Any) -> None:
    click.echo(f"{verb} {len(res.experiments)} experiment(s)")
    refs = res.refs
    for name in refs.clashed if refs is not None else []:
        click.echo(f"warning: experiment '{name}' differs on Git remote '{refs.remote}' "
                   "(another experiment of that name); each side keeps its own", err=True)
    if res.cache is not None and res.cache.missing:
        click.echo(f"warning: {len(res.cache.missing)} out(s) missing from the cache: "
                   + ", ".join(res.cache.missing[:5]), err=True)


def _exps(g: Ctx) -> Any:
    """The experiments of the project the command works on."""
    from mlmake.experiments import Experiments

    return Experiments(g.project())
