"""Rebuild rules through the real CLI: content hashing, minimal reruns, matrix, -n, -k, -B."""

from __future__ import annotations

import json
import os
import time

import pytest

PIPELINE = {
    "raw.csv": "a,b\n1,2\n",
    "params.toml": """
        [prepare]
        split = 0.5
        [train]
        lr = 0.1
        [unused]
        x = 1
    """,
    "src/prepare.sh": "mkdir -p data/prepared && cp raw.csv data/prepared/train.csv\n",
    "Mlfile": """
        [project]
        default = ["evaluate"]

        [target.prepare]
        cmd = "sh src/prepare.sh"
        deps = ["src/prepare.sh", "raw.csv"]
        params = ["prepare"]
        outs = ["data/prepared/"]

        [target.train]
        matrix = { model = ["rf", "gbt"], seed = [0, 1] }
        cmd = "mkdir -p models && cat data/prepared/train.csv > models/${model}-${seed}.txt && echo ${model} ${seed} ${train.lr} >> models/${model}-${seed}.txt"
        deps = ["data/prepared/"]
        params = ["train"]
        outs = ["models/${model}-${seed}.txt"]

        [target.evaluate]
        cmd = "cat models/*.txt | wc -l > score.txt && echo '{\\"lines\\": 1}' > metrics.json"
        deps = ["models/"]
        outs = ["score.txt"]
        metrics = ["metrics.json"]
    """,
}
ALL = {"prepare", "train@rf-0", "train@rf-1", "train@gbt-0", "train@gbt-1", "evaluate"}


def ran(repo, result) -> set[str]:
    """Targets executed by the build that printed `result`."""
    return {line.split()[1] for line in result.out.splitlines() if line.startswith("✓ ")}


@pytest.fixture
def built(repo):
    repo.write(PIPELINE)
    repo.commit("pipeline")
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert ran(repo, r) == ALL
    assert "ran 6 · reused 0 · up to date 0 · failed 0" in r.out
    return repo


def test_second_run_is_a_no_op(built):
    r = built.mlmake()
    assert r.code == 0
    assert ran(built, r) == set()
    assert "ran 0 · reused 0 · up to date 6 · failed 0" in r.out
    assert built.mlmake("status").code == 0


def test_touched_deps_rerun_nothing(built):
    future = time.time() + 5
    for f in ("raw.csv", "src/prepare.sh", "params.toml"):
        os.utime(built.path / f, (future, future))
    assert built.mlmake("status").code == 0
    assert ran(built, built.mlmake()) == set()


def test_changed_dep_reruns_it_and_its_downstream_only(built):
    built.write({"raw.csv": "a,b\n3,4\n"})
    st = built.mlmake("status")
    assert st.code == 1
    assert "dep changed: raw.csv" in st.out
    r = built.mlmake()
    assert r.code == 0
    assert ran(built, r) == ALL


def test_changed_param_reruns_only_targets_that_list_it(built):
    built.write({"params.toml": PIPELINE["params.toml"].replace("lr = 0.1", "lr = 0.2")})
    st = built.mlmake("status")
    assert "param train.lr: 0.1 → 0.2" in st.out
    r = built.mlmake()
    assert ran(built, r) == {"train@rf-0", "train@rf-1", "train@gbt-0", "train@gbt-1",
                             "evaluate"}


def test_param_the_target_does_not_list_reruns_nothing(built):
    built.write({"params.toml": PIPELINE["params.toml"].replace("x = 1", "x = 2")})
    assert built.mlmake("status").code == 0
    assert ran(built, built.mlmake()) == set()


def test_early_cutoff_when_upstream_output_is_byte_identical(built):
    # a comment in the script changes prepare's key but not its output
    built.write({"src/prepare.sh": PIPELINE["src/prepare.sh"] + "# tidy\n"})
    r = built.mlmake()
    assert ran(built, r) == {"prepare"}
    assert "up to date 5" in r.out


@pytest.mark.parametrize("damage", ["delete", "modify"])
def test_deleted_or_modified_out_makes_the_target_stale(built, damage):
    path = built.path / "score.txt"
    if damage == "delete":
        path.unlink()
        reason = "out missing: score.txt"
    else:
        os.chmod(path, 0o644)
        path.write_text("tampered\n")
        reason = "out modified: score.txt"
    st = built.mlmake("status")
    assert st.code == 1 and reason in st.out
    r = built.mlmake()
    assert r.code == 0, r.text
    assert built.read("score.txt").strip() == "12"
    assert built.mlmake("status").code == 0


def test_matrix_variant_and_base_selection(built):
    built.write({"params.toml": PIPELINE["params.toml"].replace("lr = 0.1", "lr = 0.3")})
    r = built.mlmake("train@gbt-1")
    assert ran(built, r) == {"train@gbt-1"}
    r = built.mlmake("train")
    assert ran(built, r) == {"train@rf-0", "train@rf-1", "train@gbt-0"}
    assert built.mlmake("status", "train").code == 0
    assert built.mlmake("status", "evaluate").code == 1


def test_an_out_path_selects_its_producer(built):
    built.write({"params.toml": PIPELINE["params.toml"].replace("lr = 0.1", "lr = 0.3")})
    assert ran(built, built.mlmake("models/rf-1.txt")) == {"train@rf-1"}


def test_dry_run_runs_nothing_and_exits_zero(built):
    built.write({"raw.csv": "changed\n"})
    before = built.read("score.txt")
    r = built.mlmake("-n")
    assert r.code == 0
    assert "would run: prepare" in r.out and "dep changed: raw.csv" in r.out
    assert built.read("score.txt") == before
    assert built.mlmake("status").code == 1


def test_force_rebuilds_selected_targets(built):
    r = built.mlmake("-B", "prepare")
    assert ran(built, r) == {"prepare"}
    r = built.mlmake("-B")
    assert ran(built, r) == ALL


def test_status_json_names_reasons(built):
    built.write({"params.toml": PIPELINE["params.toml"].replace("lr = 0.1", "lr = 0.2")})
    r = built.mlmake("status", "--json")
    assert r.code == 1
    data = r.json()
    assert set(data["stale"]) == ALL - {"prepare"}
    reasons = data["targets"]["train@rf-0"]["reasons"]
    assert {"kind": "param", "subject": "train.lr", "old": 0.1, "new": 0.2,
            "message": "param train.lr: 0.1 → 0.2"} in reasons
    assert data["targets"]["evaluate"]["reasons"][0]["kind"] == "upstream"


def test_lock_file_is_sorted_json_and_gitignore_lists_outs(built):
    text = built.read("Mlfile.lock")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert data["version"] == 1 and set(data["targets"]) == ALL
    ignore = built.read(".gitignore")
    assert "/data/prepared" in ignore and "/models/rf-0.txt" in ignore
    assert "metrics.json" not in ignore  # metrics are committed
    assert built.read(".mlmake/.gitignore").strip().endswith("*")
    assert "Mlfile.lock" in built.git("status", "--porcelain")
    assert ".mlmake" not in built.git("status", "--porcelain")


def test_always_target_runs_every_time(repo):
    repo.write({"Mlfile": """
        [target.stamp]
        cmd = "date +%s%N > stamp.txt"
        outs = ["stamp.txt"]
        always = true
    """})
    assert ran(repo, repo.mlmake()) == {"stamp"}
    assert ran(repo, repo.mlmake()) == {"stamp"}
    assert "always = true" in repo.mlmake("status").out


def test_after_orders_without_making_stale(repo):
    repo.write({"a.txt": "a", "Mlfile": """
        [target.first]
        cmd = "cp a.txt first.txt"
        deps = ["a.txt"]
        outs = ["first.txt"]
        [target.second]
        cmd = "test -f first.txt && echo ok > second.txt"
        outs = ["second.txt"]
        after = ["first"]
    """})
    r = repo.mlmake("-j", "2", "second")
    assert r.code == 0, r.text
    repo.write({"a.txt": "b"})
    r = repo.mlmake("second")
    assert ran(repo, r) == {"first"}


def test_wdir_runs_the_command_there(repo):
    repo.write({"sub/in.txt": "x", "Mlfile": """
        [target.w]
        cmd = "pwd > where.txt"
        wdir = "sub"
        deps = ["sub/in.txt"]
        outs = ["sub/where.txt"]
    """})
    assert repo.mlmake().code == 0
    assert repo.read("sub/where.txt").strip().endswith("/sub")


def test_glob_deps_rebuild_when_a_matching_file_changes(repo):
    repo.write({"src/a.py": "1", "src/pkg/b.py": "2", "src/notes.txt": "n", "Mlfile": """
        [target.lint]
        cmd = "ls src > lint.txt"
        deps = ["src/**/*.py"]
        outs = ["lint.txt"]
    """})
    assert repo.mlmake().code == 0
    repo.write({"src/notes.txt": "changed"})
    assert repo.mlmake("status").code == 0
    repo.write({"src/pkg/b.py": "3"})
    st = repo.mlmake("status")
    assert st.code == 1 and "dep changed: src/**/*.py" in st.out


def test_values_put_into_cmd_are_shell_quoted(repo):
    repo.write({"params.toml": '[msg]\ntext = "it\'s $HOME; rm -rf /"\n', "Mlfile": """
        [target.echo]
        cmd = "printf '%s' ${msg.text} > out.txt"
        outs = ["out.txt"]
    """})
    assert repo.mlmake().code == 0, repo.mlmake().text
    assert repo.read("out.txt") == "it's $HOME; rm -rf /"


def test_a_command_that_does_not_write_its_out_fails(repo):
    repo.write({"Mlfile": """
        [target.lazy]
        cmd = "true"
        outs = ["never.txt"]
    """})
    r = repo.mlmake()
    assert r.code == 1
    assert "did not write 'never.txt'" in r.err
    assert not repo.exists("Mlfile.lock")
