"""The Mlfile's tables around the targets: [env], [remote], [hooks], [endpoint], [schedule].

`TableParsing` is mixed into the Mlfile parser (mlmake.mlfile), whose error helpers it uses.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any

from mlmake.model import EndpointSpec, EnvSpec, HooksSpec, RemoteSpec, ScheduleSpec, Target
from mlmake import params as params_mod
from mlmake.errors import did_you_mean

REMOTE_KEYS = ("url", "options")
ENV_KEYS = ("requirements", "dockerfile", "context", "image", "network", "python")
HOOK_NAMES = ("post-checkout", "post-merge", "post-rewrite", "post-commit", "pre-push",
              "pre-commit")
HOOK_KEYS = HOOK_NAMES + ("strict",)
HOOK_ACTIONS = ("checkout", "run", "push", "status")  # and run:TARGET,...
ENDPOINT_KEYS = ("targets", "rev", "params", "desc")
SCHEDULE_KEYS = ("endpoint", "every", "cron", "on_commit", "watch", "poll", "params")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # target and env names
_NAME = NAME_PATTERN
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def _suggest(word: str, choices: list[str]) -> str:
    return did_you_mean(word, choices)


class TableParsing:
    """Parsers of the non-target tables (methods of the Mlfile parser)."""

    # provided by the parser this is mixed into
    root: str
    params: dict[str, Any]
    param_keys: list[str]
    fail: Any
    typed: Any
    check_keys: Any
    str_list: Any
    path_value: Any

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
              variants: dict[str, tuple[str, ...]]) -> HooksSpec:
        """[hooks]: each hook maps to actions (a string or a list); `strict` is a bool."""
        self.typed(raw, dict, "[hooks]", key="hooks")
        self.check_keys(raw, HOOK_KEYS, "[hooks]", "hooks")
        strict = False
        actions: list[tuple[str, tuple[str, ...]]] = []
        for name, value in raw.items():
            if name == "strict":
                strict = self.typed(value, bool, "[hooks] strict", "hooks", key="strict")
                continue
            listed = self.str_list(value, f"[hooks] {name}", "hooks", key=name, single=True)
            actions.append((name, tuple(listed)))
            for action in listed:
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
        return HooksSpec(tuple(actions), strict)

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
