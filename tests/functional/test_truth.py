"""The work tree tells the truth: every out holds the bytes its lock entry records, a hand
edit is never lost, and a run with param overrides caches only what its command saw."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo

CHAIN = {
    "Mlfile": """
        [target.prepare]
        cmd = "mkdir -p data/prepared && cat raw.txt > data/prepared/rows.txt"
        deps = ["raw.txt"]
        outs = ["data/prepared/"]

        [target.featurize]
        cmd = "cat data/prepared/rows.txt data/prepared/rows.txt > features.txt"
        deps = ["data/prepared/"]
        outs = ["features.txt"]

        [target.train]
        cmd = "wc -l < features.txt > model.txt"
        deps = ["features.txt"]
        outs = ["model.txt"]
    """,
    "raw.txt": "a\nb\n",
}


def lock(repo: Repo) -> dict[str, Any]:
    return json.loads(repo.read("Mlfile.lock"))["targets"]


def outs_bytes(repo: Repo) -> dict[str, bytes]:
    """Every out file of the chain as it is in the work tree (missing ones absent)."""
    found = {}
    for rel in ("data/prepared/rows.txt", "features.txt", "model.txt"):
        p = repo.path / rel
        if p.exists():
            found[rel] = p.read_bytes()
    return found


def ran(r) -> set[str]:
    return {line.split()[1] for line in r.out.splitlines() if line.startswith("✓ ")}


def restored(r) -> set[str]:
    return {line.split()[1] for line in r.out.splitlines() if line.startswith("↺ ")}


@pytest.fixture
def chain(repo: Repo) -> Repo:
    repo.write(CHAIN)
    r = repo.mlmake()
    assert r.code == 0, r.text
    repo.commit("built")
    return repo


def replace_file(path: Path, data: bytes) -> None:
    """Write as an editor does: a new file in place of the old one (never through a link)."""
    path.unlink()
    path.write_bytes(data)


def test_a_deleted_upstream_out_is_stale_and_comes_back_with_nothing_run(chain):
    good = outs_bytes(chain)
    (chain.path / "features.txt").unlink()
    r = chain.mlmake("status")
    assert r.code == 1 and "not materialized: featurize" in r.out
    assert "out missing: features.txt" in r.out
    assert "train" not in r.out  # its key does not depend on the work tree's copy
    js = chain.mlmake("status", "--json").json()
    assert js["restore"] == ["featurize"] and js["run"] == []
    assert {"kind": "out-missing", "subject": "features.txt",
            "message": "out missing: features.txt"} in js["targets"]["featurize"]["reasons"]
    r = chain.mlmake("-n")
    assert r.code == 0 and "would restore: featurize" in r.out and "would run" not in r.out
    r = chain.mlmake()
    assert r.code == 0, r.text
    assert ran(r) == set() and restored(r) == {"featurize"} and "↺ featurize restored" in r.out
    assert outs_bytes(chain) == good
    assert chain.mlmake("status").code == 0


def test_a_hand_edited_out_is_restored_and_the_edit_kept_in_the_cache(chain, tmp_path):
    good = outs_bytes(chain)
    replace_file(chain.path / "features.txt", b"edited by hand\n")
    r = chain.mlmake("status")
    assert r.code == 1 and "modified: featurize" in r.out and "out modified: features.txt" in r.out
    r = chain.mlmake()
    assert r.code == 0, r.text
    assert ran(r) == set() and restored(r) == {"featurize"}
    assert outs_bytes(chain) == good
    assert "'features.txt' was modified in the work tree" in r.err
    oid = r.err.split("--object ")[1].split()[0]
    mine = tmp_path / "mine.txt"
    g = chain.mlmake("get", "--object", oid, "-o", str(mine))
    assert g.code == 0, g.text
    assert mine.read_bytes() == b"edited by hand\n"
    assert chain.mlmake("status").code == 0


def test_an_edit_written_through_the_hard_link_is_kept_and_the_target_rebuilt(chain, tmp_path):
    good = outs_bytes(chain)
    p = chain.path / "features.txt"
    if os.stat(p).st_nlink < 2:
        pytest.skip("outs are not hard links on this filesystem")
    os.chmod(p, 0o644)  # root writes through read-only files anyway; a user would need this
    p.write_bytes(b"written in place\n")
    r = chain.mlmake()
    assert r.code == 0, r.text
    assert outs_bytes(chain) == good
    oid = r.err.split("--object ")[1].split()[0]
    mine = tmp_path / "mine.txt"
    assert chain.mlmake("get", "--object", oid, "-o", str(mine)).code == 0
    assert mine.read_bytes() == b"written in place\n"
    assert chain.mlmake("status").code == 0


def test_a_reverted_input_leaves_no_stale_upstream_out(chain):
    v1 = outs_bytes(chain)
    chain.write({"raw.txt": "a\nb\nc\n"})
    assert chain.mlmake().code == 0
    v2 = outs_bytes(chain)
    assert v2 != v1
    chain.write({"raw.txt": "a\nb\n"})
    r = chain.mlmake()
    assert r.code == 0 and ran(r) == set()
    assert outs_bytes(chain) == v1  # the upstream outs too, not only the final one
    assert chain.mlmake("status").code == 0


def test_building_one_target_materializes_its_whole_closure(chain):
    good = outs_bytes(chain)
    shutil.rmtree(chain.path / "data")
    (chain.path / "features.txt").unlink()
    (chain.path / "model.txt").unlink()
    r = chain.mlmake("train")
    assert r.code == 0 and ran(r) == set()
    assert outs_bytes(chain) == good


def test_lean_mode_leaves_unneeded_outs_absent_never_stale(chain):
    good = outs_bytes(chain)
    chain.write({"raw.txt": "x\n"})
    assert chain.mlmake().code == 0
    chain.write({"raw.txt": "a\nb\n"})
    r = chain.mlmake("--lean")
    assert r.code == 0 and ran(r) == set()
    now = outs_bytes(chain)
    assert now["model.txt"] == good["model.txt"]
    for rel in ("data/prepared/rows.txt", "features.txt"):  # absent or right, never other bytes
        assert now.get(rel, good[rel]) == good[rel]
    r = chain.mlmake("status", "--lean")
    assert r.code == 0, r.text
    chain.write({"Mlfile": CHAIN["Mlfile"].replace("[target.prepare]",
                                                   "[project]\nmaterialize = \"requested\"\n"
                                                   "[target.prepare]")})
    assert chain.mlmake("status").code == 0  # the [project] setting means the same
    chain.write({"Mlfile": CHAIN["Mlfile"]})
    r = chain.mlmake("checkout")
    assert r.code == 0 and outs_bytes(chain) == good


def test_a_fresh_clone_without_the_cache_says_what_is_not_materialized(chain, tmp_path):
    mate = Repo.__new__(Repo)
    mate.path = tmp_path / "mate"
    chain.git("clone", "-q", str(chain.path), str(mate.path))
    r = mate.mlmake("status")
    assert r.code == 1
    assert "not materialized: prepare" in r.out and "stale:" not in r.out
    assert "mlmake pull" in r.out


# -- served runs with overrides -------------------------------------------------------------
SERVED = {
    "Mlfile": """
        [project]
        params = ["params.toml", "more.json", "extra.yaml"]

        [target.train]
        cmd = "python train.py"
        deps = ["train.py"]
        params = ["train"]
        outs = ["model.txt"]

        [endpoint.retrain]
        targets = ["train"]
        params = ["train.lr", "train.depth", "train.kind"]
    """,
    "params.toml": """
        # learning settings
        [train]
        lr = 0.001   # the step size
        epochs = 3
    """,
    "more.json": '{\n  "train": {\n    "depth": 2\n  }\n}\n',
    "extra.yaml": "train:\n  kind: rf\n  seed: 1\n",
    "train.py": """
        import json, tomllib, yaml
        p = tomllib.load(open("params.toml", "rb"))["train"]
        d = json.load(open("more.json"))["train"]
        y = yaml.safe_load(open("extra.yaml"))["train"]
        open("model.txt", "w").write(
            f"lr={p['lr']} epochs={p['epochs']} depth={d['depth']} kind={y['kind']}\\n")
    """,
}


def test_a_served_override_is_what_the_command_reads_and_what_the_key_covers(repo):
    import sys

    if sys.version_info < (3, 11):
        pytest.skip("the script reads TOML with tomllib (Python 3.11+)")
    from mlmake import Project

    repo.write(SERVED)
    repo.commit("project")
    p = Project(str(repo.path))
    run_id = p.trigger("retrain", {"train.lr": 0.003, "train.depth": 5, "train.kind": "gbt"})
    build = p.runs_store.build(run_id)
    assert build["status"] == "succeeded", build
    outs = [r for r in p.runs_store.runs("train", 10) if r.build == run_id][0].outs
    oid = outs["model.txt"]["hash"]
    dest = repo.path.parent / "served-model.txt"
    p.get_object(oid, str(dest))
    assert dest.read_text() == "lr=0.003 epochs=3 depth=5 kind=gbt\n"
    assert repo.git("status", "--porcelain") == ""  # the user's params files are untouched
    # the same values set by hand reuse exactly that result, which is right
    repo.write({"params.toml": SERVED["params.toml"].replace("0.001", "0.003"),
                "more.json": SERVED["more.json"].replace("2", "5"),
                "extra.yaml": SERVED["extra.yaml"].replace("rf", "gbt")})
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert "↺ train reused" in r.out
    assert repo.read("model.txt") == "lr=0.003 epochs=3 depth=5 kind=gbt\n"
    # and the values the files had still build what those files say
    repo.write({k: SERVED[k] for k in ("params.toml", "more.json", "extra.yaml")})
    r = repo.mlmake()
    assert r.code == 0 and repo.read("model.txt") == "lr=0.001 epochs=3 depth=2 kind=rf\n"


def test_overrides_keep_the_params_file_comments_and_other_keys(tmp_path):
    from mlmake.params import write_overrides

    (tmp_path / "params.toml").write_text("# top\n[train]\nlr = 0.1  # step\nn = 3\n")
    target = tmp_path / "real.toml"
    target.write_text("[a]\nb = 1\n")
    os.symlink(target, tmp_path / "linked.toml")  # an untracked file linked into a worktree
    changed = write_overrides(str(tmp_path), ("params.toml", "linked.toml"),
                              {"train.lr": 0.5, "a.b": 2})
    assert changed == ["linked.toml", "params.toml"]
    assert (tmp_path / "params.toml").read_text() == "# top\n[train]\nlr = 0.5  # step\nn = 3\n"
    assert (tmp_path / "linked.toml").read_text() == "[a]\nb = 2\n"
    assert not os.path.islink(tmp_path / "linked.toml")
    assert target.read_text() == "[a]\nb = 1\n"  # never written through the link
