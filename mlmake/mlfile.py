"""Mlfile (TOML) → a validated Pipeline of typed Targets; the only module that reads raw dicts."""

from __future__ import annotations

import itertools
import os
import posixpath
import re
import shlex
from typing import Any

from mlmake import params as params_mod
from mlmake.errors import MlfileError, did_you_mean
from mlmake.model import (EndpointSpec, EnvSpec, Pipeline, RemoteSpec, Resources,
                          ScheduleSpec, Target)

TOP_KEYS = ("project", "target", "remote", "env", "hooks", "endpoint", "schedule")
PROJECT_KEYS = ("default", "params", "jobs", "executor", "remote", "link", "push", "ray_data")
TARGET_KEYS = ("desc", "cmd", "deps", "params", "outs", "metrics", "plots", "env", "resources",
               "matrix", "after", "wdir", "cache", "always", "persist")
REMOTE_KEYS = ("url", "options")
ENV_KEYS = ("requirements", "dockerfile", "context", "image", "network", "python")
HOOK_NAMES = ("post-checkout", "post-merge", "post-rewrite", "post-commit", "pre-push",
              "pre-commit")
HOOK_KEYS = HOOK_NAMES + ("strict",)
HOOK_ACTIONS = ("checkout", "run", "push", "status")  # and run:TARGET,...
ENDPOINT_KEYS = ("targets", "rev", "params", "desc")
SCHEDULE_KEYS = ("endpoint", "every", "cron", "on_commit", "watch", "poll", "params")
EXECUTORS = ("local", "ray")
LINK_TYPES = ("reflink", "hardlink", "symlink", "copy")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
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


def load(path: str, param_overrides: dict[str, Any] | None = None) -> Pipeline:
    """Read and validate the Mlfile at `path` and the params files it names.

    `param_overrides` (dotted key → value) replace values of the params files before `${}`
    interpolation, without touching any file.
    """
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except FileNotFoundError:
        raise MlfileError("no Mlfile here. Run `mlmake init` to create one, or pass -C DIR / "
                          "-f FILE.", os.path.basename(path)) from None
    return parse(text, path, param_overrides)


def parse(text: str, path: str, param_overrides: dict[str, Any] | None = None) -> Pipeline:
    """Validate Mlfile `text` (read from `path`) into a Pipeline."""
    return _Parser(text, path, param_overrides).pipeline()


class _Parser:
    def __init__(self, text: str, path: str,
                 param_overrides: dict[str, Any] | None = None) -> None:
        self.overrides = param_overrides or {}
        self.path = path
        self.root = os.path.dirname(os.path.abspath(path))
        self.file = os.path.basename(path)
        self.loc = _Locator(text)
        self.raw = params_mod.parse_toml(text, self.file)

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

    def str_list(self, value: Any, what: str, *table: str, key: str) -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{what} must be a string or a list of strings", *table, key=key)
        return list(value)

    # -- the whole file -------------------------------------------------------------------
    def pipeline(self) -> Pipeline:
        raw = self.raw
        self.check_keys(raw, TOP_KEYS, self.file)
        proj = raw.get("project", {})
        self.typed(proj, dict, "[project]", key="project")
        self.check_keys(proj, PROJECT_KEYS, "[project]", "project")
        params_line = None
        if "params" in proj:
            files = tuple(self.path_value(p, "[project] params", "project", key="params")
                          for p in self.str_list(proj["params"], "[project] params", "project",
                                                 key="params"))
            params_line = self.loc.key("params", "project")
        else:
            files = params_mod.default_files(self.root)
        self.params = params_mod.load(self.root, files, self.file, params_line)
        if self.overrides:
            self.params = params_mod.override(self.params, self.overrides, self.file)
        self.param_keys = params_mod.all_keys(self.params)

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

        default = ()
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
            ray_data=ray_data, hooks=dict(hooks), endpoints=endpoints, schedules=schedules,
            variants=variants)

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
            if not all(isinstance(c, str) for c in cmd):
                raise self.fail(f"target '{name}': cmd must be a string or a list of strings",
                                *tbl, key="cmd")
            cmd = " && ".join(cmd)
        self.typed(cmd, str, f"target '{name}': cmd", *tbl, key="cmd")
        if not cmd.strip():
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
            vname = name + ("@" + "-".join(_scalar(v) for v in combo) if combo else "")
            if vname in seen:
                raise self.fail(f"target '{name}': matrix gives the variant name '{vname}' "
                                "twice; make the values distinct", *tbl, key="matrix")
            seen.add(vname)
            out.append(self.variant(name, vname, spec, cmd, mvars))
        return out

    def variant(self, base: str, name: str, spec: dict[str, Any], cmd: str,
                mvars: dict[str, Any]) -> Target:
        tbl = ("target", base)
        used: list[str] = []

        def subst(text: str, key: str, quote: bool) -> str:
            def repl(m: re.Match[str]) -> str:
                if m.group(1):
                    return "${" + m.group(2) + "}"
                var = m.group(2).strip()
                if var in mvars:
                    value = mvars[var]
                else:
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
                s = _scalar(value)
                return shlex.quote(s) if quote else s
            return _VAR.sub(repl, text)

        def paths(key: str) -> tuple[str, ...]:
            items = self.str_list(spec.get(key, []), f"target '{base}': {key}", *tbl, key=key)
            return tuple(self.path_value(subst(p, key, False), f"target '{base}': {key}",
                                         *tbl, key=key) for p in items)

        icmd = subst(cmd, "cmd", True)
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
                 for k, d in (("cache", True), ("always", False), ("persist", False))}
        after = tuple(self.str_list(spec.get("after", []), f"target '{base}': after", *tbl,
                                    key="after"))
        return Target(
            name=name, base=base, cmd=icmd, deps=deps, params=pkeys, outs=outs,
            metrics=metrics, plots=plots, env=env,
            resources=self.resources(base, spec.get("resources", {})),
            after=after,
            desc=subst(self.typed(spec.get("desc", ""), str, f"target '{base}': desc", *tbl,
                                  key="desc"), "desc", False),
            wdir=wdir, matrix=tuple((k, _scalar(v)) for k, v in mvars.items()),
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

    # -- other tables ---------------------------------------------------------------------
    def envs(self, raw: Any) -> dict[str, EnvSpec]:
        self.typed(raw, dict, "[env]", key="env")
        out: dict[str, EnvSpec] = {}
        for name, spec in raw.items():
            tbl = ("env", name)
            self.typed(spec, dict, f"[env.{name}]", "env", key=name)
            self.check_keys(spec, ENV_KEYS, f"[env.{name}]", *tbl)
            kinds = [k for k in ("requirements", "dockerfile", "image") if k in spec]
            if len(kinds) != 1:
                raise self.fail(f"[env.{name}] needs exactly one of `requirements`, "
                                "`dockerfile` or `image`", *tbl)
            kind = {"requirements": "venv", "dockerfile": "docker", "image": "image"}[kinds[0]]
            files = {}
            for k in ("requirements", "dockerfile", "context"):
                if k in spec:
                    files[k] = self.path_value(self.typed(spec[k], str, f"[env.{name}] {k}",
                                                          *tbl, key=k),
                                               f"[env.{name}] {k}", *tbl, key=k)
            for k in ("requirements", "dockerfile"):
                if k in files and not os.path.isfile(os.path.join(self.root, files[k])):
                    raise self.fail(f"[env.{name}] {k} '{files[k]}' does not exist. Create "
                                    "it or fix the path.", *tbl, key=k)
            self.env_options(name, kind, spec, files)
            if kind == "docker" and "context" not in files:
                files["context"] = posixpath.dirname(files["dockerfile"]) or "."
            out[name] = EnvSpec(name=name, kind=kind, requirements=files.get("requirements"),
                                dockerfile=files.get("dockerfile"),
                                context=files.get("context"), image=spec.get("image"),
                                network=str(spec.get("network", "none")),
                                python=spec.get("python"))
        return out

    def env_options(self, name: str, kind: str, spec: dict[str, Any],
                    files: dict[str, str]) -> None:
        """The keys that only some kinds of env take, and their types."""
        tbl = ("env", name)
        if not _NAME.match(name):
            raise self.fail(f"env name '{name}' may use letters, digits, '_', '-' and '.' "
                            "only", *tbl)
        only = {"context": ("docker", "`dockerfile`"), "python": ("venv", "`requirements`"),
                "network": ("docker image", "`dockerfile` or `image`")}
        for k, (kinds, what) in only.items():
            if k in spec and kind not in kinds.split():
                raise self.fail(f"[env.{name}] {k} only goes with {what}", *tbl, key=k)
        for k in ("image", "network", "python"):
            if k in spec and (not isinstance(spec[k], str) or not spec[k].strip()):
                raise self.fail(f"[env.{name}] {k} must be a non-empty string", *tbl, key=k)
        if "context" in files and not os.path.isdir(os.path.join(self.root, files["context"])):
            raise self.fail(f"[env.{name}] context '{files['context']}' is not a directory. "
                            "Create it or fix the path.", *tbl, key="context")

    def hooks(self, raw: Any, targets: dict[str, Target],
              variants: dict[str, tuple[str, ...]]) -> dict[str, Any]:
        """[hooks]: each hook maps to actions (a string or a list); `strict` is a bool."""
        self.typed(raw, dict, "[hooks]", key="hooks")
        self.check_keys(raw, HOOK_KEYS, "[hooks]", "hooks")
        for name, value in raw.items():
            if name == "strict":
                self.typed(value, bool, "[hooks] strict", "hooks", key="strict")
                continue
            for action in self.str_list(value, f"[hooks] {name}", "hooks", key=name):
                verb, colon, names = action.partition(":")
                if action in HOOK_ACTIONS:
                    continue
                if verb != "run" or not colon:
                    raise self.fail(f"[hooks] {name}: unknown action '{action}'; use checkout, "
                                    "run, run:TARGET,..., push or status."
                                    + _suggest(action, list(HOOK_ACTIONS)), "hooks", key=name)
                for t in (n.strip() for n in names.split(",")):
                    if not t:
                        raise self.fail(f"[hooks] {name}: '{action}' needs target names after "
                                        "'run:', e.g. \"run:train,evaluate\".", "hooks", key=name)
                    if t not in targets and t not in variants:
                        raise self.fail(f"[hooks] {name}: '{action}' names unknown target "
                                        f"'{t}'." + _suggest(t, list(variants) + list(targets)),
                                        "hooks", key=name)
        return dict(raw)

    def remotes(self, raw: Any) -> dict[str, RemoteSpec]:
        self.typed(raw, dict, "[remote]", key="remote")
        out: dict[str, RemoteSpec] = {}
        for name, spec in raw.items():
            tbl = ("remote", name)
            self.typed(spec, dict, f"[remote.{name}]", "remote", key=name)
            self.check_keys(spec, REMOTE_KEYS, f"[remote.{name}]", *tbl)
            url = spec.get("url")
            if not isinstance(url, str) or not url:
                raise self.fail(f"[remote.{name}] needs a `url` (a directory, file://, s3://)",
                                *tbl)
            options = spec.get("options", {})
            self.typed(options, dict, f"[remote.{name}] options", *tbl, key="options")
            scheme = url.split("://", 1)[0] if "://" in url else "file"
            if scheme not in ("file", "local") and not _scheme_known(scheme):
                raise self.fail(f"[remote.{name}] url '{url}': unsupported scheme '{scheme}'. "
                                "Use a directory, file:// or s3://, or install the fsspec "
                                "package for that scheme.", *tbl, key="url")
            out[name] = RemoteSpec(name=name, url=url, options=tuple(sorted(options.items())))
        return out

    def endpoints(self, raw: Any, targets: dict[str, Target],
                  variants: dict[str, tuple[str, ...]]) -> dict[str, EndpointSpec]:
        self.typed(raw, dict, "[endpoint]", key="endpoint")
        out: dict[str, EndpointSpec] = {}
        for name, spec in raw.items():
            tbl = ("endpoint", name)
            self.typed(spec, dict, f"[endpoint.{name}]", "endpoint", key=name)
            self.check_keys(spec, ENDPOINT_KEYS, f"[endpoint.{name}]", *tbl)
            tnames = tuple(self.str_list(spec.get("targets", []), f"[endpoint.{name}] targets",
                                         *tbl, key="targets"))
            for t in tnames:
                if t not in targets and t not in variants:
                    raise self.fail(f"[endpoint.{name}] targets names unknown target '{t}'."
                                    + _suggest(t, list(variants)), *tbl, key="targets")
            allowed = tuple(self.str_list(spec.get("params", []), f"[endpoint.{name}] params",
                                          *tbl, key="params"))
            for p in allowed:
                try:
                    params_mod.lookup(self.params, p)
                except KeyError:
                    raise self.fail(f"[endpoint.{name}] params names unknown param '{p}'."
                                    + _suggest(p, self.param_keys), *tbl, key="params") from None
            rev = self.typed(spec.get("rev", "HEAD"), str, f"[endpoint.{name}] rev", *tbl,
                             key="rev")
            out[name] = EndpointSpec(name=name, targets=tnames, rev=rev, params=allowed)
        return out

    def schedules(self, raw: Any, endpoints: dict[str, EndpointSpec]
                  ) -> dict[str, ScheduleSpec]:
        self.typed(raw, dict, "[schedule]", key="schedule")
        out: dict[str, ScheduleSpec] = {}
        for name, spec in raw.items():
            tbl = ("schedule", name)
            self.typed(spec, dict, f"[schedule.{name}]", "schedule", key=name)
            self.check_keys(spec, SCHEDULE_KEYS, f"[schedule.{name}]", *tbl)
            ep = spec.get("endpoint")
            if ep not in endpoints:
                raise self.fail(f"[schedule.{name}] endpoint '{ep}' is not defined by an "
                                "[endpoint.NAME] table." + _suggest(str(ep), list(endpoints)),
                                *tbl, key="endpoint")
            kinds = [k for k in ("every", "cron", "on_commit", "watch") if k in spec]
            if len(kinds) != 1:
                raise self.fail(f"[schedule.{name}] needs exactly one of `every`, `cron`, "
                                "`on_commit` or `watch`", *tbl)
            every = cron = on_commit = None
            watch: tuple[str, ...] = ()
            if "every" in spec:
                every = self.duration(spec["every"], f"[schedule.{name}] every", tbl, "every")
            if "cron" in spec:
                cron = self.typed(spec["cron"], str, f"[schedule.{name}] cron", *tbl,
                                  key="cron")
                if not _cron_valid(cron):
                    raise self.fail(f"[schedule.{name}] cron '{cron}' is not a valid 5-field "
                                    "cron expression (minute hour day month weekday)", *tbl,
                                    key="cron")
            if "on_commit" in spec:
                on_commit = self.typed(spec["on_commit"], str, f"[schedule.{name}] on_commit",
                                       *tbl, key="on_commit")
            if "watch" in spec:
                watch = tuple(self.path_value(p, f"[schedule.{name}] watch", *tbl, key="watch")
                              for p in self.str_list(spec["watch"], f"[schedule.{name}] watch",
                                                     *tbl, key="watch"))
            poll = self.duration(spec.get("poll", "10s"), f"[schedule.{name}] poll", tbl, "poll")
            overrides = self.typed(spec.get("params", {}), dict, f"[schedule.{name}] params",
                                   *tbl, key="params")
            allowed = endpoints[ep].params
            for k in params_mod.flatten(overrides):
                if not any(k == a or k.startswith(a + ".") for a in allowed):
                    raise self.fail(f"[schedule.{name}] params sets '{k}', which endpoint "
                                    f"'{ep}' does not allow; add it to [endpoint.{ep}] params "
                                    "or drop it.", *tbl, key="params")
            out[name] = ScheduleSpec(name=name, endpoint=ep, every=every, cron=cron,
                                     on_commit=on_commit, watch=watch, poll=poll,
                                     params=tuple(sorted(params_mod.flatten(overrides)
                                                         .items())))
        return out

    def duration(self, v: Any, what: str, tbl: tuple[str, ...], key: str) -> float:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
        m = _DURATION.match(v) if isinstance(v, str) else None
        if not m or float(m.group(1)) <= 0:
            raise self.fail(f"{what} '{v}' is not a duration; write e.g. \"10s\", \"5m\", "
                            "\"1h\"", *tbl, key=key)
        mult = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return float(m.group(1)) * mult


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _suggest(word: str, choices: list[str]) -> str:
    return did_you_mean(word, choices)


def _replace(t: Target, **changes: Any) -> Target:
    import dataclasses

    return dataclasses.replace(t, **changes)


def _scheme_known(scheme: str) -> bool:
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return scheme in ("s3",)
    return scheme in registry or scheme in known_implementations


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (lowest, highest, names from lowest) per field: minute hour day month weekday
_CRON_FIELDS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, _MONTHS), (0, 7, _WEEKDAYS))
_CRON_ITEM = re.compile(r"^(\*|(\w+)(?:-(\w+))?)(?:/(\d+))?$")


def _cron_value(token: str, lo: int, hi: int, names: tuple[str, ...]) -> bool:
    if token.isdigit():
        return lo <= int(token) <= hi
    return token.lower() in names


def _cron_fields_ok(fields: list[str], strict: bool) -> bool:
    """Range-check `*`, numbers, names, `a-b` ranges, `/step` and `,` lists in each field.

    An item outside that syntax fails when `strict`; otherwise it is left to croniter, whose
    extensions (`L`, `#`, `?`, ...) it may be.
    """
    for text, (lo, hi, names) in zip(fields, _CRON_FIELDS):
        for item in text.split(","):
            m = _CRON_ITEM.match(item)
            if not m:
                if strict:
                    return False
                continue
            _, first, last, step = m.groups()
            if step is not None and int(step) == 0:
                return False
            for token in (first, last):
                if token is not None and not _cron_value(token, lo, hi, names) \
                        and (strict or token.isdigit()):
                    return False
    return True


def _cron_valid(expr: str) -> bool:
    """A 5-field cron expression (minute hour day month weekday) with every value in range."""
    fields = expr.split()
    if len(fields) != 5:
        return False
    try:
        from croniter import croniter
    except ImportError:
        return _cron_fields_ok(fields, strict=True)
    return bool(croniter.is_valid(expr)) and _cron_fields_ok(fields, strict=False)
