"""Build and inspection commands: run, status, graph, runs, log, init."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from mlmake.cli.app import Ctx, command, reporter_for

pass_ctx = click.make_pass_decorator(Ctx)


def run_options(f: Any) -> Any:
    opts = [
        click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
                     help="Run at most N targets at once (default: [project] jobs or CPUs)."),
        click.option("-n", "--dry-run", is_flag=True,
                     help="List what would run and why; run nothing."),
        click.option("-k", "--keep-going", is_flag=True,
                     help="Keep building what does not depend on a failed target."),
        click.option("-B", "--force", is_flag=True,
                     help="Rerun the selected targets and everything they depend on, even "
                          "when up to date (make's -B)."),
        click.option("--force-only", is_flag=True,
                     help="Rerun only the named targets; what they depend on is reused or "
                          "restored when up to date."),
        click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
                     help="Where commands run (default: [project] executor or local)."),
        click.option("--address", default=None, metavar="ADDR",
                     help="Ray cluster to join (auto, host:port, ray://...)."),
        click.option("--no-remote", is_flag=True, help="Do not look results up in a remote."),
        click.option("--push", is_flag=True, help="Push each result to the remote as it is built."),
        click.option("--no-wait", is_flag=True,
                     help="Fail at once if another mlmake run holds the project."),
        click.option("--lean", is_flag=True, default=None,
                     help="Link only the outs that the requested targets and the commands "
                          "that run need; leave the others absent ([project] materialize = "
                          "\"requested\")."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@command("run")
@click.argument("targets", nargs=-1)
@run_options
@pass_ctx
def run_cmd(g: Ctx, targets: tuple[str, ...], jobs: int | None, dry_run: bool,
            keep_going: bool, force: bool, force_only: bool, executor: str | None,
            address: str | None, no_remote: bool, push: bool, no_wait: bool,
            lean: bool | None) -> int:
    """Build TARGETS (default: [project] default, else every final target)."""
    project = g.project()
    options: dict[str, Any] = {}
    if address:
        options["address"] = address
    lean = lean or None
    if dry_run:
        result = project.run(targets, force=force, force_only=force_only, dry_run=True,
                             executor=executor, lean=lean, use_remote=not no_remote)
        _print_plan(result.plan, dry=True, project=project, verbose=g.verbose)
        return 0
    reporter = reporter_for(g)
    try:
        result = project.run(targets, jobs=jobs, keep_going=keep_going, force=force,
                             force_only=force_only,
                             executor=executor, reporter=reporter, wait=not no_wait,
                             executor_options=options, use_remote=not no_remote,
                             push=push or None, lean=lean)
    finally:
        if hasattr(reporter, "close"):
            reporter.close()
    return 0 if result.ok else 1


def _print_plan(plan: Any, dry: bool, project: Any = None, verbose: bool = False
                ) -> None:
    """Stale targets with their reasons: those that run, then those only restored from the
    cache (outs missing or edited by hand); in lean mode, the outs deliberately absent."""
    absent = plan.not_materialized
    if not plan.stale:
        click.echo("everything is up to date")
        for n, outs in absent.items():
            click.echo(f"not materialized (lean): {n}: {', '.join(outs)}")
        return
    for n in plan.stale:
        st = plan.states[n]
        if dry:
            action = plan.actions.get(n, "run" if st.must_run else "restore")
            verb = "would run" if action == "run" else "would restore" + (
                f" (from remote {action.split(':', 1)[1]})" if ":" in action else "")
        elif st.must_run:
            verb = "stale"
        elif all(r.kind == "out-missing" for r in st.reasons):
            verb = "not materialized"
        else:
            verb = "modified"
        click.echo(f"{verb}: {n}")
        for line in reason_lines(st.reasons, project, verbose):
            click.echo(f"    {line}")
    if not dry:
        for n, outs in absent.items():
            click.echo(f"not materialized (lean): {n}: {', '.join(outs)}")
    run = plan.to_run if not dry else [n for n in plan.stale if plan.actions.get(n) == "run"]
    restore = [n for n in plan.stale if n not in run]
    parts = []
    if run:
        parts.append(f"{len(run)} of {len(plan.order)} targets "
                     f"{'would run' if dry else 'stale'}")
    if restore:
        parts.append(f"{len(restore)} {'would be restored' if dry else 'to restore'} from "
                     "the cache with nothing run")
    click.echo(", ".join(parts))
    if restore and not dry:
        click.echo("  (their outs are recorded in Mlfile.lock but missing or edited in the work "
                   "tree: `mlmake` or `mlmake checkout` restores them, `mlmake pull` fetches "
                   "them from the remote first)")


def reason_lines(reasons: Any, project: Any = None, verbose: bool = False) -> list[str]:
    """The reasons worth reading: a target never built says so in one line (its missing
    deps and stale upstreams follow from that; -v lists them), and an environment change
    says what changed when mlmake remembers the environment it was built in."""
    if not verbose and any(r.kind == "new" for r in reasons):
        reasons = [r for r in reasons if r.kind in ("forced", "always", "new")]
    lines = []
    for r in reasons:
        text = r.describe()
        if r.kind == "env" and r.subject and project is not None:
            detail = project.env_change(r.subject, r.old, r.new)
            if detail:
                text += f": {detail}"
        lines.append(text)
    return lines


@command("status")
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the states as JSON.")
@click.option("--lean", is_flag=True, default=None,
              help="Outs that nothing needs may be absent (as after `mlmake --lean`).")
@pass_ctx
def status_cmd(g: Ctx, targets: tuple[str, ...], as_json: bool, lean: bool | None) -> int:
    """Say which targets are stale and why (exit 1 when any is)."""
    project = g.project()
    plan = project.status(targets, lean=lean or None)
    if as_json:
        data = {"stale": plan.stale, "run": plan.to_run, "restore": plan.to_restore,
                "not_materialized": {n: list(v) for n, v in plan.not_materialized.items()},
                "targets": {
                    n: {"stale": plan.states[n].stale, "key": plan.states[n].key,
                        "action": ("run" if plan.states[n].must_run else "restore")
                        if plan.states[n].stale else None,
                        "not_materialized": list(plan.states[n].absent),
                        "reasons": [_reason_json(r, project) for r in plan.states[n].reasons]}
                    for n in plan.order}}
        if plan.data:
            data["data"] = [c.as_dict() for c in plan.data]
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not g.quiet:
        for change in plan.data:
            click.echo(change.describe())
        _print_plan(plan, dry=False, project=project, verbose=g.verbose)
        if g.verbose:
            for line in plan.notes:
                click.echo(f"note: {line}")
    return 1 if plan.stale or plan.data else 0


def _reason_json(r: Any, project: Any) -> dict[str, Any]:
    d = r.as_dict()
    if r.kind == "env" and r.subject:
        detail = project.env_change(r.subject, r.old, r.new)
        if detail:
            d["detail"] = detail
    return d


@command("graph")
@click.argument("targets", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid", "json"]),
              default="text", help="Output format (default: a drawing in the terminal).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to FILE instead of stdout.")
@pass_ctx
def graph_cmd(g: Ctx, targets: tuple[str, ...], fmt: str, as_json: bool,
              output: str | None) -> int:
    """Draw the DAG; stale targets are marked with *."""
    from mlmake import drawing

    data = g.project().graph_data(targets)
    fmt = "json" if as_json else fmt
    if fmt == "json":
        text = drawing.to_json(data)
    elif fmt == "dot":
        text = drawing.to_dot(data)
    elif fmt == "mermaid":
        text = drawing.to_mermaid(data)
    else:
        text = _draw_text(data)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)
    return 0


def _draw_text(data: dict[str, Any]) -> str:
    """Layers of the DAG, each node with the targets it needs; stale marked ●, fresh ○."""
    state = {n["name"]: n["state"] for n in data["nodes"]}
    ups: dict[str, list[str]] = {n["name"]: [] for n in data["nodes"]}
    for e in data["edges"]:
        ups[e["to"]].append(e["from"] + (" (after)" if e["kind"] == "after" else ""))
    level: dict[str, int] = {}
    for n in data["nodes"]:  # nodes are in topological order
        name = n["name"]
        level[name] = 1 + max((level[u.split(" ")[0]] for u in ups[name]), default=-1)
    lines = []
    for lv in range(max(level.values(), default=-1) + 1):
        names = [n for n in level if level[n] == lv]
        lines.append(f"── stage {lv + 1} " + "─" * 40)
        for name in names:
            mark = {"stale": "● ", "uptodate": "○ "}.get(state[name] or "", "  ")
            arrow = f"  ◀── {', '.join(ups[name])}" if ups[name] else ""
            lines.append(f"  {mark}{name}{' (stale)' if state[name] == 'stale' else ''}{arrow}")
    lines.append("○ up to date   ● stale")
    return "\n".join(lines) + "\n"


@command("runs")
@click.argument("target", required=False)
@click.option("-n", "--limit", default=30, show_default=True, help="How many runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@pass_ctx
def runs_cmd(g: Ctx, target: str | None, limit: int, as_json: bool) -> int:
    """List recorded target runs, newest first."""
    project = g.project()
    recs = project.runs(target, limit)
    project_runs = {b["id"]: b for b in project.runs_store.builds(max(500, limit))}
    if as_json:
        click.echo(json.dumps([{**r.as_json(),
                                "dirty": project_runs.get(r.build, {}).get("dirty"),
                                "data": project_runs.get(r.build, {}).get("data") or {}}
                               for r in recs], indent=2, sort_keys=True))
        return 0
    if not recs:
        click.echo("no runs recorded yet")
        return 0
    from rich.console import Console
    from rich.table import Table

    from mlmake.runs import data_labels

    labels = {r.build: data_labels(project_runs.get(r.build, {}).get("data") or {})
              for r in recs}
    table = Table(box=None, pad_edge=False)
    for col in ("started", "target", "outcome", "duration", "commit", "trigger/build", "host"):
        table.add_column(col)
    widest = max((len(v) for vs in labels.values() for v in vs), default=0)
    if widest:  # the data version each run read, one source a line, never cut
        table.add_column("data", no_wrap=True, min_width=min(60, widest))
    for r in recs:
        b = project_runs.get(r.build, {})
        table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)), r.target,
                      r.outcome + (f" ({r.exit_code})" if r.outcome == "failed" and
                                   r.exit_code not in (None, 0) else ""),
                      f"{r.duration:.2f}s",
                      (r.commit or "")[:10] + ("+" if b.get("dirty") else ""),
                      f"{b.get('trigger', '?')} {r.build}", r.host,
                      *(("\n".join(labels[r.build]),) if widest else ()))
    Console(width=max(100, _term_width())).print(table)
    if any(project_runs.get(r.build, {}).get("dirty") for r in recs):
        click.echo("+ built from a work tree with uncommitted changes to tracked files")
    return 0


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


@command("log")
@click.argument("target")
@click.option("--path", "path_only", is_flag=True, help="Print the log file's path only.")
@pass_ctx
def log_cmd(g: Ctx, target: str, path_only: bool) -> int:
    """Show the output of TARGET's latest run."""
    path = g.project().log(target)
    if path_only:
        click.echo(path)
        return 0
    with open(path, "rb") as fh:
        sys.stdout.buffer.write(fh.read())
    sys.stdout.flush()
    return 0


@command("init")
@click.argument("directory", required=False, default=".")
@click.option("-t", "--template", default="minimal", show_default=True,
              help="Starter project to copy (minimal, sklearn).")
@click.option("--list", "list_only", is_flag=True, help="List the templates.")
@pass_ctx
def init_cmd(g: Ctx, directory: str, template: str, list_only: bool) -> int:
    """Create an Mlfile and a starter project in DIRECTORY."""
    from mlmake.project import Project
    from mlmake.scaffold import templates

    if list_only:
        for t in templates():
            click.echo(t)
        return 0
    dest = os.path.join(g.directory, directory)
    os.makedirs(dest, exist_ok=True)
    written = Project.init(dest, template)
    for w in written:
        click.echo(f"created {os.path.join(directory, w) if directory != '.' else w}")
    click.echo("next: `mlmake status` to see what would run, `mlmake` to build it")
    return 0
