"""The DAG as data for drawings: JSON, Graphviz dot and Mermaid, stale targets marked."""

from __future__ import annotations

import json
from typing import Any

from mlmake.graph import Graph
from mlmake.plan import Plan


def graph_data(graph: Graph, names: set[str], plan: Plan | None = None) -> dict[str, Any]:
    """Nodes (with state and reasons) and edges (with kind data|after) of the selection."""
    order = graph.order(names)
    nodes = []
    for n in order:
        t = graph.targets[n]
        st = plan.states.get(n) if plan else None
        nodes.append({
            "name": n, "base": t.base, "desc": t.desc, "cmd": t.cmd,
            "deps": list(t.deps), "outs": list(t.outs), "metrics": list(t.metrics),
            "plots": list(t.plots), "matrix": dict(t.matrix),
            "state": None if st is None else ("stale" if st.stale else "uptodate"),
            "reasons": [r.as_dict() for r in st.reasons] if st else [],
            "implicit_deps": [{"path": f, "imported_by": by}
                              for f, by in sorted(st.implicit.items())] if st else [],
        })
    edges = []
    for n in order:
        for u in sorted(graph.up[n]):
            if u in names:
                edges.append({"from": u, "to": n,
                              "kind": "data" if u in graph.data_up[n] else "after"})
    return {"nodes": nodes, "edges": edges}


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(data: dict[str, Any]) -> str:
    lines = ["digraph mlmake {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for node in data["nodes"]:
        attrs = ["style=\"rounded,filled\"", "fillcolor=\"#fde2e1\""] \
            if node["state"] == "stale" else []
        label = node["name"] + (" *" if node["state"] == "stale" else "")
        lines.append(f"  {_q(node['name'])} [label={_q(label)}{''.join(', ' + a for a in attrs)}];")
    for e in data["edges"]:
        style = " [style=dashed]" if e["kind"] == "after" else ""
        lines.append(f"  {_q(e['from'])} -> {_q(e['to'])}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(data: dict[str, Any]) -> str:
    ids = {n["name"]: f"n{i}" for i, n in enumerate(data["nodes"])}
    lines = ["flowchart LR"]
    for node in data["nodes"]:
        label = node["name"].replace('"', "'") + (" *" if node["state"] == "stale" else "")
        lines.append(f'  {ids[node["name"]]}["{label}"]')
    for e in data["edges"]:
        arrow = "-.->" if e["kind"] == "after" else "-->"
        lines.append(f"  {ids[e['from']]} {arrow} {ids[e['to']]}")
    stale = [ids[n["name"]] for n in data["nodes"] if n["state"] == "stale"]
    if stale:
        lines.append("  classDef stale fill:#fde2e1,stroke:#c0392b")
        lines.append(f"  class {','.join(stale)} stale")
    return "\n".join(lines) + "\n"
