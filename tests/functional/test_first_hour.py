"""What a make or DVC user meets in the first hour: global flags anywhere, typed Mlfile values,
status and run agreeing, -B and --force-only, reasons worth reading, gc naming what it removes,
checkout and metrics, and runs made on a dirty work tree."""

from __future__ import annotations

import json
import os

import pytest

PIPELINE = """
[target.gen]
cmd = "python -c \\"open('raw.txt','w').write('raw\\\\n')\\""
outs = ["raw.txt"]

[target.prepare]
cmd = "python -c \\"open('prep.txt','w').write(open('raw.txt').read().upper())\\""
deps = ["raw.txt"]
outs = ["prep.txt"]

[target.train]
cmd = "python train.py"
deps = ["train.py", "prep.txt", "acc.txt"]
outs = ["model.txt"]
metrics = ["metrics.json"]
"""

TRAIN = """
import json, sys
acc = float(open("acc.txt").read())
open("model.txt", "w").write(open("prep.txt").read() + f"model {acc}\\n")
json.dump({"acc": acc}, open("metrics.json", "w"))
"""


@pytest.fixture
def pipe(repo):
    repo.write({"Mlfile": PIPELINE, "train.py": TRAIN, "acc.txt": "0.5"})
    return repo


def _ran(repo, build_index: int = 0) -> list[str]:
    """Targets whose command ran in the newest build (or an older one by index)."""
    runs = repo.runs()
    builds = list(dict.fromkeys(r["build"] for r in runs))
    return sorted(r["target"] for r in runs
                  if r["build"] == builds[build_index] and r["outcome"] == "ran")


# -- 1. global flags anywhere ----------------------------------------------------------------
def test_global_flags_go_before_or_after_the_subcommand_and_the_targets(pipe):
    r = pipe.mlmake("-B", "-q")
    assert r.code == 0, r.text
    assert r.out.strip().startswith("ran 3 ·") and "[" not in r.out  # -q: the summary only
    r = pipe.mlmake("train", "-v")
    assert r.code == 0, r.text
    assert "= train up to date" in r.out  # -v lists up-to-date targets
    r = pipe.mlmake("-Bq", "prepare")
    assert r.code == 0 and r.out.strip().startswith("ran 2 ·"), r.text
    sub = pipe.path.parent / "elsewhere"
    sub.mkdir()
    for args in (("status", "-C", str(pipe.path)), ("status", f"--directory={pipe.path}"),
                 ("-C", str(pipe.path), "status")):
        r = pipe.mlmake(*args, "-q")
        assert r.code == 0 and r.out == "", (args, r.text)
    # a subcommand's own option of the same letter keeps its meaning: commit -f is --force
    r = pipe.mlmake("commit", "-f", "gen")
    assert r.code == 0 and "recorded gen" in r.out, r.text
    r = pipe.mlmake("status", "-q", "-x")
    assert r.code == 2 and "No such option" in r.err


# -- 2. types checked, not coerced ------------------------------------------------------------
def test_a_string_where_a_list_belongs_exits_2_naming_file_line_and_fix(repo):
    repo.write({"Mlfile": '[target.a]\ncmd = "echo x > x"\n\nouts = "x"\n'})
    r = repo.mlmake()
    assert r.code == 2, r.text
    assert r.err == ('error: Mlfile:4: target \'a\': outs must be a list of strings, not a '
                     'string. Write outs = ["x"].\n')
    assert not repo.exists("x") and not repo.exists("Mlfile.lock")


def test_a_list_cmd_is_an_argv_run_without_a_shell(repo):
    repo.write({"Mlfile": """
        [target.a]
        cmd = ["python", "-c", "import sys; open('out.txt','w').write(repr(sys.argv[1:]))",
               "$HOME", "a b", "*"]
        outs = ["out.txt"]
    """})
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert repo.read("out.txt") == "['$HOME', 'a b', '*']"  # nothing expanded or split
    repo.write({"Mlfile": '[target.a]\ncmd = ["echo hi", "echo there"]\n'})
    r = repo.mlmake()
    assert r.code == 2
    assert "Mlfile:2:" in r.err and "exec form" in r.err
    assert 'cmd = "echo hi && echo there"' in r.err


# -- 3. status and run agree on resources -------------------------------------------------------
def test_status_and_dry_run_refuse_resources_no_machine_here_has_as_run_does(repo):
    repo.write({"Mlfile": '[target.gen]\ncmd = "true"\n\n[target.big]\ncmd = "true"\n'
                          'resources = { cpus = 4096 }\n'})
    results = {args: repo.mlmake(*args) for args in (("run",), ("status",), ("-n",),
                                                      ("status", "--json"))}
    for args, r in results.items():
        assert r.code == 2, (args, r.text)
        assert r.err == results[("run",)].err, args
    assert results[("run",)].err.startswith("error: Mlfile:4: target 'big' asks for 4096 CPUs")
    assert not repo.exists("Mlfile.lock")


# -- 4. -B and --force-only -----------------------------------------------------------------------
def test_force_reruns_the_closure_and_force_only_just_the_named_targets(pipe):
    assert pipe.mlmake().code == 0
    help_text = pipe.mlmake("run", "--help").out
    assert "everything they depend on" in " ".join(help_text.split())
    assert "--force-only" in help_text
    r = pipe.mlmake("-B", "train")
    assert r.code == 0, r.text
    assert _ran(pipe) == ["gen", "prepare", "train"]
    r = pipe.mlmake("--force-only", "train")
    assert r.code == 0, r.text
    assert _ran(pipe) == ["train"]
    r = pipe.mlmake("-n", "--force-only", "prepare")
    assert r.code == 0 and "would run: prepare" in r.out and "gen" not in r.out, r.out
    # upstream is restored, not rerun, when its outs are gone
    os.unlink(pipe.path / "raw.txt")
    r = pipe.mlmake("--force-only", "prepare")
    assert r.code == 0, r.text
    assert _ran(pipe) == ["prepare"] and pipe.read("raw.txt") == "raw\n"


# -- 5. reasons worth reading ---------------------------------------------------------------------
def test_a_never_built_target_gets_one_line(pipe):
    r = pipe.mlmake("status")
    assert r.code == 1
    assert r.out.splitlines() == ["stale: gen", "    never built", "stale: prepare",
                                  "    never built", "stale: train", "    never built",
                                  "3 of 3 targets stale"]
    verbose = pipe.mlmake("status", "-v").out
    assert "dep missing: prep.txt" in verbose and "upstream 'prepare' is stale" in verbose


def test_an_environment_change_says_what_changed(repo):
    repo.write({"Mlfile": """
        [env.tools]
        requirements = "req.txt"
        python = "3.11"
        [env.box]
        image = "python:3.11-slim"
        [target.a]
        cmd = "true"
        env = "tools"
        [target.b]
        cmd = "true"
        env = "box"
    """, "req.txt": "numpy==1.26\nsix\n"})
    r = repo.mlmake("commit")  # recorded as built, without building the environments
    assert r.code == 0, r.text
    repo.write({"req.txt": "numpy==2.0\nsix\n"})
    repo.write({"Mlfile": repo.read("Mlfile").replace('"3.11"', '"3.12"')
                .replace("3.11-slim", "3.12-slim")})
    out = repo.mlmake("status").out
    assert ("environment 'tools' changed: Python 3.11 → 3.12; req.txt: -numpy==1.26, "
            "+numpy==2.0") in out, out
    assert "environment 'box' changed: image python:3.11-slim → python:3.12-slim" in out, out
    reasons = repo.mlmake("status", "--json").json()["targets"]["b"]["reasons"]
    assert reasons[0]["detail"] == "image python:3.11-slim → python:3.12-slim"


def test_an_unknown_revision_is_named_once(pipe):
    pipe.commit("start")
    r = pipe.mlmake("checkout", "no-such-rev")
    assert r.code == 2
    assert r.err.count("no-such-rev") == 1, r.err


# -- 6. gc names what it removes ------------------------------------------------------------------
def test_gc_names_path_target_and_commit_of_what_it_removes(pipe):
    pipe.write({"acc.txt": "0.5"})
    assert pipe.mlmake().code == 0
    first = pipe.commit("first")
    pipe.write({"acc.txt": "0.75"})
    assert pipe.mlmake().code == 0
    pipe.commit("second")
    dry = pipe.mlmake("gc", "--dry-run")
    assert dry.code == 0, dry.text
    lines = [f"would remove metrics.json (train, commit {first[:10]}): 12 B in 1 object",
             f"would remove model.txt (train, commit {first[:10]}): 14 B in 1 object",
             "would remove 2 objects (26 B), kept 4; 1 run-cache entries dropped"]
    assert dry.out.splitlines() == lines, dry.out
    items = pipe.mlmake("gc", "-n", "--json").json()["items"]
    assert items == [{"path": p, "target": "train", "commit": first, "objects": 1, "bytes": n}
                     for p, n in (("metrics.json", 12), ("model.txt", 14))]
    real = pipe.mlmake("gc")
    assert real.out.splitlines() == [x.replace("would remove", "removed") for x in lines]
    assert pipe.mlmake("gc", "-n").out.splitlines() == [
        "would remove 0 objects (0 B), kept 4; 0 run-cache entries dropped"]


# -- 7. checkout and metrics -----------------------------------------------------------------------
def test_checkout_says_metrics_stay_and_metrics_flag_brings_them(pipe):
    pipe.write({"acc.txt": "0.5"})
    assert pipe.mlmake().code == 0
    pipe.commit("first")
    pipe.write({"acc.txt": "0.75"})
    assert pipe.mlmake().code == 0
    pipe.commit("second")
    r = pipe.mlmake("checkout", "HEAD~1")
    assert r.code == 0, r.text
    assert "model 0.5" in pipe.read("model.txt")
    assert json.loads(pipe.read("metrics.json")) == {"acc": 0.75}  # left as Git has it
    assert "metrics files (metrics.json) are committed to Git and were left as they are" \
        in r.err
    assert "mlmake checkout HEAD~1 --metrics" in r.err
    r = pipe.mlmake("checkout", "HEAD~1", "--metrics")
    assert r.code == 0, r.text
    assert "restored metrics.json (from Git)" in r.out and "note:" not in r.err
    assert json.loads(pipe.read("metrics.json")) == {"acc": 0.5}
    assert "model 0.5" in pipe.read("model.txt")
    # a metrics file edited by hand is not overwritten
    pipe.mlmake("checkout", "HEAD", "--metrics")
    pipe.write({"metrics.json": '{"acc": 0.99}'})
    r = pipe.mlmake("checkout", "HEAD~1", "--metrics")
    assert r.code == 2 and "'metrics.json' was modified" in r.err, r.text
    assert json.loads(pipe.read("metrics.json")) == {"acc": 0.99}


# -- 9. runs made on a dirty work tree ---------------------------------------------------------------
def test_runs_flags_a_build_made_on_a_dirty_work_tree(pipe):
    pipe.commit("code")
    assert pipe.mlmake().code == 0
    sha = pipe.commit("built")
    assert pipe.mlmake("-B", "gen").code == 0  # the lock and metrics a build writes don't count
    pipe.write({"train.py": TRAIN + "\n# an edit\n"})
    assert pipe.mlmake("train").code == 0
    out = pipe.mlmake("runs").out
    rows = [line for line in out.splitlines() if " ran " in line]
    assert f"{sha[:10]}+" in rows[0] and "+" not in rows[1].split(sha[:10])[1][:1], out
    assert "uncommitted changes" in out
    recs = pipe.runs()
    assert [r["dirty"] for r in recs[:2]] == [True, False]
