"""The house's layers, read from the source: no import cycles between mlmake's modules, only the
top layers import `Project`, and the server calls `Project` rather than the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import mlmake

PACKAGE = Path(mlmake.__file__).parent
# what mlmake/serve/* may import besides its own modules (the package root gives __version__;
# experiments is a layer over Project as serve is, and exp_table the table it and `exp show` read)
SERVE_MAY_IMPORT = ("mlmake", "mlmake.project", "mlmake.model", "mlmake.errors",
                    "mlmake.events", "mlmake.experiments", "mlmake.exp_table")


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every mlmake module `name` imports, wherever the import statement is: at the top, in
    a function, or under `if TYPE_CHECKING:`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(_longest_known(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if sub in known else _longest_known(mod, known))
    found.discard("")
    found.discard(name)
    return found


def _longest_known(dotted: str, known: dict[str, Path]) -> str:
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return ""


def _graph() -> dict[str, set[str]]:
    """Module → the mlmake modules it imports. A package's `__init__` that imports its own
    parts (envs dispatching to envs.docker, the root's lazy `Project`) is the package
    loading itself, not an edge between layers: Python runs the `__init__` before any part."""
    known = _modules()
    graph = {}
    for name, path in known.items():
        deps = _imports(name, path, known)
        if path.name == "__init__.py":
            deps = {d for d in deps if not d.startswith(name + ".")}
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """The strongly connected components of more than one module (Tarjan), each as one
    cycle through it (first module repeated last) and the list of its modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [" → ".join(_a_cycle(graph, set(comp))) + f"  (the circle: {', '.join(comp)})"
            for comp in components]


def _a_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """One cycle inside a strongly connected component, for the failure message."""
    start = min(comp)
    path = [start]
    seen = {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in comp)
        back = [w for w in nxt if w in seen]
        if back:
            return path[path.index(back[0]):] + [back[0]]
        path.append(nxt[0])
        seen.add(nxt[0])


def _top_layer(name: str) -> bool:
    # experiments orchestrates builds of other commits through Project, as serve/ does
    return name in ("mlmake", "mlmake.project", "mlmake.experiments") \
        or name.startswith(("mlmake.cli.", "mlmake.serve."))


def test_the_walker_sees_imports_in_functions_and_under_type_checking():
    known = _modules()
    seen = _imports("mlmake.cli.app", known["mlmake.cli.app"], known)
    assert "mlmake.project" in seen  # imported inside a function there


def test_no_import_cycles_between_mlmake_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_the_top_layers_import_project():
    graph = _graph()
    bad = sorted(name for name, deps in graph.items()
                 if "mlmake.project" in deps and not _top_layer(name))
    assert not bad, (f"{', '.join(bad)} import mlmake.project: pass the pieces (root, "
                     "pipeline, store, callables) instead of a Project")


def test_serve_calls_project_not_the_engine():
    graph = _graph()
    bad = sorted(f"{name} imports {dep}" for name, deps in graph.items()
                 if name == "mlmake.serve" or name.startswith("mlmake.serve.")
                 for dep in deps
                 if dep not in SERVE_MAY_IMPORT and dep != "mlmake.serve"
                 and not dep.startswith("mlmake.serve."))
    assert not bad, ("mlmake/serve/ goes around Project:\n" + "\n".join(bad))
