"""`mlmake exp`: experiments built in isolated worktrees, queued as grids, compared, applied,
branched, removed and shared between clones."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Repo

MLFILE = """
    [target.prepare]
    cmd = "mkdir -p build && cat data/raw.txt > build/prepared.txt"
    deps = ["data/raw.txt"]
    outs = ["build/prepared.txt"]

    [target.train]
    cmd = "echo lr=${train.lr} n=${train.n} > model.txt && cat build/prepared.txt >> model.txt"
    deps = ["build/prepared.txt"]
    params = ["train.lr", "train.n"]
    outs = ["model.txt"]

    [target.evaluate]
    cmd = "mkdir -p metrics && python3 score.py"
    deps = ["model.txt", "score.py", "params.toml"]
    metrics = ["metrics/eval.json"]
"""

PROJECT = {
    "Mlfile": MLFILE,
    "params.toml": """
        # training knobs
        [train]
        lr = 0.1
        n = 10
        note = "kept"
    """,
    "score.py": """
        import json, tomllib
        p = tomllib.load(open("params.toml", "rb"))["train"]
        json.dump({"score": round(p["lr"] * p["n"], 6)}, open("metrics/eval.json", "w"))
    """,
    ".gitignore": "data/\n",
    "data/raw.txt": "raw data, not in Git\n",
}


def fingerprint(repo: Repo) -> dict[str, str]:
    """Hashes of every file of the work tree (outside .git and .mlmake) and of the index."""
    out = {}
    for p in sorted(repo.path.rglob("*")):
        rel = p.relative_to(repo.path).as_posix()
        if p.is_file() and not rel.startswith((".git/", ".mlmake/")) or rel == ".git/index":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def built(repo: Repo) -> Repo:
    repo.write(PROJECT)
    r = repo.mlmake("-q")
    assert r.code == 0, r.text
    repo.commit("baseline")
    return repo


def show(repo: Repo, *args: str) -> dict[str, dict]:
    r = repo.mlmake("exp", "show", "--json", *args)
    assert r.code == 0, r.text
    return {row["name"]: row for row in r.json()}


def test_exp_run_records_params_and_metrics_without_touching_the_work_tree(built):
    built.write({"score.py": built.read("score.py") + "# an uncommitted edit\n"})
    before = fingerprint(built)
    status_before = built.git("status", "--porcelain")
    r = built.mlmake("exp", "run", "-S", "train.lr=0.5", "--name", "fast")
    assert r.code == 0, r.text
    assert "[fast]" in r.out and "experiment fast" in r.out
    assert fingerprint(built) == before  # work tree, lock and index byte-identical
    assert built.git("status", "--porcelain") == status_before
    assert built.git("worktree", "list").count("\n") == 1

    rows = show(built)
    fast = rows["fast"]
    assert fast["status"] == "succeeded" and fast["overrides"] == {"train.lr": 0.5}
    assert fast["params"] == {"train.lr": 0.5, "train.n": 10, "train.note": "kept"}
    assert fast["metrics"] == {"metrics/eval.json": {"score": 5.0}}
    assert rows["workspace"]["metrics"] == {"metrics/eval.json": {"score": 1.0}}
    assert rows["baseline"]["rev"] == built.git("rev-parse", "HEAD").strip()
    # the experiment's commit holds its params (comments kept) and the dirty code it ran
    params = built.git("show", f"{fast['rev']}:params.toml")
    assert "# training knobs" in params and "lr = 0.5" in params and 'note = "kept"' in params
    assert "an uncommitted edit" in built.git("show", f"{fast['rev']}:score.py")
    record = json.loads(built.git("log", "-1", "--format=%b", fast["rev"]))
    assert record["code"] and record["base"] == rows["baseline"]["rev"]
    assert "an uncommitted edit" in built.git("diff", record["base"], record["code"])
    assert set(record["outs"]) == {"prepare", "train", "evaluate"} and record["run_id"]
    assert "prepare" not in [r["target"] for r in built.runs()
                             if r["outcome"] == "ran" and r["build"] == record["run_id"]]


def test_a_2x2_grid_queued_then_started_two_at_a_time(built):
    ran_before = built.executed()
    r = built.mlmake("exp", "run", "--queue", "-S", "train.lr=0.01,0.1",
                     "-S", "train.n=10,100", "--name", "grid")
    assert r.code == 0, r.text
    assert r.out.count("queued ") == 4
    queued = show(built)
    assert [queued[f"grid-{i}"]["status"] for i in range(1, 5)] == ["queued"] * 4
    assert built.executed() == ran_before  # --queue runs nothing

    r = built.mlmake("exp", "start", "-j", "2")
    assert r.code == 0, r.text
    rows = show(built)
    combos = {(rows[f"grid-{i}"]["params"]["train.lr"], rows[f"grid-{i}"]["params"]["train.n"])
              for i in range(1, 5)}
    assert combos == {(0.01, 10), (0.01, 100), (0.1, 10), (0.1, 100)}
    for i in range(1, 5):
        row = rows[f"grid-{i}"]
        committed = json.loads(built.git("show", f"{row['rev']}:metrics/eval.json"))
        assert row["metrics"] == {"metrics/eval.json": committed}
        assert committed["score"] == pytest.approx(row["params"]["train.lr"]
                                                   * row["params"]["train.n"])
    # the shared upstream target was built once, by the first build; every experiment reused it
    assert built.executed().count("prepare") == 1
    assert all(r["status"] != "queued" for r in show(built).values())


def test_show_sorts_by_a_metric_and_prints_csv_with_changed_columns(built):
    for lr in ("0.3", "0.2"):
        assert built.mlmake("exp", "run", "-S", f"train.lr={lr}", "--name",
                            f"lr{lr[-1]}").code == 0
    r = built.mlmake("exp", "show", "--csv", "--sort-by", "score", "--sort-order", "desc")
    assert r.code == 0, r.text
    lines = r.out.splitlines()
    assert lines[0] == "experiment,rev,status,score,train.lr"  # train.n never changes
    assert [ln.split(",")[0] for ln in lines[1:]] == ["workspace", "baseline", "lr3", "lr2"]
    r = built.mlmake("exp", "show", "--csv", "--all")
    assert r.out.splitlines()[0] == "experiment,rev,status,score,train.lr,train.n,train.note"
    r = built.mlmake("exp", "show")
    assert "lr3" in r.out and "score" in r.out
    r = built.mlmake("exp", "show", "--sort-by", "nosuch")
    assert r.code == 2 and "no metric or param" in r.err
    r = built.mlmake("exp", "diff", "lr2", "lr3", "--json")
    d = r.json()
    assert {(x["key"], x["old"], x["new"]) for x in d["params"]} == {("train.lr", 0.2, 0.3)}
    assert d["metrics"][0]["change"] == pytest.approx(1.0)


@pytest.mark.parametrize("arg, message", [
    ("train.nosuch=1", "param 'train.nosuch' is not in the params files"),
    ("train.n=fast", "param 'train.n' must be an integer"),
    ("train=1", "param 'train' is a table"),
    ("train.lr", "expected KEY=VALUE"),
])
def test_bad_overrides_are_refused_and_nothing_is_queued(built, arg, message):
    r = built.mlmake("exp", "run", "--queue", "-S", arg)
    assert r.code == 2 and message in r.err, r.text
    assert [n for n, row in show(built).items() if row["kind"] != "workspace"] == ["baseline"]


def test_apply_brings_an_experiment_in_with_nothing_run(built):
    assert built.mlmake("exp", "run", "-S", "train.n=100", "--name", "big").code == 0
    ran_before = len(built.executed())
    r = built.mlmake("exp", "apply", "big")
    assert r.code == 0, r.text
    assert "n = 100" in built.read("params.toml")
    assert built.read("model.txt").startswith("lr=0.1 n=100")
    assert json.loads(built.read("metrics/eval.json")) == {"score": 10.0}
    r = built.mlmake("status")
    assert r.code == 0 and "up to date" in r.out, r.text
    assert len(built.executed()) == ran_before
    built.git("commit", "-q", "-m", "keep big")
    assert built.git("status", "--porcelain") == ""


def test_apply_refuses_to_overwrite_uncommitted_edits(built):
    assert built.mlmake("exp", "run", "-S", "train.n=100", "--name", "big").code == 0
    built.write({"params.toml": PROJECT["params.toml"].replace("kept", "mine")})
    r = built.mlmake("exp", "apply", "big")
    assert r.code == 2 and "params.toml" in r.err and "--force" in r.err
    assert "mine" in built.read("params.toml")


def test_branch_remove_and_gc_keeps_the_outs_of_kept_experiments(built):
    assert built.mlmake("exp", "run", "-S", "train.n=7", "--name", "keep").code == 0
    assert built.mlmake("exp", "run", "-S", "train.n=8", "--name", "drop").code == 0
    r = built.mlmake("exp", "branch", "keep", "exp-keep")
    assert r.code == 0, r.text
    assert "lr=0.1 n=7" not in built.git("show", "exp-keep:params.toml")
    assert "n = 7" in built.git("show", "exp-keep:params.toml")
    assert built.mlmake("exp", "branch", "keep", "exp-keep").code == 2
    r = built.mlmake("exp", "remove", "drop")
    assert r.code == 0 and "removed drop" in r.out
    assert set(show(built)) == {"workspace", "baseline", "keep"}
    r = built.mlmake("gc", "--json")
    assert r.code == 0, r.text
    built.git("branch", "-D", "exp-keep")
    r = built.mlmake("exp", "apply", "keep")  # its outs survived gc
    assert r.code == 0, r.text
    assert built.read("model.txt").startswith("lr=0.1 n=7")
    assert built.mlmake("status").code == 0


def test_experiments_travel_between_clones_and_apply_needs_no_recompute(built,
                                                                       tmp_path: Path):
    origin = shared_origin(built, tmp_path)
    assert built.mlmake("exp", "run", "-S", "train.lr=0.7", "--name", "shared").code == 0
    r = built.mlmake("exp", "push")
    assert r.code == 0 and "pushed 1 experiment" in r.out, r.text

    other = Repo(tmp_path / "other")
    other.git("remote", "add", "origin", str(origin))
    other.git("pull", "-q", "origin", "main")
    other.write({"data/raw.txt": PROJECT["data/raw.txt"]})
    r = other.mlmake("exp", "pull")
    assert r.code == 0 and "pulled 1 experiment" in r.out, r.text
    rows = show(other)
    assert rows["shared"]["metrics"] == {"metrics/eval.json": {"score": 7.0}}
    r = other.mlmake("exp", "apply", "shared")
    assert r.code == 0, r.text
    assert other.read("model.txt").startswith("lr=0.7")
    assert other.mlmake("status").code == 0
    assert other.executed() == []


def shared_origin(built: Repo, tmp_path: Path) -> Path:
    """Give `built` a remote cache `team` and a bare Git remote `origin` holding main."""
    cache = tmp_path / "team-cache"
    built.write({"Mlfile": f'[project]\nremote = "team"\n[remote.team]\nurl = "{cache}"\n'
                 + built.read("Mlfile")})
    assert built.mlmake("-q").code == 0
    built.commit("with a remote")
    origin = tmp_path / "origin.git"
    built.git("init", "-q", "--bare", "-b", "main", str(origin))
    built.git("remote", "add", "origin", str(origin))
    built.git("push", "-q", "-u", "origin", "main")
    return origin


def teammate(origin: Path, dest: Path) -> Repo:
    """A fresh `git clone` of `origin`, with the data that Git does not hold."""
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True)
    other = Repo(dest)
    other.write({"data/raw.txt": PROJECT["data/raw.txt"]})
    return other


def test_plain_push_and_pull_carry_experiments_and_apply_runs_nothing(built, tmp_path: Path):
    origin = shared_origin(built, tmp_path)
    assert built.mlmake("exp", "run", "-S", "train.lr=0.7", "--name", "shared").code == 0
    r = built.mlmake("push")
    assert r.code == 0, r.text
    assert "experiments: pushed 1 to Git remote 'origin'" in r.out, r.text
    assert "refs/mlmake/exps/shared" in built.git("ls-remote", str(origin))
    r = built.mlmake("push")  # nothing new: nothing moves
    assert r.code == 0 and "pushed 0 objects" in r.out and "pushed 0 to" in r.out, r.text

    other = teammate(origin, tmp_path / "other")
    r = other.mlmake("pull")
    assert r.code == 0, r.text
    assert "experiments: fetched 1 from Git remote 'origin'" in r.out, r.text
    assert other.git("status", "--porcelain") == ""
    rows = show(other)
    assert rows["shared"]["metrics"] == {"metrics/eval.json": {"score": 7.0}}
    assert rows["shared"]["params"]["train.lr"] == 0.7
    r = other.mlmake("exp", "apply", "shared")  # its outs come from the remote cache
    assert r.code == 0 and r.out.startswith("applied shared"), r.text
    assert other.read("model.txt").startswith("lr=0.7")
    r = other.mlmake("status")
    assert r.code == 0 and "up to date" in r.out, r.text
    assert other.executed() == []
    r = other.mlmake("pull")  # the teammate has it all now: no experiment line
    assert r.code == 0 and "experiments:" not in r.text, r.text
    r = other.mlmake("push")  # nor does pushing send A's experiment back
    assert r.code == 0 and "pushed 0 to Git remote 'origin'; 1 already there" in r.out


def test_push_without_a_git_remote_pushes_the_cache_and_says_so(built, tmp_path: Path):
    cache = tmp_path / "team-cache"
    built.write({"Mlfile": f'[project]\nremote = "team"\n[remote.team]\nurl = "{cache}"\n'
                 + built.read("Mlfile")})
    assert built.mlmake("-q").code == 0
    built.commit("with a remote")
    assert built.mlmake("exp", "run", "-S", "train.n=3", "--name", "small").code == 0
    r = built.mlmake("push", "--no-exps")
    assert r.code == 0 and "experiments" not in r.text, r.text
    r = built.mlmake("push")  # the experiment's outs had stayed behind; now they go
    assert r.code == 0, r.text
    assert "pushed 0 objects" not in r.out and "0 run-cache entries" not in r.out, r.text
    assert "experiments: 1 stay here, as this repository has no Git remote" in r.out, r.text
    r = built.mlmake("pull")
    assert r.code == 0 and "experiments" not in r.text, r.text


def test_experiments_of_the_same_name_are_never_overwritten(built, tmp_path: Path):
    origin = shared_origin(built, tmp_path)
    assert built.mlmake("exp", "run", "-S", "train.n=3", "--name", "try").code == 0
    assert built.mlmake("push").code == 0
    other = teammate(origin, tmp_path / "other")
    assert other.mlmake("-q", "pull", "--no-exps").code == 0
    assert other.mlmake("exp", "run", "-S", "train.n=5", "--name", "try").code == 0
    r = other.mlmake("pull")
    assert r.code == 0 and "warning: experiment 'try' of Git remote 'origin'" in r.err, r.text
    assert show(other)["try"]["params"]["train.n"] == 5
    r = other.mlmake("push")
    assert r.code == 1 and "warning: experiment 'try' was not pushed" in r.err, r.text
    assert "1 not pushed, their names being taken there" in r.out, r.text
    r = other.mlmake("exp", "push", "origin", "try")  # named: it replaces theirs
    assert r.code == 0, r.text
    assert built.mlmake("exp", "remove", "try").code == 0
    assert built.mlmake("pull").code == 0
    assert show(built)["try"]["params"]["train.n"] == 5


def test_a_git_remote_that_refuses_fails_push_but_not_pull(built, tmp_path: Path):
    origin = shared_origin(built, tmp_path)
    assert built.mlmake("exp", "run", "-S", "train.n=3", "--name", "small").code == 0
    gone = tmp_path / "gone.git"
    built.git("remote", "set-url", "origin", str(gone))
    r = built.mlmake("push")
    assert r.code == 6, r.text
    assert "Git remote 'origin'" in r.err and str(gone) in r.err, r.text
    assert "The cache push to 'team' is done" in r.err and "--no-exps" in r.err, r.text
    assert built.mlmake("push", "--no-exps").code == 0
    r = built.mlmake("pull")
    assert r.code == 0 and "warning: cannot list experiments" in r.err, r.text
    assert "Git remote 'origin'" in r.err, r.text
    assert origin.exists()


def trigger(repo: Repo, params: dict) -> None:
    """Run endpoint `retrain` as `mlmake serve` does for a REST call, in a subprocess."""
    code = ("import sys; from mlmake.project import Project; p = Project('.'); "
            f"rid = p.trigger('retrain', {params!r}); "
            "sys.exit(p.runs_store.build(rid)['status'] != 'succeeded')")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo.path, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_triggered_run_with_overrides_is_recorded_as_an_experiment(built):
    built.write({"Mlfile": built.read("Mlfile") + '\n[endpoint.retrain]\ntargets = ["evaluate"]'
                 '\nparams = ["train.lr"]\n'})
    built.commit("publish retrain")
    trigger(built, {"train.lr": 0.4})
    rows = [row for row in show(built).values() if row["kind"] == "experiment"]
    assert len(rows) == 1 and rows[0]["name"].startswith("retrain-")
    assert rows[0]["overrides"] == {"train.lr": 0.4}
    assert rows[0]["metrics"] == {"metrics/eval.json": {"score": 4.0}}
    trigger(built, {})  # no overrides: not an experiment
    assert len([row for row in show(built).values() if row["kind"] == "experiment"]) == 1
