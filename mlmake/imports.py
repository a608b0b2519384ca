"""Implicit deps: the project-local modules a target's Python command imports, read statically.

For a `cmd` that runs Python on a file of the project (`python src/train.py`, `python -m
pkg.mod`, `python3`, a venv's python, `uv run`), the transitive closure of the project-local
modules it imports joins the target's key. Imports are read with `ast` (`import`, `from …
import`, relative imports, packages' `__init__.py`, constant `importlib.import_module`);
third-party and standard-library modules are never followed. A closure is cached by the
content hashes of the files it read, so an unchanged tree costs one `stat` per file.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mlmake.model import Target

CACHE_FORMAT = 1
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "{", "}", "then", "do", "else", "exec",
               "time", "nice", "env"}
_VALUE_OPTS = {"-W", "-X", "-Q"}  # python options that take the next word
_PARSE = threading.Lock()


@dataclass(frozen=True)
class Entry:
    """A Python program a command runs: a script file or a module, and its sys.path."""

    script: str | None  # project-relative path of the file run (`-m`: resolved from module)
    module: str | None
    path: tuple[str, ...]  # project-relative directories searched, in order


@dataclass(frozen=True)
class Closure:
    """What a program imports inside the project: file → the file that imported it first,
    and the imports that could not be read statically (file, line, what)."""

    files: dict[str, str]
    dynamic: tuple[tuple[str, int, str], ...] = ()
    errors: tuple[tuple[str, str], ...] = ()  # (file, message): files that do not parse


def programs(t: Target, root: str, env_pythonpath: str | None = None) -> list[Entry]:
    """The Python programs that `t.cmd` runs on files of the project (none for other
    commands). `env_pythonpath`: the PYTHONPATH the command inherits."""
    if "python" not in t.cmd and "uv" not in t.cmd and ".py" not in t.cmd:
        return []  # no shell parsing for the many commands that cannot run Python
    wdir = os.path.normpath(t.wdir).replace(os.sep, "/")
    found: list[Entry] = []
    for words in _commands(t.cmd):
        extra = [w.split("=", 1)[1] for w in words if _ASSIGN.match(w)
                 and w.startswith("PYTHONPATH=")]
        words = [w for w in words if not _ASSIGN.match(w)]
        args = _python_args(words)
        if args is None:
            continue
        pythonpath = [p for pp in extra + ([env_pythonpath] if env_pythonpath else [])
                      for p in pp.split(os.pathsep) if p]
        search = [_inside(root, wdir, p) for p in pythonpath]
        entry = _entry(args, root, wdir, [s for s in search if s is not None])
        if entry is not None:
            found.append(entry)
    return found


def _commands(cmd: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, as words (a best effort: quotes honoured,
    separators split, substitutions left as they are)."""
    for line in cmd.splitlines():
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
            lex.whitespace_split = True
            lex.commenters = "#"
            words = list(lex)
        except ValueError:
            continue
        current: list[str] = []
        for w in words:
            if w in _SEPARATORS or set(w) <= set(";&|()"):
                if current:
                    yield current
                current = []
            else:
                current.append(w)
        if current:
            yield current


def _python_args(words: list[str]) -> list[str] | None:
    """The arguments after the interpreter when `words` runs Python, else None."""
    if not words:
        return None
    head = os.path.basename(words[0])
    if head == "uv" and len(words) > 2 and words[1] == "run":
        rest = words[2:]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in ("--with", "--python", "-p", "--project") else rest[1:]
        if rest and _PYTHON.match(os.path.basename(rest[0])):
            return rest[1:]
        return rest if rest and rest[0].endswith(".py") else None
    if _PYTHON.match(head):
        return words[1:]
    return None


def _entry(args: list[str], root: str, wdir: str, pythonpath: list[str]) -> Entry | None:
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-m" and i + 1 < len(args):
            module = args[i + 1]
            path = tuple([wdir] + pythonpath)
            return Entry(None, module, path)
        if a.startswith("-m") and len(a) > 2:
            return Entry(None, a[2:], tuple([wdir] + pythonpath))
        if a == "-c" or a.startswith("-c"):
            return None
        if a in _VALUE_OPTS:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        script = _inside(root, wdir, a)
        if script is None or not a.endswith(".py") and not os.path.isfile(
                os.path.join(root, script)):
            return None
        return Entry(script, None, tuple([os.path.dirname(script) or "."] + pythonpath))
    return None


def _inside(root: str, wdir: str, path: str) -> str | None:
    """`path` (relative to `wdir`, or absolute) as a project path; None when outside."""
    if "$" in path:
        return None
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(root, wdir, path))
    rel = os.path.relpath(full, root).replace(os.sep, "/")
    if rel == ".." or rel.startswith("../"):
        return None
    return rel


class Tracker:
    """Finds and caches the import closures of programs (one per Checker).

    The cache (`path`, JSON) maps a program to the files its closure read with their
    hashes; it is trusted while every one of them hashes the same, which the stat cache
    answers with one `stat` each.
    """

    def __init__(self, root: str, file_hash: Callable[[str], str | None],
                 path: str | None) -> None:
        self.root = root
        self._file_hash = file_hash
        self._hashes: dict[str, str | None] = {}
        self.path = path
        self._memo: dict[Entry, Closure] = {}
        self._cache: dict[str, Any] | None = None
        self._dirty = False

    def file_hash(self, rel: str) -> str | None:
        """A file's hash, asked of the hasher once per file per check (programs share
        helper modules)."""
        if rel not in self._hashes:
            self._hashes[rel] = self._file_hash(rel)
        return self._hashes[rel]

    def closure(self, entry: Entry) -> Closure:
        if entry not in self._memo:
            self._memo[entry] = self._cached(entry)
        return self._memo[entry]

    def implicit(self, t: Target, root: str) -> dict[str, str]:
        """Project files `t`'s command imports (file → importer), its scripts excluded."""
        out: dict[str, str] = {}
        for entry in programs(t, root, os.environ.get("PYTHONPATH")):
            for f, by in self.closure(entry).files.items():
                if f != entry.script:
                    out.setdefault(f, by)
        return out

    def notes(self, t: Target, root: str) -> list[str]:
        """What could not be followed statically in `t`'s imports, one line each."""
        lines = []
        for entry in programs(t, root, os.environ.get("PYTHONPATH")):
            c = self.closure(entry)
            lines += [f"{f}:{line}: {what} cannot be resolved statically; list what it "
                      "imports in deps" for f, line, what in c.dynamic]
            lines += [f"{f}: {msg}; its imports are not followed" for f, msg in c.errors]
        return lines

    # -- the cache -------------------------------------------------------------------------
    def _key(self, entry: Entry) -> str:
        return json.dumps([entry.script, entry.module, list(entry.path)])

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = {}
            if self.path:
                try:
                    with open(self.path, "rb") as fh:
                        data = json.loads(fh.read())
                    if isinstance(data, dict) and data.get("format") == CACHE_FORMAT and \
                            isinstance(data.get("closures"), dict):
                        self._cache = data["closures"]
                except (OSError, ValueError):
                    pass
        return self._cache

    def _cached(self, entry: Entry) -> Closure:
        cache = self._load()
        hit = cache.get(self._key(entry))
        if isinstance(hit, dict) and isinstance(hit.get("read"), dict):
            try:
                if all(self.file_hash(f) == h for f, h in hit["read"].items()):
                    return Closure(dict(hit["files"]),
                                   tuple((f, int(n), w) for f, n, w in hit["dynamic"]),
                                   tuple((f, m) for f, m in hit["errors"]))
            except (TypeError, ValueError, KeyError):
                pass
        closure, read = _walk(self.root, entry, self.file_hash)
        cache[self._key(entry)] = {"read": read, "files": closure.files,
                                   "dynamic": [list(d) for d in closure.dynamic],
                                   "errors": [list(e) for e in closure.errors]}
        self._dirty = True
        self.save()
        return closure

    def save(self) -> None:
        if not self._dirty or not self.path or self._cache is None:
            return
        from mlmake.atomic import atomic_write

        try:
            atomic_write(self.path, json.dumps({"format": CACHE_FORMAT,
                                                "closures": self._cache}).encode())
            self._dirty = False
        except OSError:
            pass  # a cache: the next check walks again


def _walk(root: str, entry: Entry, file_hash: Callable[[str], str | None]
          ) -> tuple[Closure, dict[str, str | None]]:
    """The closure of `entry` and the hash of every file it read."""
    files: dict[str, str] = {}
    read: dict[str, str | None] = {}
    dynamic: list[tuple[str, int, str]] = []
    errors: list[tuple[str, str]] = []
    todo: list[tuple[str, str]] = []  # (file, importer)

    def add(f: str, by: str) -> None:
        if f not in files:
            files[f] = by
            todo.append((f, by))

    if entry.script is not None:
        start = entry.script
        if not os.path.isfile(os.path.join(root, start)):
            return Closure({}), {}
        add(start, start)
    else:
        assert entry.module is not None
        found = _resolve(root, entry.path, entry.module)
        if not found:
            return Closure({}), {}
        for f in found:
            add(f, f"-m {entry.module}")
        # `-m pkg.mod` imports the packages above it too (their __init__ files are in found)
    while todo:
        f, _ = todo.pop()
        read[f] = file_hash(f)
        try:
            with open(os.path.join(root, f), "rb") as fh:
                source = fh.read()
            with _PARSE:  # CPython's ast.parse is not safe in concurrent threads (serve)
                tree = ast.parse(source, filename=f)
        except (SyntaxError, ValueError) as exc:
            errors.append((f, f"cannot be parsed ({type(exc).__name__}: "
                              f"{getattr(exc, 'msg', exc)}, line {getattr(exc, 'lineno', '?')})"))
            continue
        except OSError:
            continue
        for base, name, line, what in _imports(tree, f):
            if name is None:
                dynamic.append((f, line, what))
                continue
            for g in _resolve(root, entry.path if base is None else (base,), name):
                add(g, f)
    return Closure(files, tuple(sorted(dynamic)), tuple(errors)), read


def _imports(tree: ast.AST, file: str) -> Iterator[tuple[str | None, str | None, int, str]]:
    """(base directory, module name, line, source form) of each import in `tree`: the base
    is None for an absolute import (searched on the program's path) and the directory a
    relative one starts from; the name is None for one that cannot be read statically."""
    here = os.path.dirname(file)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield None, alias.name, node.lineno, "import"
        elif isinstance(node, ast.ImportFrom):
            base: str | None = None
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = os.path.dirname(base) if base not in ("", ".") else None
                    if base is None:
                        break
                if base is None:
                    continue
                base = base or "."
            mod = node.module or ""
            if mod:
                yield base, mod, node.lineno, "from"
            for alias in node.names:
                if alias.name != "*":
                    yield base, f"{mod}.{alias.name}" if mod else alias.name, node.lineno, \
                        "from"
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else \
                fn.id if isinstance(fn, ast.Name) else None
            if name in ("import_module", "__import__"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and \
                        not arg.value.startswith("."):
                    yield None, arg.value, node.lineno, name
                else:
                    yield None, None, node.lineno, f"{name}(…)"


def _resolve(root: str, search: tuple[str, ...], name: str) -> list[str]:
    """Project files that importing `name` executes (packages' `__init__.py` included), from
    the first search directory that has its top-level part; [] when it is not local.
    A relative import made absolute also resolves against the directory of its package."""
    parts = name.split(".")
    for base in search:
        found: list[str] = []
        d = base
        for i, part in enumerate(parts):
            pkg = _join(d, part)
            init = _join(pkg, "__init__.py")
            mod = _join(d, part + ".py")
            if os.path.isfile(os.path.join(root, init)):
                found.append(init)
                d = pkg
                continue
            if os.path.isfile(os.path.join(root, mod)):
                found.append(mod)
            elif i == 0 and os.path.isdir(os.path.join(root, pkg)):
                d = pkg  # a namespace package
                continue
            break
        if found or os.path.isdir(os.path.join(root, _join(base, parts[0]))):
            return found
    return []


def _join(a: str, b: str) -> str:
    return b if a in ("", ".") else f"{a}/{b}"
