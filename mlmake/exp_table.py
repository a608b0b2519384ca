"""The experiments table: the work tree, the base commit and each experiment as rows of params
and metrics, with the columns that differ, sorted by a metric; and two of them diffed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlmake.errors import UsageError
from mlmake.metrics import ABSENT, WORKSPACE, Row, Snapshot, compare

if TYPE_CHECKING:
    from mlmake.experiments import Experiments

BASELINE = "baseline"


@dataclass(frozen=True)
class ExpRow:
    """One row: `kind` is workspace, baseline, experiment or queued."""

    name: str
    kind: str
    rev: str | None
    base: str | None
    status: str
    created: float
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    def metric(self, path: str, key: str) -> Any:
        flat = self.metrics.get(path)
        return ABSENT if flat is None else flat.get(key, ABSENT)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "rev": self.rev, "base": self.base,
                "status": self.status, "created": self.created, "params": self.params,
                "metrics": self.metrics, "overrides": self.overrides}


@dataclass(frozen=True)
class ExpTable:
    """Rows with the param columns and (metrics path, key) columns to show."""

    rows: list[ExpRow]
    params: list[str]
    metrics: list[tuple[str, str]]

    def as_json(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in self.rows]


def rows(exps: Experiments) -> list[ExpRow]:
    """The work tree, the base commit (HEAD), then each experiment and queued one."""
    project = exps.project
    out = [_row(WORKSPACE, "workspace", None, None, project.metrics([WORKSPACE], "params")[0],
                project.metrics([WORKSPACE])[0])]
    head = project.head_commit()
    if head is not None:
        out.append(_row(BASELINE, "baseline", head, None,
                        project.metrics([head], "params")[0], project.metrics([head])[0]))
    for e in exps.recorded():
        out.append(ExpRow(e.name, "experiment", e.commit, e.base, e.status, e.created,
                          dict(e.params), dict(e.metrics), dict(e.overrides)))
    for q in exps.queued():
        base_params = out[-1].params if head is None else out[1].params
        out.append(ExpRow(q.name, "queued", None, q.base, "queued", q.queued,
                          {**base_params, **q.overrides}, {}, dict(q.overrides)))
    return out


def _row(name: str, kind: str, rev: str | None, base: str | None, params: Snapshot,
         metrics: Snapshot) -> ExpRow:
    merged: dict[str, Any] = {}
    for flat in params.files.values():
        merged.update(flat or {})
    return ExpRow(name, kind, rev, base, "", 0.0, merged, dict(metrics.files))


def table(all_rows: list[ExpRow], all_columns: bool = False, sort_by: str | None = None,
          descending: bool = False) -> ExpTable:
    """Choose the columns (those whose values differ between rows unless `all_columns`; all
    of a kind when none differs) and sort the experiments by metric or param `sort_by`
    (the work tree and base commit stay first; rows without it last)."""
    every_p = list(dict.fromkeys(k for r in all_rows for k in sorted(r.params)))
    every_m = list(dict.fromkeys((p, k) for r in all_rows for p, flat in r.metrics.items()
                                 for k in sorted(flat or {})))
    pkeys, mkeys = every_p, every_m
    if not all_columns:
        pkeys = [k for k in every_p
                 if _differs([r.params.get(k, ABSENT) for r in all_rows])] or every_p
        mkeys = [c for c in every_m if _differs([r.metric(*c) for r in all_rows])] or every_m
    ordered = all_rows
    if sort_by:
        getter = _getter(sort_by, every_p, every_m)
        fixed = [r for r in all_rows if r.kind in ("workspace", "baseline")]
        rest = [r for r in all_rows if r.kind not in ("workspace", "baseline")]
        have = [r for r in rest if _sortable(getter(r))]
        lack = [r for r in rest if not _sortable(getter(r))]
        have.sort(key=lambda r: getter(r), reverse=descending)
        ordered = fixed + have + lack
    return ExpTable(ordered, pkeys, mkeys)


def _getter(name: str, params: list[str], metrics: list[tuple[str, str]]) -> Any:
    path, sep, key = name.partition(":")
    hits = [c for c in metrics if (c == (path, key) if sep else c[1] == name)]
    if len(hits) > 1:
        raise UsageError(f"--sort-by {name}: several metrics files have it "
                         f"({', '.join(p for p, _ in hits)}); write PATH:KEY.")
    if hits:
        p, k = hits[0]
        return lambda r: r.metric(p, k)
    if name in params:
        return lambda r: r.params.get(name, ABSENT)
    known = [k for _, k in metrics] + params
    raise UsageError(f"--sort-by {name}: no metric or param has that name; known: "
                     f"{', '.join(dict.fromkeys(known)) or 'none'}.")


def _sortable(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (
        isinstance(v, float) and math.isnan(v))


def _differs(values: list[Any]) -> bool:
    first = values[0] if values else ABSENT
    return any(not (v is first or (v is not ABSENT and first is not ABSENT and v == first
                                   and type(v) is type(first))) for v in values[1:])


def diff(exps: Experiments, a: str, b: str | None, all_rows: bool = False
         ) -> tuple[ExpRow, ExpRow, list[Row], list[Row]]:
    """(old row, new row, param rows, metric rows) comparing experiment or row `a` with `b`
    (default: the work tree); changed keys only unless `all_rows`."""
    found = rows(exps)

    def pick(ident: str) -> ExpRow:
        for r in found:
            if r.name == ident or (ident == "HEAD" and r.kind == "baseline"):
                return r
        e = exps.get(ident)
        return next(r for r in found if r.name == e.name)

    old, new = pick(a), pick(b or WORKSPACE)
    params = compare(Snapshot(old.name, old.rev, {"params": old.params}),
                     Snapshot(new.name, new.rev, {"params": new.params}), all_rows)
    metrics = compare(Snapshot(old.name, old.rev, dict(old.metrics)),
                      Snapshot(new.name, new.rev, dict(new.metrics)), all_rows)
    return old, new, params, metrics
