"""Parameter files (TOML, YAML, JSON): the one reader of their bytes, merging, dotted-key lookups
and writing values into them."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from mlmake.errors import MlfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_FILES = ("params.toml", "params.yaml", "params.yml", "params.json")
FORMATS = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def parse_toml(text: str, file: str) -> dict[str, Any]:
    """Parse TOML text, turning a syntax error into an MlfileError with line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.search(msg)
        line = col = None
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            msg = msg[: m.start()].strip()
        raise MlfileError(f"invalid TOML: {msg}. Fix the syntax at this position.",
                          file, line, col) from None


def read(data: bytes, name: str, where: str | None = None) -> dict[str, Any]:
    """The table a params file's bytes hold, parsed as TOML, YAML or JSON by `name`'s
    extension (an empty YAML file is an empty table).

    Bad syntax is an MlfileError with the file (`where`, default `name`), line and column;
    so is a file that is not UTF-8, an unknown extension or a top level that is not a table.
    """
    where = where or name
    if os.path.splitext(name)[1].lower() not in FORMATS:
        raise MlfileError(f"params file '{name}' must end in .toml, .yaml, .yml or .json",
                          where)
    value = decode(data, name, where)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MlfileError("the top level of a params file must be a table/mapping", where)
    return value


def decode(data: bytes, name: str, where: str | None = None) -> Any:
    """The value a TOML, YAML or JSON file's bytes hold, by `name`'s extension; any other
    extension is read as JSON, else YAML. Errors as for `read`."""
    where = where or name
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MlfileError(f"not UTF-8 text (byte {exc.start}); params and metrics files "
                          "must be TOML, YAML or JSON.", where) from None
    kind = FORMATS.get(os.path.splitext(name)[1].lower())
    if kind == "TOML":
        return parse_toml(text, where)
    if kind == "YAML":
        return _yaml(text, where)
    if kind == "JSON":
        return _json(text, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return _yaml(text, where)


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MlfileError(f"invalid JSON: {exc.msg}", where, exc.lineno, exc.colno) from None


def _yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MlfileError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", where,
                          mark.line + 1 if mark else None,
                          mark.column + 1 if mark else None) from None


def load_file(path: str, display: str, mlfile: str = "Mlfile",
              line: int | None = None) -> dict[str, Any]:
    """Load one params file by its extension (see `read`); the top level must be a table.

    Errors about the file as a whole (missing, an unknown extension) point at `mlfile` (the
    Mlfile in use, by its display name) and `line` (that of `[project] params`, when known);
    syntax errors at the file itself.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise MlfileError(f"params file '{display}' does not exist. Create it or remove it "
                          "from [project] params.", mlfile, line) from None
    if os.path.splitext(path)[1].lower() not in FORMATS:
        raise MlfileError(f"params file '{display}' must end in .toml, .yaml, .yml or .json",
                          mlfile, line)
    return read(raw, display)


def load(root: str, files: tuple[str, ...], mlfile: str = "Mlfile",
         line: int | None = None) -> dict[str, Any]:
    """Load and deep-merge the params files (later files win), relative to the project root.

    `mlfile` and `line` locate the list of files, for errors about a file as a whole.
    """
    merged: dict[str, Any] = {}
    for rel in files:
        merge(merged, load_file(os.path.join(root, rel), rel, mlfile, line))
    return merged


def default_files(root: str) -> tuple[str, ...]:
    """The params files used when [project] names none: those of DEFAULT_FILES that exist."""
    return tuple(f for f in DEFAULT_FILES if os.path.isfile(os.path.join(root, f)))


def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    """Deep-merge the table `new` into `into`: tables merge key by key, anything else in
    `new` replaces what `into` has (later params files win)."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested tables into dotted keys; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_MISSING = object()


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key (a table for a prefix), or KeyError."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def select(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Flattened values of the given keys; a table key covers all its children."""
    out: dict[str, Any] = {}
    for key in keys:
        value = lookup(data, key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def all_keys(data: dict[str, Any]) -> list[str]:
    """Every dotted key, tables included, for 'did you mean' suggestions."""
    keys: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            keys.append(prefix + k)
            if isinstance(v, dict):
                walk(v, prefix + k + ".")

    walk(data, "")
    return keys


def write_overrides(root: str, files: tuple[str, ...], overrides: dict[str, Any],
                    mlfile: str = "Mlfile") -> list[str]:
    """Write each dotted key of `overrides` into the params file that defines it (the last
    of `files` to, as later files win), in that file's own format with every other key and,
    for TOML, its comments and layout kept. Each file is replaced by rename, so a symlink
    in its place is replaced rather than written through. Returns the files changed.

    This is how a run with overrides makes them visible to a command that reads the params
    file itself, not only to `${}` substitution: the target key then covers what it saw.
    """
    by_file: dict[str, dict[str, Any]] = {}
    loaded = {rel: load_file(os.path.join(root, rel), rel, mlfile) for rel in files}
    for dotted, value in overrides.items():
        owner = None
        for rel in files:
            try:
                lookup(loaded[rel], dotted)
            except KeyError:
                continue
            owner = rel
        if owner is None:
            raise MlfileError(f"cannot override param '{dotted}': no params file defines it.",
                              mlfile)
        by_file.setdefault(owner, {})[dotted] = value
    for rel, values in by_file.items():
        path = os.path.join(root, rel)
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
        new = _rewrite(text, os.path.splitext(rel)[1].lower(), values)
        from mlmake.atomic import atomic_write

        atomic_write(path, new.encode("utf-8"))
    return sorted(by_file)


def _rewrite(text: str, ext: str, values: dict[str, Any]) -> str:
    if ext == ".toml":
        import tomlkit

        doc = tomlkit.parse(text)
        for dotted, value in values.items():
            *parents, last = dotted.split(".")
            node: Any = doc
            for part in parents:
                node = node[part]
            node[last] = value
        return tomlkit.dumps(doc)
    data = json.loads(text) if ext == ".json" else _yaml_load(text)
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    if ext == ".json":
        indent = re.search(r"\n([ \t]+)\S", text)
        return json.dumps(data, indent=indent.group(1) if indent else None) + "\n"
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def _yaml_load(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) or {}
