"""Comparison across commits: `metrics show|diff` and `params show|diff` as tables or JSON."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import click

from mlmake.cli.app import Ctx, cli

pass_ctx = click.make_pass_decorator(Ctx)

ABSENT_MARK = "—"


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def _precision_option(f: Any) -> Any:
    return click.option("--precision", type=click.IntRange(min=0), default=4,
                        show_default=True, metavar="N",
                        help="Round floats in the table to N decimal places.")(f)


def _all_option(f: Any) -> Any:
    return click.option("-a", "--all", "all_rows", is_flag=True,
                        help="List unchanged keys too.")(f)


# -- metrics ---------------------------------------------------------------------------------
@cli.group("metrics", invoke_without_command=True)
@click.pass_context
def metrics_group(ctx: click.Context) -> int:
    """Show and compare metrics across commits."""
    if ctx.invoked_subcommand is None:
        return int(ctx.invoke(metrics_show))
    return 0


@metrics_group.command("show")
@click.argument("revs", nargs=-1, metavar="[REV]...")
@_json_option
@_precision_option
@pass_ctx
def metrics_show(g: Ctx, revs: tuple[str, ...] = (), as_json: bool = False,
                 precision: int = 4) -> int:
    """Show metrics at each REV (default: the work tree).

    A REV is a branch, tag or commit (HEAD~2), or `workspace` for the work tree; past
    revisions are read from Git objects, nothing is checked out.
    """
    return _show(g, revs, "metrics", as_json, precision)


@metrics_group.command("diff")
@click.argument("revs", nargs=-1, metavar="[A [B]]")
@_all_option
@_json_option
@_precision_option
@pass_ctx
def metrics_diff(g: Ctx, revs: tuple[str, ...], all_rows: bool, as_json: bool,
                 precision: int) -> int:
    """Compare metrics: HEAD vs work tree, A vs work tree, or A vs B.

    Lists the keys whose value changed (all keys with --all); `change` is new - old for
    numbers. A file absent at a revision shows as —.
    """
    return _diff(g, revs, "metrics", all_rows, as_json, precision)


# -- params ----------------------------------------------------------------------------------
@cli.group("params")
def params_group() -> None:
    """Show and compare params across commits."""


@params_group.command("show")
@click.argument("revs", nargs=-1, metavar="[REV]...")
@_json_option
@_precision_option
@pass_ctx
def params_show(g: Ctx, revs: tuple[str, ...], as_json: bool, precision: int) -> int:
    """Show params at each REV (default: the work tree).

    A REV is a branch, tag or commit (HEAD~2), or `workspace` for the work tree.
    """
    return _show(g, revs, "params", as_json, precision)


@params_group.command("diff")
@click.argument("revs", nargs=-1, metavar="[A [B]]")
@_all_option
@_json_option
@_precision_option
@pass_ctx
def params_diff(g: Ctx, revs: tuple[str, ...], all_rows: bool, as_json: bool,
                precision: int) -> int:
    """Compare params: HEAD vs work tree, A vs work tree, or A vs B.

    Lists the keys whose value changed (all keys with --all) in the [project] params files.
    """
    return _diff(g, revs, "params", all_rows, as_json, precision)


# -- rendering -------------------------------------------------------------------------------
def _show(g: Ctx, revs: tuple[str, ...], kind: str, as_json: bool, precision: int) -> int:
    snaps = g.project().metrics(revs, kind)
    if as_json:
        _echo_json({s.rev: s.as_json() for s in snaps})
        return 0
    if not any(s.files for s in snaps):
        where = "`metrics = [...]` on a target" if kind == "metrics" else "[project] params"
        click.echo(f"no {kind} files: declare them in the Mlfile ({where}).", err=True)
        return 0
    table = _table(["path", "key", *(s.rev for s in snaps)], numeric_from=2)
    for path in dict.fromkeys(p for s in snaps for p in s.files):
        keys = sorted({k for s in snaps for k in (s.files.get(path) or {})})
        if not keys:
            table.add_row(path, "", *(ABSENT_MARK for _ in snaps))
            continue
        for i, key in enumerate(keys):
            table.add_row(path if i == 0 else "", key,
                          *(_cell(_get(s.files.get(path), key), precision) for s in snaps))
    _print(table)
    return 0


def _diff(g: Ctx, revs: tuple[str, ...], kind: str, all_rows: bool, as_json: bool,
          precision: int) -> int:
    d = g.project().metrics_diff(revs, kind, all_rows)
    if as_json:
        _echo_json(d.as_json())
        return 0
    if not d.rows:
        if not g.quiet:
            click.echo(f"no {kind} changed between {d.old.rev} and {d.new.rev}")
        return 0
    table = _table(["path", "key", d.old.rev, d.new.rev, "change"], numeric_from=2)
    last = None
    for r in d.rows:
        table.add_row(r.path if r.path != last else "", r.key, _cell(r.old, precision),
                      _cell(r.new, precision), _delta(r.change, precision))
        last = r.path
    _print(table)
    return 0


def _get(flat: dict[str, Any] | None, key: str) -> Any:
    from mlmake.metrics import ABSENT

    return ABSENT if flat is None else flat.get(key, ABSENT)


def _table(columns: list[str], numeric_from: int) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if i >= numeric_from else "left",
                         no_wrap=i < numeric_from)
    return table


def _print(table: Any) -> None:
    from rich.console import Console

    tty = sys.stdout.isatty()
    width = _term_width() if tty else 200
    Console(width=width, highlight=False, soft_wrap=False).print(table)


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, allow_nan=True))


def _cell(v: Any, precision: int) -> str:
    from rich.markup import escape

    from mlmake.metrics import ABSENT

    if v is ABSENT:
        return ABSENT_MARK
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return repr(round(v, precision)) if math.isfinite(v) else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return escape(v)
    return escape(json.dumps(v, default=str))


def _delta(change: Any, precision: int) -> str:
    if change is None:
        return ""
    text = _cell(change, precision)
    return text if text.startswith("-") or change == 0 else "+" + text
