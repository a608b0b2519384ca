"""`mlmake serve` and `mlmake trigger`: the real service on a loopback port, driven over HTTP."""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import MLMAKE, Repo

PROJECT = {
    "Mlfile": """
        [target.prepare]
        cmd = "mkdir -p build && cat data/raw.txt > build/prepared.txt"
        deps = ["data/raw.txt"]
        outs = ["build/prepared.txt"]

        [target.train]
        cmd = "sleep 0.5; echo lr=${train.lr} > model.txt && cat build/prepared.txt >> model.txt"
        deps = ["build/prepared.txt"]
        params = ["train.lr"]
        outs = ["model.txt"]

        [target.evaluate]
        cmd = "mkdir -p metrics && cp model.txt report.txt && printf '{\\"chars\\": %s}\\n' $(wc -c < model.txt) > metrics/eval.json"
        deps = ["model.txt"]
        outs = ["report.txt"]
        metrics = ["metrics/eval.json"]

        [target.shards]
        cmd = "mkdir -p shards/sub && echo a > shards/a.txt && echo b > shards/sub/b.txt"
        outs = ["shards"]

        [target.boom]
        cmd = "echo about to fail; exit 3"
        outs = ["boom.txt"]

        [endpoint.retrain]
        targets = ["evaluate", "shards"]
        params = ["train.lr", "train.note"]

        [endpoint.broken]
        targets = ["boom"]
    """,
    "params.toml": """
        [train]
        lr = 0.1
        note = "first"
        epochs = 3
    """,
    ".gitignore": "data/\n",
    "data/raw.txt": "raw data, not in Git\n",
}


class Service:
    """A running `mlmake serve` subprocess with a small HTTP client."""

    def __init__(self, repo: Repo, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env.pop("MLMAKE_SERVE_TOKEN", None)
        full_env.update(env or {})
        self.repo = repo
        self.proc = subprocess.Popen([*MLMAKE, "serve", "--port", "0", *args], cwd=repo.path,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=full_env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        deadline = time.monotonic() + 30
        self.page = ""
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("page: "):
                self.page = line[len("page: "):].strip()
                break
        assert self.page, f"the service did not start: {''.join(self.err)}"
        self.url, _, fragment = self.page.partition("#")
        self.url = self.url.rstrip("/")
        self.token = fragment[len("token="):]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def call(self, method: str, path: str, body: Any = None, token: str | None = "default",
             raw: bool = False) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        token = self.token if token == "default" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        if raw:
            return status, payload
        return status, json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        status, data = self.call("GET", path)
        assert status == 200, (path, status, data)
        return data

    def trigger(self, endpoint: str, **body: Any) -> str:
        status, data = self.call("POST", f"/api/endpoints/{endpoint}/runs", body)
        assert status == 202, data
        return data["id"]

    def wait(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/runs/{run_id}")
            if run["status"] not in ("queued", "running"):
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} did not end in {timeout}s")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(5)
        return code


def iter_lines(svc: Service) -> list[str]:
    out = []
    while not svc.lines.empty():
        out.append(svc.lines.get())
    return out


def outcomes(run: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["outcome"] for t in run["targets"]}


def ran(run: dict[str, Any]) -> set[str]:
    return {n for n, o in outcomes(run).items() if o == "ran"}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the work tree (Git's and mlmake's state left out), byte for byte."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".mlmake")]
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = Path(p).read_bytes()
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A project built from the CLI at two commits (tag v1, then HEAD with lr = 0.2), served
    with --jobs 2; the work tree's files and `git status` are captured before it starts."""
    repo = Repo(tmp_path_factory.mktemp("served") / "repo")
    repo.write(PROJECT)
    assert repo.mlmake("evaluate", "shards").code == 0
    repo.commit("v1")
    repo.git("tag", "v1")
    v1_model = (repo.path / "model.txt").read_bytes()
    repo.write({"params.toml": PROJECT["params.toml"].replace("0.1", "0.2")})
    assert repo.mlmake("evaluate", "shards").code == 0
    head = repo.commit("lr 0.2")
    before = snapshot(repo.path)
    status = repo.git("status", "--porcelain", "--ignored")
    service = Service(repo, "--jobs", "2")
    try:
        yield {"repo": repo, "service": service, "v1_model": v1_model, "head": head,
               "v1": repo.git("rev-parse", "v1").strip(), "before": before,
               "status": status}
    finally:
        service.stop()


# -- auth ------------------------------------------------------------------------------------
def test_api_needs_the_bearer_token_and_the_page_does_not(served):
    svc, repo = served["service"], served["repo"]
    status, body = svc.call("GET", "/api/runs", token=None)
    assert status == 401 and "bearer token" in body["error"]
    assert svc.call("GET", "/api/runs", token="wrong")[0] == 401
    assert svc.call("GET", "/api/runs", token=svc.token + "x")[0] == 401
    assert svc.call("POST", "/api/endpoints/retrain/runs", {}, token=None)[0] == 401
    assert svc.call("GET", "/api/runs")[0] == 200
    token_file = repo.path / ".mlmake" / "serve-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == svc.token and len(svc.token) >= 32
    assert svc.page.startswith("http://127.0.0.1:") and "/#token=" in svc.page
    status, html = svc.call("GET", "/", token=None, raw=True)
    assert status == 200 and b"<" in html
    spec = svc.get("/api/openapi.json")
    assert "/api/endpoints/{name}/runs" in spec["paths"] and spec["openapi"].startswith("3.")


def test_a_restarted_service_reuses_the_generated_token(served, tmp_path):
    repo = Repo(tmp_path / "other")
    repo.write({"Mlfile": '[target.a]\ncmd = "echo a > a.txt"\nouts = ["a.txt"]\n'})
    repo.commit("a")
    first = Service(repo)
    first.stop()
    second = Service(repo)
    try:
        assert second.token == first.token
    finally:
        second.stop()
    env_svc = Service(repo, env={"MLMAKE_SERVE_TOKEN": "from-the-environment"})
    try:
        assert env_svc.token == "from-the-environment"
        assert env_svc.call("GET", "/api/runs", token=first.token)[0] == 401
        assert env_svc.call("GET", "/api/runs")[0] == 200
    finally:
        env_svc.stop()


# -- triggered runs --------------------------------------------------------------------------
def test_a_trigger_of_the_built_head_executes_nothing(served):
    svc = served["service"]
    status, queued = svc.call("POST", "/api/endpoints/retrain/runs")
    assert status == 202 and queued["status"] == "queued"
    assert len(queued["id"]) >= 8 and queued["url"] == f"/api/runs/{queued['id']}"
    run = svc.wait(queued["id"])
    assert run["status"] == "succeeded", run
    assert ran(run) == set() and run["summary"]["ran"] == 0
    assert run["trigger"] == "api" and run["commit"] == served["head"]
    assert run["endpoint"] == "retrain" and run["params"] == {}
    history = svc.get("/api/runs?limit=100")
    assert history[0]["id"] == queued["id"]
    for entry in history:
        assert {"id", "status", "trigger", "commit", "started"} <= set(entry)
    assert "cli" in {e["trigger"] for e in history}  # the builds of the fixture
    assert all(len(e["commit"]) == 40 for e in history if e["commit"])


def test_an_override_reruns_only_the_targets_that_use_it_and_serves_their_output(served):
    svc = served["service"]
    run = svc.wait(svc.trigger("retrain", params={"train.lr": 0.5}))
    assert run["status"] == "succeeded", run
    assert ran(run) == {"train", "evaluate"}
    assert run["params"] == {"train.lr": 0.5}
    train = next(t for t in run["targets"] if t["name"] == "train")
    assert train["duration"] >= 0.5 and "model.txt" in train["outs"]
    status, model = svc.call("GET", f"/api/runs/{run['id']}/outputs/model.txt", raw=True)
    assert status == 200 and model == b"lr=0.5\nraw data, not in Git\n"
    status, a = svc.call("GET", f"/api/runs/{run['id']}/outputs/shards/a.txt", raw=True)
    assert status == 200 and a == b"a\n"
    listing = svc.get(f"/api/runs/{run['id']}/outputs/shards")
    assert sorted(e["path"] for e in listing["listing"]) == ["a.txt", "sub/b.txt"]
    status, metrics = svc.call("GET", f"/api/runs/{run['id']}/outputs/metrics/eval.json")
    assert status == 200 and metrics == {"chars": len(model)}
    assert svc.call("GET", f"/api/runs/{run['id']}/outputs/nope.txt")[0] == 404
    status, log = svc.call("GET", f"/api/runs/{run['id']}/log?target=evaluate", raw=True)
    assert status == 200
    status, log = svc.call("GET", f"/api/runs/{run['id']}/log", raw=True)
    assert status == 200 and b"==> train (ran" in log and b"==> evaluate (ran" in log


def test_an_old_rev_is_rebuilt_from_the_cache_byte_for_byte(served):
    svc = served["service"]
    run = svc.wait(svc.trigger("retrain", rev="v1"))
    assert run["status"] == "succeeded" and ran(run) == set()
    assert run["commit"] == served["v1"]
    status, model = svc.call("GET", f"/api/runs/{run['id']}/outputs/model.txt", raw=True)
    assert status == 200 and model == served["v1_model"]


def test_a_failing_run_is_reported_and_the_service_keeps_answering(served):
    svc = served["service"]
    run = svc.wait(svc.trigger("broken"))
    assert run["status"] == "failed" and run["summary"]["failed"] == 1
    boom = next(t for t in run["targets"] if t["name"] == "boom")
    assert boom["outcome"] == "failed" and boom["exit_code"] == 3
    status, log = svc.call("GET", f"/api/runs/{run['id']}/log?target=boom", raw=True)
    assert status == 200 and log == b"about to fail\n"
    assert svc.get("/api/endpoints")[0]["name"] == "retrain"
    assert svc.wait(svc.trigger("retrain"))["status"] == "succeeded"


def test_two_triggers_with_different_overrides_run_at_once(served):
    svc = served["service"]
    a, b = svc.trigger("retrain", params={"train.lr": 0.7}), \
        svc.trigger("retrain", params={"train.lr": 0.9})
    ra, rb = svc.wait(a), svc.wait(b)
    assert ra["status"] == rb["status"] == "succeeded"
    assert ran(ra) == ran(rb) == {"train", "evaluate"}
    for run, lr in ((ra, "0.7"), (rb, "0.9")):
        model = svc.call("GET", f"/api/runs/{run['id']}/outputs/model.txt", raw=True)[1]
        assert model.startswith(f"lr={lr}\n".encode())
    ta = next(t for t in ra["targets"] if t["name"] == "train")
    tb = next(t for t in rb["targets"] if t["name"] == "train")
    assert ta["started"] < tb["started"] + tb["duration"] and \
        tb["started"] < ta["started"] + ta["duration"], "--jobs 2 ran them one after another"


def test_two_runs_that_need_the_same_key_share_one_build(served):
    svc = served["service"]
    ids = [svc.trigger("retrain", params={"train.lr": 0.33}) for _ in range(2)]
    runs = [svc.wait(i) for i in ids]
    assert all(r["status"] == "succeeded" for r in runs)
    trains = sorted(outcomes(r)["train"] for r in runs)
    assert trains == ["ran", "reused"]


def test_an_integer_is_accepted_where_the_param_is_a_float(served):
    svc = served["service"]
    run = svc.wait(svc.trigger("retrain", params={"train.lr": 2, "train.note": "second"}))
    assert run["status"] == "succeeded" and run["params"] == {"train.lr": 2,
                                                              "train.note": "second"}


@pytest.mark.parametrize("method,path,body,status,names", [
    ("POST", "/api/endpoints/nope/runs", {}, 404, "'nope'"),
    ("GET", "/api/runs/20990101-000000-deadbeef", None, 404, "'20990101-000000-deadbeef'"),
    ("GET", "/api/runs/20990101-000000-deadbeef/log", None, 404, "20990101-000000-deadbeef"),
    ("GET", "/api/nothing", None, 404, "/api/nothing"),
    ("POST", "/api/endpoints/retrain/runs", {"params": {"train.epochs": 5}}, 400,
     "'train.epochs'"),
    ("POST", "/api/endpoints/retrain/runs", {"params": {"prepare.seed": 1}}, 400,
     "'prepare.seed'"),
    ("POST", "/api/endpoints/retrain/runs", {"params": {"train.lr": "fast"}}, 400,
     "'train.lr' must be a number"),
    ("POST", "/api/endpoints/retrain/runs", {"params": {"train.lr": True}}, 400,
     "'train.lr' must be a number"),
    ("POST", "/api/endpoints/retrain/runs", {"params": {"train.note": 5}}, 400,
     "'train.note' must be a string"),
    ("POST", "/api/endpoints/retrain/runs", {"rev": "v9"}, 400, "'v9'"),
    ("POST", "/api/endpoints/retrain/runs", {"params": [1]}, 400, "params"),
    ("POST", "/api/endpoints/retrain/runs", {"revision": "v1"}, 400, "'revision'"),
])
def test_bad_requests_are_refused_naming_the_problem_and_nothing_runs(served, method, path,
                                                                       body, status, names):
    svc = served["service"]
    before = len(svc.get("/api/runs?limit=10000"))
    got, data = svc.call(method, path, body)
    assert got == status, data
    assert names in data["error"] and "detail" in data
    assert len(svc.get("/api/runs?limit=10000")) == before
    assert not os.listdir(served["repo"].path / ".mlmake" / "worktrees") \
        if (served["repo"].path / ".mlmake" / "worktrees").exists() else True


# -- views for the page ----------------------------------------------------------------------
def test_graph_has_every_target_with_its_state_and_the_running_flag(served):
    svc = served["service"]
    graph = svc.get("/api/graph")
    nodes = {n["name"]: n for n in graph["nodes"]}
    assert set(nodes) == {"prepare", "train", "evaluate", "shards", "boom"}
    assert nodes["train"]["state"] == "uptodate" and nodes["boom"]["state"] == "stale"
    assert {"from": "prepare", "to": "train", "kind": "data"} in graph["edges"]
    assert not any(n["running"] for n in nodes.values())
    run_id = svc.trigger("retrain", params={"train.lr": 0.61})
    seen_running = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not seen_running:
        node = next(n for n in svc.get("/api/graph")["nodes"] if n["name"] == "train")
        seen_running = node["running"] and run_id in node["running_runs"]
    assert seen_running
    svc.wait(run_id)
    node = next(n for n in svc.get("/api/graph")["nodes"] if n["name"] == "train")
    assert not node["running"] and node["last"]["run"] == run_id


def test_events_stream_runs_and_targets_live(served):
    svc = served["service"]
    req = urllib.request.Request(svc.url + "/api/events",
                                 headers={"Authorization": f"Bearer {svc.token}"})
    events: list[tuple[str, dict[str, Any]]] = []
    resp = urllib.request.urlopen(req, timeout=30)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    run_id = svc.trigger("retrain", params={"train.lr": 0.62})
    kind = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            events.append((kind, json.loads(line[6:])))
            if kind == "run" and events[-1][1]["id"] == run_id and \
                    events[-1][1]["status"] == "succeeded":
                break
    resp.close()
    statuses = [d["status"] for k, d in events if k == "run" and d["id"] == run_id]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"
    targets = [(d["target"], d["status"]) for k, d in events if k == "target"
               and d["run"] == run_id]
    assert ("train", "running") in targets and ("train", "ran") in targets
    status, _ = svc.call("GET", "/api/events", token=None)
    assert status == 401


def test_metrics_across_the_branch_oldest_first(served):
    svc = served["service"]
    data = svc.get("/api/metrics?limit=10")
    assert data["branch"] == "main" and data["metrics_files"] == ["metrics/eval.json"]
    assert [c["sha"] for c in data["commits"]] == [served["v1"], served["head"]]
    first, second = data["commits"]
    assert first["params"]["train.lr"] == 0.1 and second["params"]["train.lr"] == 0.2
    assert first["subject"] == "v1" and len(first["short"]) == 7 and first["date"]
    assert first["metrics"]["metrics/eval.json"]["chars"] > 0
    assert data["keys"]["metrics/eval.json"] == ["chars"]
    assert [c["sha"] for c in svc.get("/api/metrics?limit=1")["commits"]] == [served["head"]]


def test_experiments_are_the_rows_of_exp_show_with_the_columns_that_differ(repo):
    repo.write(PROJECT)
    assert repo.mlmake("evaluate").code == 0
    repo.commit("baseline")
    r = repo.mlmake("exp", "run", "evaluate", "-S", "train.lr=0.5,0.05", "--name", "lr")
    assert r.code == 0, r.text
    svc = Service(repo)
    try:
        status, body = svc.call("GET", "/api/experiments", token=None)
        assert status == 401 and "bearer token" in body["error"]
        assert svc.call("GET", "/api/experiments", token="wrong")[0] == 401
        data = svc.get("/api/experiments")
        shown = repo.mlmake("exp", "show", "--json")
        assert shown.code == 0, shown.text
        assert data["rows"] == shown.json()
        assert [(r["name"], r["kind"]) for r in data["rows"]] == [
            ("workspace", "workspace"), ("baseline", "baseline"), ("lr-1", "experiment"),
            ("lr-2", "experiment")]
        assert data["error"] is None
        assert set(data["params"]) == {"train.lr", "train.note", "train.epochs"}
        assert data["metrics"] == [{"path": "metrics/eval.json", "key": "chars"}]
        # lr 0.5 wrote one character fewer into the model than 0.05 and the baseline's 0.1
        assert data["changed"] == {"params": ["train.lr"],
                                   "metrics": [{"path": "metrics/eval.json", "key": "chars"}]}
        assert "/api/experiments" in svc.get("/api/openapi.json")["paths"]
    finally:
        svc.stop()


def test_schedules_list_is_empty_without_schedule_tables(served):
    assert served["service"].get("/api/schedules") == []


# -- the CLI client --------------------------------------------------------------------------
def test_mlmake_trigger_queues_and_waits_for_a_run(served):
    repo = served["repo"]
    r = repo.mlmake("trigger", "retrain", "--param", "train.lr=0.1", "--wait")
    assert r.code == 0, r.text
    assert "succeeded" in r.out
    r = repo.mlmake("trigger", "retrain", "-p", "train.lr=0.44", "--json")
    assert r.code == 0 and r.json()["status"] == "queued"
    assert served["service"].wait(r.json()["id"])["params"] == {"train.lr": 0.44}
    r = repo.mlmake("trigger", "broken", "--wait")
    assert r.code == 1 and "failed" in r.out
    r = repo.mlmake("trigger", "nope")
    assert r.code == 2 and "unknown endpoint 'nope'" in r.err
    r = repo.mlmake("trigger", "retrain", "--token", "wrong")
    assert r.code == 2 and "refused the token" in r.err


def test_the_work_tree_index_and_lock_are_never_touched(served):
    repo = served["repo"]
    svc = served["service"]
    for run in svc.get("/api/runs?limit=1000"):
        if run["status"] in ("queued", "running"):
            svc.wait(run["id"])
    assert snapshot(repo.path) == served["before"]
    assert repo.git("status", "--porcelain", "--ignored") == served["status"]
    assert repo.git("rev-parse", "HEAD").strip() == served["head"]
    assert len(repo.git("worktree", "list").splitlines()) == 1
    assert os.listdir(repo.path / ".mlmake" / "worktrees") == []


# -- stopping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_running_builds_and_cleans_up(repo, tmp_path, sig):
    pidfile = tmp_path / "slow.pid"
    repo.write({"Mlfile": f"""
        [target.slow]
        cmd = "echo $$ > {pidfile}; sleep 60; echo done > slow.txt"
        outs = ["slow.txt"]

        [endpoint.slow]
        targets = ["slow"]
    """})
    repo.commit("slow")
    svc = Service(repo)
    first, second = svc.trigger("slow"), svc.trigger("slow")
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    assert svc.stop(sig) == 0
    assert time.monotonic() - t0 < 15
    assert "stopped" in "".join(iter_lines(svc))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert os.listdir(repo.path / ".mlmake" / "worktrees") == []
    assert len(repo.git("worktree", "list").splitlines()) == 1
    from mlmake.project import Project

    runs = Project(str(repo.path)).runs_store
    assert runs.build(first)["status"] == "interrupted"
    assert runs.build(second)["status"] == "interrupted"
    assert repo.mlmake("status").code == 1  # the project lock is free, nothing half-written


def test_a_bad_schedule_exits_2_before_serving(repo):
    repo.write({"Mlfile": """
        [target.a]
        cmd = "echo a > a.txt"
        outs = ["a.txt"]

        [endpoint.a]
        targets = ["a"]

        [schedule.often]
        endpoint = "a"
        every = "soon"
    """})
    repo.commit("bad schedule")
    r = repo.mlmake("serve", "--port", "0", timeout=30)
    assert r.code == 2
    assert "[schedule.often] every 'soon' is not a duration" in r.err


# -- schedules ---------------------------------------------------------------------------------
def test_schedules_fire_on_time_on_commit_and_on_new_data(repo):
    repo.write({
        "Mlfile": """
            [target.stamp]
            cmd = "echo built > stamp.txt"
            outs = ["stamp.txt"]

            [target.code]
            cmd = "cp src.txt code.txt"
            deps = ["src.txt"]
            outs = ["code.txt"]

            [target.ingest]
            cmd = "ls inbox > listing.txt"
            deps = ["inbox"]
            outs = ["listing.txt"]

            [endpoint.stamp]
            targets = ["stamp"]

            [endpoint.code]
            targets = ["code"]
            rev = "main"

            [endpoint.ingest]
            targets = ["ingest"]

            [schedule.tick]
            endpoint = "stamp"
            every = "2s"

            [schedule.pushed]
            endpoint = "code"
            on_commit = "main"
            poll = "0.5s"

            [schedule.inbox]
            endpoint = "ingest"
            watch = ["inbox"]
            poll = "0.5s"

            [schedule.nightly]
            endpoint = "stamp"
            cron = "0 3 * * *"
        """,
        "src.txt": "version 1\n",
        ".gitignore": "inbox/\n",
        "inbox/first.csv": "1\n",
    })
    repo.commit("scheduled")
    svc = Service(repo, "--jobs", "2")
    try:
        listed = {s["name"]: s for s in svc.get("/api/schedules")}
        assert {n: s["kind"] for n, s in listed.items()} == {
            "tick": "every", "pushed": "on_commit", "inbox": "watch", "nightly": "cron"}
        assert listed["nightly"]["spec"] == "0 3 * * *"
        assert time.time() < listed["nightly"]["next"] <= time.time() + 86400
        assert listed["tick"]["next"] <= time.time() + 2.5

        new = repo.path / "inbox" / "second.csv"
        new.write_text("2\n")
        repo.write({"src.txt": "version 2\n"})
        sha = repo.commit("version 2")

        def runs_of(name: str) -> list[dict[str, Any]]:
            return [r for r in svc.get("/api/runs?limit=1000")
                    if r["trigger"] == f"schedule:{name}"]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len([r for r in runs_of("tick") if r["status"] == "succeeded"]) >= 2 and \
                    any(r["status"] == "succeeded" for r in runs_of("pushed")) and \
                    any(r["status"] == "succeeded" for r in runs_of("inbox")):
                break
            time.sleep(0.2)
        ticks = sorted((r for r in runs_of("tick") if r["status"] == "succeeded"),
                       key=lambda r: r["started"])
        assert len(ticks) >= 2
        assert ticks[0]["summary"]["ran"] == 1
        assert all(t["summary"]["ran"] == 0 for t in ticks[1:])

        pushed = runs_of("pushed")
        assert len(pushed) == 1 and pushed[0]["commit"] == sha
        code = svc.call("GET", f"/api/runs/{pushed[0]['id']}/outputs/code.txt", raw=True)[1]
        assert code == b"version 2\n"

        inbox = [r for r in runs_of("inbox") if r["status"] == "succeeded"]
        assert inbox
        listing = svc.call("GET", f"/api/runs/{inbox[-1]['id']}/outputs/listing.txt",
                           raw=True)[1]
        assert b"second.csv" in listing
        after = {s["name"]: s for s in svc.get("/api/schedules")}
        assert after["tick"]["last_run"] in {t["id"] for t in runs_of("tick")}
        assert after["pushed"]["last_run"] == pushed[0]["id"]
    finally:
        svc.stop()


# -- the Python API --------------------------------------------------------------------------
def test_project_trigger_runs_an_endpoint_in_this_process(repo):
    from mlmake import Project
    from mlmake.errors import UsageError

    repo.write(PROJECT)
    repo.commit("project")
    p = Project(str(repo.path))
    run_id = p.trigger("retrain", {"train.lr": 0.3})
    build = p.runs_store.build(run_id)
    assert build["status"] == "succeeded" and build["trigger"] == "api"
    assert build["params"] == {"train.lr": 0.3} and build["endpoint"] == "retrain"
    assert not repo.exists("model.txt")  # built in a worktree, not here
    with pytest.raises(UsageError, match="'train.epochs' is not allowed"):
        p.trigger("retrain", {"train.epochs": 1})
