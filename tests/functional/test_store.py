"""The object store, run cache and Git-linked outputs through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Repo

PIPE = {
    "params.toml": "[train]\nlr = 0.1\n",
    "raw/data.txt": "1\n2\n3\n",
    "Mlfile": """
        [target.prepare]
        cmd = "mkdir -p prep && cp raw/data.txt prep/a.txt && echo more > prep/b.txt"
        deps = ["raw/"]
        outs = ["prep/"]

        [target.train]
        cmd = "cat prep/a.txt > model.bin && echo lr=${train.lr} >> model.bin && echo '{\\"lr\\": ${train.lr}}' > metrics.json"
        deps = ["prep/"]
        params = ["train"]
        outs = ["model.bin"]
        metrics = ["metrics.json"]
    """,
}


def executed(r) -> set[str]:
    return {line.split()[1] for line in r.out.splitlines() if line.startswith("✓ ")}


def reused(r) -> set[str]:
    return {line.split()[1] for line in r.out.splitlines() if line.startswith("↺ ")}


@pytest.fixture
def repo2(repo):
    repo.write(PIPE)
    r = repo.mlmake()
    assert r.code == 0, r.text
    return repo


def set_lr(repo, lr):
    repo.write({"params.toml": f"[train]\nlr = {lr}\n"})


def test_reverting_a_param_reuses_the_first_build(repo2):
    first = (repo2.path / "model.bin").read_bytes()
    set_lr(repo2, 0.2)
    r = repo2.mlmake()
    assert executed(r) == {"train"}
    set_lr(repo2, 0.1)
    r = repo2.mlmake()
    assert r.code == 0, r.text
    assert executed(r) == set() and reused(r) == {"train"}
    assert "reused 1" in r.out
    assert (repo2.path / "model.bin").read_bytes() == first
    assert json.loads(repo2.read("metrics.json")) == {"lr": 0.1}
    assert repo2.runs()[0]["outcome"] == "reused"
    assert repo2.mlmake("status").code == 0


def test_a_deleted_out_is_restored_not_rebuilt(repo2):
    before = (repo2.path / "model.bin").read_bytes()
    shutil.rmtree(repo2.path / "prep")
    (repo2.path / "model.bin").unlink()
    r = repo2.mlmake("prepare", "train")
    assert r.code == 0, r.text
    assert executed(r) == set() and reused(r) == {"prepare", "train"}
    assert (repo2.path / "model.bin").read_bytes() == before
    assert repo2.read("prep/b.txt") == "more\n"


def test_outs_are_read_only_links_into_the_cache(repo2):
    st = os.stat(repo2.path / "model.bin")
    assert not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert st.st_nlink == 2  # the work tree file is the cache object
    assert os.stat(repo2.path / "metrics.json").st_mode & stat.S_IWUSR  # metrics stay files
    ignore = repo2.read(".gitignore")
    assert "/model.bin" in ignore and "/prep" in ignore and "metrics.json" not in ignore


def object_path(repo, rec_hash: str) -> Path:
    return repo.path / ".mlmake" / "cache" / rec_hash[:2] / rec_hash[2:]


def lock(repo) -> dict:
    return json.loads(repo.read("Mlfile.lock"))["targets"]


def test_a_persist_target_writes_to_a_private_copy(repo):
    repo.write({"Mlfile": """
        [target.log]
        cmd = "echo line >> history.txt"
        outs = ["history.txt"]
        persist = true
        always = true
    """})
    assert repo.mlmake().code == 0
    first = lock(repo)["log"]["outs"]["history.txt"]["hash"]
    obj = object_path(repo, first)
    cached = obj.read_bytes()
    assert repo.mlmake().code == 0
    assert repo.read("history.txt") == "line\nline\n"
    assert obj.read_bytes() == cached  # the first version is intact in the cache


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv to drop privileges")
def test_a_script_cannot_write_through_a_hardlinked_out_into_the_cache():
    base = Path(tempfile.mkdtemp(prefix="mlmake-perm-"))
    try:
        os.chmod(base, 0o755)
        repo = Repo(base / "repo")
        os.chmod(repo.path, 0o777)
        repo.write(PIPE)
        assert repo.mlmake().code == 0
        rec = lock(repo)["train"]["outs"]["model.bin"]["hash"]
        obj = object_path(repo, rec)
        before = obj.read_bytes()
        # the script runs as an ordinary user, as data scientists do
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "sh", "-c", f"echo corrupt >> {repo.path / 'model.bin'}"],
                           capture_output=True, text=True)
        assert r.returncode != 0 and "Permission denied" in r.stderr
        assert obj.read_bytes() == before
    finally:
        shutil.rmtree(base, ignore_errors=True)


def flip_bytes(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)


def test_a_corrupt_object_is_never_linked_and_the_target_runs_instead(repo2):
    rec = lock(repo2)["train"]["outs"]["model.bin"]["hash"]
    good = (repo2.path / "model.bin").read_bytes()
    (repo2.path / "model.bin").unlink()
    flip_bytes(object_path(repo2, rec))
    r = repo2.mlmake()
    assert r.code == 0, r.text
    assert "the cached copy of 'model.bin' is corrupt" in r.err
    assert executed(r) == {"train"}
    assert (repo2.path / "model.bin").read_bytes() == good


def git_history(repo) -> list[bytes]:
    """Three commits with lr 0.1, 0.2, 0.3; returns model.bin at each."""
    versions = []
    for lr in (0.1, 0.2, 0.3):
        set_lr(repo, lr)
        assert repo.mlmake().code == 0
        repo.commit(f"lr {lr}")
        versions.append((repo.path / "model.bin").read_bytes())
    return versions


def test_checkout_restores_any_commits_outputs_without_running(repo2):
    v = git_history(repo2)
    runs_before = len(repo2.runs())
    r = repo2.mlmake("checkout", "HEAD~2")
    assert r.code == 0, r.text
    assert "restored model.bin" in r.out
    assert (repo2.path / "model.bin").read_bytes() == v[0]
    assert repo2.git("status", "--porcelain") == ""  # tracked files untouched
    r = repo2.mlmake("checkout", "HEAD")
    assert r.code == 0 and (repo2.path / "model.bin").read_bytes() == v[2]
    assert len(repo2.runs()) == runs_before  # nothing ran
    assert repo2.mlmake("status").code == 0


def test_checkout_refuses_to_overwrite_a_hand_edited_out(repo2):
    git_history(repo2)
    path = repo2.path / "model.bin"
    os.unlink(path)
    path.write_bytes(b"my precious edits\n")
    r = repo2.mlmake("checkout", "HEAD~1")
    assert r.code == 2 and "'model.bin' was modified" in r.err and "--force" in r.err
    assert path.read_bytes() == b"my precious edits\n"
    assert repo2.mlmake("checkout", "--force", "HEAD~1").code == 0
    assert b"lr=0.2" in path.read_bytes()


def test_checkout_of_an_unknown_rev_names_it(repo2):
    repo2.commit("x")
    r = repo2.mlmake("checkout", "no-such-branch")
    assert r.code == 2 and "unknown revision 'no-such-branch'" in r.err


def test_checkout_rejects_a_corrupt_object_and_leaves_the_work_tree(repo2):
    v = git_history(repo2)
    old = json.loads(repo2.git("show", "HEAD~2:Mlfile.lock"))
    flip_bytes(object_path(repo2, old["targets"]["train"]["outs"]["model.bin"]["hash"]))
    r = repo2.mlmake("checkout", "HEAD~2")
    assert r.code == 5
    assert "the cached copy of 'model.bin' is corrupt" in r.err and "mlmake -B" in r.err
    assert (repo2.path / "model.bin").read_bytes() == v[2]


def test_get_exports_one_output_of_an_old_commit(repo2, tmp_path):
    v = git_history(repo2)
    dest = tmp_path / "old-model.bin"
    r = repo2.mlmake("get", "HEAD~2", "model.bin", "-o", str(dest))
    assert r.code == 0, r.text
    assert dest.read_bytes() == v[0]
    assert os.stat(dest).st_nlink == 1  # a copy, not a link into the cache
    inner = tmp_path / "a.txt"
    assert repo2.mlmake("get", "HEAD~1", "prep/a.txt", "-o", str(inner)).code == 0
    assert inner.read_text() == "1\n2\n3\n"
    m = tmp_path / "metrics.json"
    assert repo2.mlmake("get", "HEAD~2", "metrics.json", "-o", str(m)).code == 0
    assert json.loads(m.read_text()) == {"lr": 0.1}


def test_commit_records_a_cosmetic_edit_without_running(repo2):
    repo2.write({"raw/data.txt": "1\n2\n3\n", "raw/README": "notes\n"})
    assert repo2.mlmake("status").code == 1
    r = repo2.mlmake("commit", "prepare")
    assert r.code == 0 and "recorded prepare" in r.out
    assert repo2.mlmake("status").code == 0
    assert "✓" not in repo2.mlmake().out


def count_objects(repo) -> int:
    return sum(len(fs) for _, _, fs in os.walk(repo.path / ".mlmake" / "cache"))


def test_gc_keeps_what_locks_reference(repo2):
    v = git_history(repo2)
    set_lr(repo2, 0.9)
    assert repo2.mlmake().code == 0  # an uncommitted build: only the workspace needs it
    before = count_objects(repo2)
    dry = repo2.mlmake("gc", "--all-commits", "--dry-run", "--json").json()
    assert count_objects(repo2) == before
    assert dry["removed"] == []  # the workspace lock still references lr=0.9
    repo2.git("checkout", "-q", "--", "Mlfile.lock", "params.toml")
    assert repo2.mlmake("checkout").code == 0  # back to HEAD's outputs
    dry = repo2.mlmake("gc", "--all-commits", "--dry-run", "--json").json()
    real = repo2.mlmake("gc", "--all-commits", "--json").json()
    assert real["removed"] == dry["removed"] and len(real["removed"]) >= 1
    assert count_objects(repo2) == before - len(real["removed"])
    for i, rev in enumerate(("HEAD~2", "HEAD~1", "HEAD")):
        assert repo2.mlmake("checkout", rev).code == 0
        assert (repo2.path / "model.bin").read_bytes() == v[i]
    ws = repo2.mlmake("gc", "--json").json()  # workspace only: older commits' objects go
    assert len(ws["removed"]) >= 2
    assert repo2.mlmake("checkout", "HEAD").code == 0
    assert repo2.mlmake("checkout", "HEAD~2").code == 1  # no longer in the cache


def test_every_out_of_the_closure_is_restored_by_default(repo2):
    git_history(repo2)
    # a fresh checkout of the same commit with an empty work tree but a full cache
    shutil.rmtree(repo2.path / "prep")
    (repo2.path / "model.bin").unlink()
    assert repo2.mlmake("status").code == 1
    r = repo2.mlmake("train")
    assert r.code == 0 and executed(r) == set()
    assert "↺ prepare restored" in r.out and "↺ train restored" in r.out
    assert repo2.read("prep/a.txt") == "1\n2\n3\n" and repo2.exists("model.bin")
    assert repo2.mlmake("status", "train").code == 0


def test_lean_mode_leaves_intermediate_outputs_absent_until_needed(repo2):
    git_history(repo2)
    shutil.rmtree(repo2.path / "prep")
    (repo2.path / "model.bin").unlink()
    r = repo2.mlmake("train", "--lean")
    assert r.code == 0 and executed(r) == set()
    assert repo2.exists("model.bin") and not repo2.exists("prep")
    r = repo2.mlmake("status", "--lean", "train")
    assert r.code == 0 and "not materialized (lean): prepare: prep" in r.out
    assert repo2.mlmake("status", "train").code == 1  # by default, prep belongs there
    # once something that reads prep has to run, prep comes back first
    set_lr(repo2, 0.7)
    r = repo2.mlmake("train", "--lean")
    assert executed(r) == {"train"} and repo2.exists("prep/a.txt")
