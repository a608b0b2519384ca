"""JSON views of a project for the API: run history and details, logs, outputs, the graph with
live states, metrics across commits and the experiments table. Plain functions over Project; no
web framework."""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from mlmake.errors import MlmakeError, StoreError, UsageError
from mlmake.serve.runs import BadRequest, Runner

if TYPE_CHECKING:
    from mlmake.project import Project, RunRecord

COUNTS = ("ran", "reused", "uptodate", "failed", "blocked")
_graph_lock = threading.Lock()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


# -- runs --------------------------------------------------------------------------------------
def run_entry(project: Project, b: dict[str, Any], runner: Runner | None = None,
              records: list[RunRecord] | None = None) -> dict[str, Any]:
    """One run of the history: id, status, trigger, endpoint, commit, times, params and counts
    (`ran`, `reused`, `uptodate`, `failed`, `blocked`)."""
    summary = b.get("summary") or {}
    status = b["status"]
    finished = b.get("finished")
    if status in ("queued", "running") or not summary:
        recs = records if records is not None else \
            project.runs_store.runs(build=b["id"], limit=100_000)
        counts = {k: 0 for k in COUNTS}
        for r in recs:
            if r.outcome in counts:
                counts[r.outcome] += 1
    else:
        counts = {k: int(summary.get(k, 0)) for k in COUNTS}
    end = finished if finished is not None else (time.time() if status == "running"
                                                 else None)
    commit = b.get("commit")
    return {
        "id": b["id"], "status": status, "trigger": b.get("trigger"),
        "endpoint": b.get("endpoint"), "commit": commit,
        "short": commit[:10] if commit else None, "started": b.get("started"),
        "started_iso": _iso(b.get("started")), "finished": finished,
        "duration": round(end - b["started"], 3) if end is not None and b.get("started")
        else None,
        "dirty": bool(b.get("dirty")),
        "data": b.get("data") or {},  # path → hash of each data source the build used
        "params": b.get("params") or {}, "summary": counts, "message": b.get("message"),
        "host": b.get("host"), "executor": b.get("executor"),
        "data": _data_versions(b.get("data")),
        "url": f"/api/runs/{b['id']}",
    }


def _data_versions(data: Any) -> dict[str, str]:
    """The data sources a build used, {path: content hash}, when its record carries them."""
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if v}


def runs_list(project: Project, limit: int = 50, runner: Runner | None = None
              ) -> list[dict[str, Any]]:
    """The run history, newest first, CLI runs included."""
    return [run_entry(project, b, runner) for b in project.runs_store.builds(limit)]


def _build(project: Project, run_id: str) -> dict[str, Any]:
    b = project.runs_store.build(run_id)
    if b is None:
        raise BadRequest(f"unknown run '{run_id}'.", 404, run=run_id)
    return b


def run_detail(project: Project, run_id: str, runner: Runner | None = None
               ) -> dict[str, Any]:
    """A run with each target's outcome, duration, exit code, message and out hashes."""
    b = _build(project, run_id)
    recs = project.runs_store.runs(build=run_id, limit=100_000)
    by_target: dict[str, RunRecord] = {}
    for r in reversed(recs):  # oldest first: the last record of a target wins
        by_target[r.target] = r
    entry = run_entry(project, b, runner, recs)
    running: set[str] = set()
    if runner is not None and run_id in runner.active:
        running = set(runner.active[run_id].running)
    blocked = set((b.get("summary") or {}).get("blocked_targets", []))
    status = b["status"]
    lock = None
    targets = []
    for name in b.get("targets") or []:
        rec = by_target.get(name)
        item: dict[str, Any] = {"name": name}
        if rec is not None:
            item.update(outcome=rec.outcome, duration=round(rec.duration, 3),
                        started=rec.started, exit_code=rec.exit_code, message=rec.message,
                        source=rec.source, key=rec.key, outs=rec.outs or {},
                        log=bool(rec.log) and os.path.exists(_log_path(project, run_id, name,
                                                                        rec)))
        else:
            if name in running:
                outcome = "running"
            elif status in ("queued", "running"):
                outcome = "pending"
            elif name in blocked:
                outcome = "blocked"
            elif status == "interrupted":
                outcome = "not run"
            else:
                outcome = "uptodate"
            outs: dict[str, Any] = {}
            if outcome == "uptodate" and b.get("commit"):
                lock = lock if lock is not None else _lock_at(project, b["commit"])
                e = lock.get(name)
                outs = {o: r.as_json() for o, r in e.outs.items()} if e is not None else {}
            item.update(outcome=outcome, duration=None, started=None, exit_code=None,
                        message="", source="", key=None, outs=outs,
                        log=name in running)
        targets.append(item)
    entry["targets"] = targets
    entry["requested"] = b.get("targets") or []
    return entry


def _lock_at(project: Project, commit: str) -> dict[str, Any]:
    try:
        return dict(project.lock_at(commit).entries)
    except MlmakeError:
        return {}


def _log_path(project: Project, run_id: str, target: str, rec: RunRecord | None) -> str:
    if rec is not None and rec.log:
        return rec.log
    return project.shared_path("logs", run_id, f"{target}.log")


def log_text(project: Project, run_id: str, target: str | None = None) -> str:
    """The output of one target of a run, or of all its targets with a header each."""
    b = _build(project, run_id)
    recs = {r.target: r for r in reversed(project.runs_store.runs(build=run_id,
                                                                    limit=100_000))}
    names = list(b.get("targets") or [])
    if target is not None:
        if target not in names and target not in recs:
            raise BadRequest(f"run '{run_id}' has no target '{target}'.", 404, run=run_id,
                             target=target)
        path = _log_path(project, run_id, target, recs.get(target))
        if not os.path.exists(path):
            r = recs.get(target)
            how = f"it was {r.outcome}" if r is not None else "it did not run"
            raise BadRequest(f"target '{target}' has no log in run '{run_id}': {how}.", 404,
                             run=run_id, target=target)
        return _read_text(path)
    parts = []
    for name in names + [n for n in recs if n not in names]:
        path = _log_path(project, run_id, name, recs.get(name))
        if not os.path.exists(path):
            continue
        r = recs.get(name)
        how = f"{r.outcome}, {r.duration:.1f}s" if r is not None else "running"
        text = _read_text(path)
        if text and not text.endswith("\n"):
            text += "\n"
        parts.append(f"==> {name} ({how}) <==\n{text}")
    return "\n".join(parts)


def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "replace")


def output(project: Project, run_id: str, path: str) -> dict[str, Any]:
    """Where the bytes of `path` as run `run_id` produced it are: {"object": file path in the
    store, "size"} for a file, {"listing": [...]} for a directory out (or part of one)."""
    _build(project, run_id)
    try:
        found = project.output(run_id, path)
    except StoreError as exc:  # no longer in the cache, or corrupt
        raise BadRequest(str(exc), 410, path=path.strip("/")) from None
    except UsageError as exc:
        raise BadRequest(str(exc), 404, run=run_id, path=path.strip("/")) from None
    if found.listing is not None:
        return {"listing": [{"path": e.path, "hash": e.hash, "size": e.size}
                            for e in found.listing], "path": found.path}
    return {"object": found.object, "size": found.size, "path": found.path}


# -- the graph ---------------------------------------------------------------------------------
def graph(project: Project, runner: Runner | None = None) -> dict[str, Any]:
    """drawing.graph_data of every target of the work tree's Mlfile, each node with its
    `state` (uptodate/stale, with reasons), `running` (and the ids of the runs building it)
    and its `last` recorded run."""
    with _graph_lock:  # one status at a time: they share the stat cache file
        data, error = project.reloaded().graph_status()
    running = runner.running_targets() if runner is not None else {}
    latest = project.runs_store.latest()
    for node in data["nodes"]:
        runs = running.get(node["name"], [])
        node["running"] = bool(runs)
        node["running_runs"] = runs
        r = latest.get(node["name"])
        node["last"] = None if r is None else {
            "run": r.build, "outcome": r.outcome, "started": r.started,
            "duration": round(r.duration, 3), "exit_code": r.exit_code}
    data["running"] = sorted(running)
    data["error"] = error
    return data


# -- metrics -----------------------------------------------------------------------------------
def metrics_history(project: Project, limit: int = 50) -> dict[str, Any]:
    """Metrics and params of the last `limit` commits of the current branch, oldest first,
    read from Git objects (nothing is checked out)."""
    p = project.reloaded()
    branch, commits = p.history(limit)
    commits = list(reversed(commits))
    shas = [c["sha"] for c in commits]
    mfiles, pfiles = p.metrics_files("metrics"), p.metrics_files("params")
    mets = p.metrics(shas, "metrics", lenient=True) if shas else []
    pars = p.metrics(shas, "params", lenient=True) if shas else []
    out = []
    keys: dict[str, set[str]] = {f: set() for f in mfiles}
    for c, m, pa in zip(commits, mets, pars):
        for f, values in m.files.items():
            for k, v in (values or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    keys[f].add(k)
        params: dict[str, Any] = {}
        for values in pa.files.values():
            params.update(values or {})
        out.append({"sha": c["sha"], "short": c["sha"][:7], "subject": c["subject"],
                    "author": c["author"], "time": c["time"], "date": _iso(c["time"]),
                    "metrics": dict(m.files), "params": params,
                    "errors": {**m.errors, **pa.errors}})
    return {"branch": branch, "metrics_files": mfiles, "params_files": pfiles,
            "keys": {f: sorted(k) for f, k in keys.items()}, "commits": out}


# -- experiments -------------------------------------------------------------------------------
def experiments(project: Project) -> dict[str, Any]:
    """The experiments table of `mlmake exp show --json` (the work tree, the base commit, each
    experiment and queued one, with every param and metric), plus the columns: all of them
    and those whose values differ between the rows (`changed`, what the table shows by
    default). `error` says why there are no rows (a project outside Git)."""
    from mlmake import exp_table
    from mlmake.experiments import Experiments

    p = project.reloaded()
    try:
        exps = Experiments(p)
    except UsageError as exc:
        return {"rows": [], "params": [], "metrics": [],
                "changed": {"params": [], "metrics": []}, "error": str(exc)}
    rows = exp_table.rows(exps)
    every = exp_table.table(rows, all_columns=True)
    changed = exp_table.table(rows, all_columns=False)
    return {"rows": _jsonable(every.as_json()), "params": every.params,
            "metrics": [{"path": f, "key": k} for f, k in every.metrics],
            "changed": {"params": changed.params,
                        "metrics": [{"path": f, "key": k} for f, k in changed.metrics]},
            "error": None}


def _jsonable(value: Any) -> Any:
    """`value` as strict JSON holds it: a NaN or infinite metric becomes null, anything else
    that JSON has no type for its text (as `exp show --json` prints it)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# -- endpoints ---------------------------------------------------------------------------------
def endpoints(project: Project, runner: Runner) -> list[dict[str, Any]]:
    """The published endpoints with their allowed params and those params' values at the
    endpoint's default rev."""
    out = []
    for name, spec in project.pipeline.endpoints.items():
        values: dict[str, Any] = {}
        commit = None
        try:
            commit = project.commit_of(spec.rev)
            flat = runner.param_values(commit)
            values = {k: v for k, v in flat.items()
                      if any(k == a or k.startswith(a + ".") for a in spec.params)}
        except MlmakeError:
            pass
        out.append({"name": name, "targets": list(spec.targets), "rev": spec.rev,
                    "commit": commit, "params": list(spec.params), "values": values,
                    "url": f"/api/endpoints/{name}/runs"})
    return out
