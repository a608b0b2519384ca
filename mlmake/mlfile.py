"""Mlfile (TOML) → a validated Pipeline of typed Targets; the only module that reads raw dicts."""

from __future__ import annotations

import itertools
import json
import os
import posixpath
import re
import shlex
from typing import Any
from collections.abc import Callable

from mlmake import params as params_mod
from mlmake.errors import MlfileError, did_you_mean
from mlmake.model import Pipeline, RemoteOverride, Resources, Target, UserConfig
from mlmake.tables import NAME_PATTERN, TableParsing

TOP_KEYS = ("project", "target", "remote", "env", "hooks", "endpoint", "schedule")
CONFIG_KEYS = ("project", "remote")  # the per-user .mlmake/config.toml
CONFIG_PROJECT_KEYS = ("remote", "push")
CONFIG_REMOTE_KEYS = ("url", "options")
PROJECT_KEYS = ("default", "params", "jobs", "executor", "remote", "link", "push", "ray_data",
                "materialize", "track_imports")
TARGET_KEYS = ("desc", "cmd", "deps", "params", "outs", "metrics", "plots", "env", "resources",
               "matrix", "after", "wdir", "cache", "always", "persist", "track_imports")
EXECUTORS = ("local", "ray")
LINK_TYPES = ("reflink", "hardlink", "symlink", "copy")
_NAME = NAME_PATTERN
_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "ki": 2**10,
          "m": 10**6, "mb": 10**6, "mib": 2**20, "mi": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30,
          "t": 10**12, "tb": 10**12, "tib": 2**40, "ti": 2**40}


class _Locator:
    """Finds the line of a table header or a key in the raw text, for error messages."""

    _HEADER = re.compile(r"^\s*\[([^\[\]]+)\]")
    _PART = re.compile(r"\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-@]+)\s*(\.|$)")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self._tables: dict[tuple[str, ...], int] | None = None

    def table(self, *path: str) -> int | None:
        """The line of the header `[a.b]` for path ("a", "b"): one scan, then lookups."""
        if self._tables is None:
            self._tables = {}
            for i, line in enumerate(self.lines):
                m = self._HEADER.match(line)
                if m:
                    self._tables.setdefault(self._split(m.group(1)), i + 1)
        return self._tables.get(tuple(path))

    @classmethod
    def _split(cls, header: str) -> tuple[str, ...]:
        parts: list[str] = []
        pos = 0
        header = header.strip()
        while pos < len(header):
            m = cls._PART.match(header, pos)
            if not m:
                return (header,)
            parts.append(m.group(1).strip("\"'"))
            pos = m.end()
        return tuple(parts)

    def key(self, key: str, *path: str) -> int | None:
        if not path:
            return self.top(key)
        start = self.table(*path)
        if start is None:
            return None
        rx = re.compile(rf'^\s*(?:"{re.escape(key)}"|{re.escape(key)})\s*=')
        for i in range(start, len(self.lines)):
            if re.match(r"^\s*\[", self.lines[i]):
                break
            if rx.match(self.lines[i]):
                return i + 1
        return start or None

    def top(self, key: str) -> int | None:
        """The line of a top-level key: `key = …` / `key.sub = …` before the first table
        header, or the first header that opens it (`[key]`, `[key.sub]`, `[[key…]]`)."""
        name = rf'(?:"{re.escape(key)}"|\'{re.escape(key)}\'|{re.escape(key)})'
        assign = re.compile(rf"^\s*{name}\s*[.=]")
        header = re.compile(rf"^\s*\[\[?\s*{name}\s*[.\]]")
        at_top = True
        for i, line in enumerate(self.lines):
            if re.match(r"^\s*\[", line):
                at_top = False
                if header.match(line):
                    return i + 1
            elif at_top and assign.match(line):
                return i + 1
        return None


def load(path: str) -> Pipeline:
    """Read and validate the Mlfile at `path` and the params files it names."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except FileNotFoundError:
        raise MlfileError("no Mlfile here. Run `mlmake init` to create one, or pass -C DIR / "
                          "-f FILE.", os.path.basename(path)) from None
    return parse(text, path)


def parse(text: str, path: str) -> Pipeline:
    """Validate Mlfile `text` (read from `path`) into a Pipeline."""
    return _Parser(text, path).pipeline()


def params_files(text: str, path: str) -> tuple[str, ...] | None:
    """The params files that Mlfile `text` names in [project] params, checked as `parse`
    checks them; None when it names none (the default files apply). Reads no other file,
    so it serves an Mlfile as committed at any revision."""
    return _Parser(text, path).named_params()[0]


def parse_config(text: str, file: str) -> UserConfig:
    """Validate the per-user config `text` (`file` names it in messages) into a UserConfig."""
    return _ConfigParser(text, file).config()


class _Toml:
    """A TOML file being validated: its raw tables, and errors that name the file and line."""

    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.loc = _Locator(text)
        self.raw = params_mod.parse_toml(text, file)

    # -- errors --------------------------------------------------------------------------
    def fail(self, msg: str, *table: str, key: str | None = None) -> MlfileError:
        line = self.loc.key(key, *table) if key else (self.loc.table(*table) if table else None)
        return MlfileError(msg, self.file, line)

    def check_keys(self, data: dict[str, Any], allowed: tuple[str, ...], what: str,
                   *table: str) -> None:
        for k in data:
            if k not in allowed:
                hint = did_you_mean(k, allowed) or f" Allowed keys: {', '.join(allowed)}."
                raise self.fail(f"unknown key '{k}' in {what}.{hint}", *table, key=k)

    def typed(self, value: Any, kind: type | tuple[type, ...], what: str, *table: str,
              key: str) -> Any:
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            names = {str: "a string", bool: "true or false", int: "an integer",
                     list: "a list", dict: "a table"}
            want = names.get(kind, "a number") if isinstance(kind, type) else "a number"
            raise self.fail(f"{what} must be {want}, not {type(value).__name__}", *table, key=key)
        return value

    def str_list(self, value: Any, what: str, *table: str, key: str,
                 single: bool = False) -> list[str]:
        """A list of strings; a lone string only where `single` allows it (never coerced,
        so `outs = "x"` is told to be a list rather than guessed)."""
        if isinstance(value, str) and single:
            return [value]
        if isinstance(value, str):
            raise self.fail(f"{what} must be a list of strings, not a string. Write "
                            f"{key} = [{json.dumps(value)}].", *table, key=key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            want = "a string or a list of strings" if single else "a list of strings"
            raise self.fail(f"{what} must be {want}, not {_toml_type(value)}", *table,
                            key=key)
        return list(value)


class _ConfigParser(_Toml):
    """The per-user `.mlmake/config.toml`: [project] remote and push, [remote.NAME] url and
    options."""

    def config(self) -> UserConfig:
        raw = self.raw
        self.check_keys(raw, CONFIG_KEYS, "the top level")
        proj = self.typed(raw.get("project", {}), dict, "[project]", key="project")
        self.check_keys(proj, CONFIG_PROJECT_KEYS, "[project]", "project")
        remote = proj.get("remote")
        if remote is not None:
            self.typed(remote, str, "[project] remote", "project", key="remote")
        push = proj.get("push")
        if push is not None:
            self.typed(push, bool, "[project] push", "project", key="push")
        remotes: dict[str, RemoteOverride] = {}
        for name, spec in self.typed(raw.get("remote", {}), dict, "[remote]",
                                     key="remote").items():
            tbl = ("remote", name)
            self.typed(spec, dict, f"[remote.{name}]", "remote", key=name)
            self.check_keys(spec, CONFIG_REMOTE_KEYS, f"[remote.{name}]", *tbl)
            url = spec.get("url")
            if url is not None and not (isinstance(url, str) and url):
                raise self.fail(f"[remote.{name}] url must be a non-empty string.", *tbl,
                                key="url")
            options = self.typed(spec.get("options", {}), dict, f"[remote.{name}] options",
                                 *tbl, key="options")
            remotes[name] = RemoteOverride(name, url, tuple(sorted(options.items())))
        return UserConfig(remote, push, remotes)


class _Parser(_Toml, TableParsing):
    def __init__(self, text: str, path: str) -> None:
        super().__init__(text, os.path.basename(path))
        self.path = path
        self.root = os.path.dirname(os.path.abspath(path))

    # -- the whole file -------------------------------------------------------------------
    def pipeline(self) -> Pipeline:
        raw = self.raw
        self.check_keys(raw, TOP_KEYS, self.file)
        proj = raw.get("project", {})
        self.typed(proj, dict, "[project]", key="project")
        self.check_keys(proj, PROJECT_KEYS, "[project]", "project")
        named, params_line = self.named_params()
        files = params_mod.default_files(self.root) if named is None else named
        self.params = params_mod.load(self.root, files, self.file, params_line)
        self.param_keys = params_mod.all_keys(self.params)

        self.track_imports = self.typed(proj.get("track_imports", True), bool,
                                        "[project] track_imports", "project",
                                        key="track_imports")
        envs = self.envs(raw.get("env", {}))
        self.env_names = set(envs)
        targets_raw = raw.get("target", {})
        self.typed(targets_raw, dict, "[target]", key="target")
        if not targets_raw:
            raise MlfileError("no targets. Add a [target.NAME] table with a `cmd`.", self.file)
        targets: dict[str, Target] = {}
        variants: dict[str, tuple[str, ...]] = {}
        for name, spec in targets_raw.items():
            expanded = self.target(name, spec)
            variants[name] = tuple(t.name for t in expanded)
            for t in expanded:
                targets[t.name] = t
        self.resolve_after(targets, variants)
        self.check_outs(targets)

        default: tuple[str, ...] = ()
        if "default" in proj:
            default = tuple(self.str_list(proj["default"], "[project] default", "project",
                                          key="default"))
            for d in default:
                if d not in targets and d not in variants:
                    raise self.fail(f"[project] default names unknown target '{d}'."
                                    + _suggest(d, list(variants) + list(targets)),
                                    "project", key="default")
        jobs = proj.get("jobs")
        if jobs is not None and (self.typed(jobs, int, "[project] jobs", "project",
                                            key="jobs") < 1):
            raise self.fail("[project] jobs must be at least 1", "project", key="jobs")
        executor = proj.get("executor", "local")
        if executor not in EXECUTORS:
            raise self.fail(f"[project] executor must be one of {', '.join(EXECUTORS)}, "
                            f"not '{executor}'", "project", key="executor")
        link = tuple(self.str_list(proj.get("link", ["reflink", "hardlink", "copy"]),
                                   "[project] link", "project", key="link"))
        for lt in link:
            if lt not in LINK_TYPES:
                raise self.fail(f"[project] link: unknown link type '{lt}'; use "
                                f"{', '.join(LINK_TYPES)}", "project", key="link")
        materialize = proj.get("materialize", "all")
        if materialize not in ("all", "requested"):
            raise self.fail("[project] materialize must be \"all\" (every out of the built "
                            "targets in the work tree) or \"requested\" (only what the "
                            "requested targets and the commands that run need)",
                            "project", key="materialize")
        ray_data = proj.get("ray_data", "auto")
        if ray_data not in ("auto", "shared", "remote"):
            raise self.fail("[project] ray_data must be \"auto\", \"shared\" or \"remote\"",
                            "project", key="ray_data")
        remotes = self.remotes(raw.get("remote", {}))
        remote = proj.get("remote")
        if remote is not None and remote not in remotes:
            raise self.fail(f"[project] remote = '{remote}' but no [remote.{remote}] table "
                            "defines it", "project", key="remote")
        hooks = self.hooks(raw.get("hooks", {}), targets, variants)
        endpoints = self.endpoints(raw.get("endpoint", {}), targets, variants)
        schedules = self.schedules(raw.get("schedule", {}), endpoints)
        return Pipeline(
            path=os.path.abspath(self.path), root=self.root, targets=targets, default=default,
            params=self.params, params_files=files, jobs=jobs, executor=executor,
            remote=remote, remotes=remotes, envs=envs, link=link,
            push=bool(self.typed(proj.get("push", False), bool, "[project] push", "project",
                                 key="push")),
            ray_data=ray_data, lean=materialize == "requested", hooks=hooks,
            endpoints=endpoints, schedules=schedules,
            variants=variants)

    def named_params(self) -> tuple[tuple[str, ...] | None, int | None]:
        """[project] params (None: not given) and the line that gives it."""
        proj = self.raw.get("project", {})
        self.typed(proj, dict, "[project]", key="project")
        if "params" not in proj:
            return None, None
        files = tuple(self.path_value(p, "[project] params", "project", key="params")
                      for p in self.str_list(proj["params"], "[project] params", "project",
                                             key="params"))
        return files, self.loc.key("params", "project")

    # -- paths ----------------------------------------------------------------------------
    def path_value(self, p: str, what: str, *table: str, key: str) -> str:
        if not p.strip():
            raise self.fail(f"{what}: empty path", *table, key=key)
        if p.startswith("/") or p.startswith("~") or re.match(r"^[A-Za-z]:[\\/]", p):
            raise self.fail(f"{what}: '{p}' is an absolute path; every path must stay inside "
                            "the project. Use a path relative to the Mlfile.", *table, key=key)
        norm = posixpath.normpath(p)
        if norm == ".." or norm.startswith("../"):
            raise self.fail(f"{what}: '{p}' leaves the project through '..'; every path must "
                            "stay inside the project.", *table, key=key)
        return norm

    # -- targets --------------------------------------------------------------------------
    def target(self, name: str, spec: Any) -> list[Target]:
        tbl = ("target", name)
        if not _NAME.match(name) or "@" in name:
            raise self.fail(f"target name '{name}' may use letters, digits, '_', '-' and '.' "
                            "only", *tbl)
        self.typed(spec, dict, f"[target.{name}]", "target", key=name)
        self.check_keys(spec, TARGET_KEYS, f"[target.{name}]", *tbl)
        if "cmd" not in spec:
            raise self.fail(f"target '{name}' has no `cmd`. Add the command that builds it.",
                            *tbl)
        cmd = spec["cmd"]
        if isinstance(cmd, list):
            self.argv(name, cmd)
        else:
            self.typed(cmd, str, f"target '{name}': cmd", *tbl, key="cmd")
        if not cmd or isinstance(cmd, str) and not cmd.strip():
            raise self.fail(f"target '{name}' has an empty `cmd`. Give the command that "
                            "builds it.", *tbl, key="cmd")
        matrix = spec.get("matrix", {})
        self.typed(matrix, dict, f"target '{name}': matrix", *tbl, key="matrix")
        axes: list[tuple[str, list[Any]]] = []
        for var, values in matrix.items():
            if not isinstance(values, list):
                values = [values]
            if not values:
                raise self.fail(f"target '{name}': matrix variable '{var}' has no values. "
                                "Give at least one.", *tbl, key="matrix")
            for v in values:
                if isinstance(v, (dict, list)):
                    raise self.fail(f"target '{name}': matrix values of '{var}' must be "
                                    "strings, numbers or booleans", *tbl, key="matrix")
            axes.append((var, values))
        combos = list(itertools.product(*(vals for _, vals in axes))) if axes else [()]
        out: list[Target] = []
        seen: set[str] = set()
        for combo in combos:
            mvars = {var: val for (var, _), val in zip(axes, combo)}
            vname = name + ("@" + "-".join(scalar(v) for v in combo) if combo else "")
            if vname in seen:
                raise self.fail(f"target '{name}': matrix gives the variant name '{vname}' "
                                "twice; make the values distinct", *tbl, key="matrix")
            seen.add(vname)
            out.append(self.variant(name, vname, spec, cmd, mvars))
        return out

    def argv(self, name: str, cmd: list[Any]) -> None:
        """Check a list-form `cmd`: the exec form, one argument per item, no shell."""
        tbl = ("target", name)
        if not all(isinstance(c, str) for c in cmd):
            raise self.fail(f"target '{name}': cmd is a list, so each item is one argument "
                            "and must be a string. Quote the numbers, or write the command "
                            "as one string.", *tbl, key="cmd")
        if cmd and (not cmd[0].strip() or any(c.isspace() for c in cmd[0])):
            raise self.fail(f"target '{name}': cmd = [...] is the exec form: the first item "
                            f"is the program to run and each item one argument, but "
                            f"{json.dumps(cmd[0])} is not a program name. Write a shell "
                            f"command as one string: cmd = "
                            f"{json.dumps(' && '.join(cmd) if len(cmd) > 1 else cmd[0])}.",
                            *tbl, key="cmd")

    def variant(self, base: str, name: str, spec: dict[str, Any], cmd: str | list[str],
                mvars: dict[str, Any]) -> Target:
        tbl = ("target", base)
        used: list[str] = []

        def subst(text: str, key: str, quote: bool) -> str:
            def value_of(var: str) -> Any:
                if var in mvars:
                    return mvars[var]
                try:
                    value = params_mod.lookup(self.params, var)
                except KeyError:
                    choices = list(mvars) + self.param_keys
                    raise self.fail(f"target '{base}': unknown variable '${{{var}}}' in "
                                    f"{key}; it is neither a matrix variable nor a params "
                                    f"key.{_suggest(var, choices)}", *tbl, key=key) from None
                if isinstance(value, dict):
                    raise self.fail(f"target '{base}': '${{{var}}}' in {key} is a table; "
                                    "name one value (a dotted key).", *tbl, key=key)
                used.append(var)
                return value
            return fill(text, value_of, quote)

        def paths(key: str) -> tuple[str, ...]:
            items = self.str_list(spec.get(key, []), f"target '{base}': {key}", *tbl, key=key)
            return tuple(self.path_value(subst(p, key, False), f"target '{base}': {key}",
                                         *tbl, key=key) for p in items)

        icmd = render_cmd(cmd, lambda text, quote: subst(text, "cmd", quote))
        deps, outs = paths("deps"), paths("outs")
        metrics, plots = paths("metrics"), paths("plots")
        for key, group in (("outs", outs), ("metrics", metrics), ("plots", plots)):
            for p in group:
                if p == "." or any(c in p for c in "*?["):
                    raise self.fail(f"target '{base}': {key} entry '{p}' must name a file or "
                                    "directory (no globs, not the project root)", *tbl, key=key)
        declared = self.str_list(spec.get("params", []), f"target '{base}': params", *tbl,
                                 key="params")
        for p in declared:
            try:
                params_mod.lookup(self.params, p)
            except KeyError:
                raise self.fail(f"target '{base}' lists unknown param '{p}'; no params file "
                                f"defines it.{_suggest(p, self.param_keys)}", *tbl,
                                key="params") from None
        pkeys = tuple(dict.fromkeys(declared + used))
        env = spec.get("env")
        if env is not None:
            self.typed(env, str, f"target '{base}': env", *tbl, key="env")
            if env not in self.env_names:
                raise self.fail(f"target '{base}' uses env '{env}', but no [env.{env}] table "
                                f"defines it.{_suggest(env, list(self.env_names))}", *tbl,
                                key="env")
        wdir = self.path_value(subst(self.typed(spec.get("wdir", "."), str,
                                                f"target '{base}': wdir", *tbl, key="wdir"),
                                     "wdir", False), f"target '{base}': wdir", *tbl, key="wdir")
        flags = {k: self.typed(spec.get(k, d), bool, f"target '{base}': {k}", *tbl, key=k)
                 for k, d in (("cache", True), ("always", False), ("persist", False),
                              ("track_imports", self.track_imports))}
        after = tuple(self.str_list(spec.get("after", []), f"target '{base}': after", *tbl,
                                    key="after"))
        return Target(
            name=name, base=base, cmd=icmd, deps=deps, params=pkeys, outs=outs,
            metrics=metrics, plots=plots, env=env,
            resources=self.resources(base, spec.get("resources", {})),
            after=after,
            desc=subst(self.typed(spec.get("desc", ""), str, f"target '{base}': desc", *tbl,
                                  key="desc"), "desc", False),
            wdir=wdir, matrix=tuple((k, scalar(v)) for k, v in mvars.items()),
            cmd_source=cmd if isinstance(cmd, str) else tuple(cmd),
            line=self.loc.table("target", base), **flags)

    def resources(self, base: str, spec: Any) -> Resources:
        tbl = ("target", base)
        self.typed(spec, dict, f"target '{base}': resources", *tbl, key="resources")
        cpus, gpus, memory = 1.0, 0.0, 0
        custom: list[tuple[str, float]] = []
        for k, v in spec.items():
            if k == "memory":
                memory = self.memory(v, base)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise self.fail(f"target '{base}': resources.{k} must be a number ≥ 0",
                                *tbl, key="resources")
            if k == "cpus":
                if v <= 0:
                    raise self.fail(f"target '{base}': resources.cpus must be > 0", *tbl,
                                    key="resources")
                cpus = float(v)
            elif k == "gpus":
                gpus = float(v)
            else:
                custom.append((k, float(v)))
        return Resources(cpus=cpus, gpus=gpus, memory=memory, custom=tuple(sorted(custom)))

    def memory(self, v: Any, base: str) -> int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        m = _MEMORY.match(str(v)) if isinstance(v, str) else None
        if not m:
            raise self.fail(f"target '{base}': resources.memory '{v}' is not a size; write "
                            "e.g. \"512MiB\" or \"8GiB\"", "target", base, key="resources")
        unit = (m.group(2) or "").lower()
        return int(float(m.group(1)) * _UNITS[unit])

    def resolve_after(self, targets: dict[str, Target], variants: dict[str, tuple[str, ...]]
                      ) -> None:
        for name, t in list(targets.items()):
            resolved: list[str] = []
            for a in t.after:
                if a in variants:
                    resolved.extend(variants[a])
                elif a in targets:
                    resolved.append(a)
                else:
                    raise self.fail(f"target '{t.base}': after names unknown target '{a}'."
                                    + _suggest(a, list(variants) + list(targets)),
                                    "target", t.base, key="after")
            targets[name] = _replace(t, after=tuple(dict.fromkeys(r for r in resolved
                                                                  if r != name)))

    def check_outs(self, targets: dict[str, Target]) -> None:
        owner: dict[str, str] = {}
        for t in targets.values():
            for p in t.all_outs:
                if p in owner and owner[p] != t.name:
                    raise self.fail(f"targets '{owner[p]}' and '{t.name}' both write '{p}'. "
                                    "Give each out a single producer.", "target", t.base,
                                    key="outs")
                owner[p] = t.name
        # an out inside another target's out: walk each out's ancestors
        for p, name in owner.items():
            parent = posixpath.dirname(p)
            while parent:
                other = owner.get(parent)
                if other is not None and other != name:
                    raise self.fail(f"target '{name}' writes '{p}', inside '{parent}', which "
                                    f"target '{other}' writes. Outs of different targets must "
                                    "not nest.", "target", targets[name].base, key="outs")
                parent = posixpath.dirname(parent)

def _toml_type(v: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", dict: "a table",
             list: "a list with other values than strings", str: "a string"}
    return names.get(type(v), type(v).__name__)


def render_cmd(cmd: str | list[str] | tuple[str, ...],
               subst: Callable[[str, bool], str]) -> str:
    """The command line of an Mlfile `cmd`: a string is one shell command whose `${}` values
    are shell-quoted; a list is the exec form, each argument quoted whole so that no shell
    reads any of it. `subst(text, quote)` fills in one piece's `${}`."""
    if isinstance(cmd, str):
        return subst(cmd, True)
    return " ".join(shlex.quote(subst(c, False)) for c in cmd)


def fill(text: str, value_of: Callable[[str], Any], quote: bool) -> str:
    """`text` with each `${name}` replaced by `value_of(name)` written as `scalar` does
    (shell-quoted when `quote`); `$${` stays a literal `${`."""
    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return "${" + m.group(2) + "}"
        s = scalar(value_of(m.group(2).strip()))
        return shlex.quote(s) if quote else s
    return _VAR.sub(repl, text)


def scalar(v: Any) -> str:
    """How a param or matrix value is written into a command or a name."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _suggest(word: str, choices: list[str]) -> str:
    return did_you_mean(word, choices)


def _replace(t: Target, **changes: Any) -> Target:
    import dataclasses

    return dataclasses.replace(t, **changes)
