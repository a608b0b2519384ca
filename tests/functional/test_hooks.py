"""Git hooks with the real git CLI: outputs follow checkouts, builds follow merges, pushes push."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Repo
from mlmake import hooks
from mlmake.runs import RunStore

PARAMS = "[train]\nlr = {lr}\nsleep = {sleep}\n"
MLFILE = """
    [target.prepare]
    cmd = "mkdir -p prep && cp raw/data.txt prep/a.txt"
    deps = ["raw/"]
    outs = ["prep/"]

    [target.train]
    cmd = "sleep ${train.sleep} && cat prep/a.txt > model.bin && echo lr=${train.lr} >> model.bin"
    deps = ["prep/"]
    params = ["train"]
    outs = ["model.bin"]
"""


def set_params(repo: Repo, lr: float, sleep: float = 0) -> None:
    repo.write({"params.toml": PARAMS.format(lr=lr, sleep=sleep)})


def build(repo: Repo) -> bytes:
    r = repo.mlmake()
    assert r.code == 0, r.text
    return (repo.path / "model.bin").read_bytes()


def model(repo: Repo) -> bytes:
    return (repo.path / "model.bin").read_bytes()


def git(repo: Repo, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git and keep its stderr, where hooks write."""
    r = subprocess.run(["git", *args], cwd=repo.path, capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=60, check=False)
    if check:
        assert r.returncode == 0, f"git {' '.join(args)}: {r.stdout}{r.stderr}"
    return r


def install(repo: Repo, *args: str) -> str:
    r = repo.mlmake("hooks", "install", *args)
    assert r.code == 0, r.text
    return r.out


def hook_files(repo: Repo, hooks_dir: str = ".git/hooks") -> dict[str, bytes]:
    d = repo.path / hooks_dir
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if not p.name.endswith(".sample")}


@pytest.fixture
def two_versions(repo: Repo) -> tuple[Repo, bytes, bytes]:
    """main: a first commit built with lr 0.1, a second built with lr 0.2; hooks installed."""
    repo.write({"Mlfile": MLFILE, "raw/data.txt": "1\n2\n"})
    set_params(repo, 0.1)
    v1 = build(repo)
    repo.commit("lr 0.1")
    set_params(repo, 0.2)
    v2 = build(repo)
    repo.commit("lr 0.2")
    assert v1 != v2
    install(repo)
    return repo, v1, v2


# -- outputs follow checkouts ------------------------------------------------------------------

def test_checkout_restores_the_outputs_of_each_commit_without_running(two_versions):
    repo, v1, v2 = two_versions
    runs_before = repo.runs()
    r = git(repo, "checkout", "-q", "HEAD~1")
    assert model(repo) == v1
    assert "mlmake: restored 1 output (model.bin)" in r.stderr
    assert repo.mlmake("status").code == 0
    git(repo, "checkout", "-q", "main")
    assert model(repo) == v2
    assert repo.runs() == runs_before  # nothing ran, nothing was even reused by a build


def test_switch_restores_and_a_new_branch_at_the_same_commit_does_nothing(two_versions):
    repo, v1, v2 = two_versions
    r = git(repo, "switch", "-c", "feature")
    assert "mlmake" not in r.stderr  # prev == new: nothing to restore, nothing said
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "switch", "-q", "main")
    assert model(repo) == v2
    git(repo, "switch", "-q", "feature")
    assert model(repo) == v1


def test_a_file_checkout_leaves_the_outputs_alone(two_versions):
    repo, _, v2 = two_versions
    r = git(repo, "checkout", "HEAD~1", "--", "Mlfile.lock")
    assert model(repo) == v2  # the hook saw flag 0 and did nothing
    assert "mlmake" not in r.stderr


def test_a_fast_forward_merge_restores_the_merged_outputs(two_versions):
    repo, v1, v2 = two_versions
    git(repo, "switch", "-q", "-c", "old", "HEAD~1")
    assert model(repo) == v1
    r = git(repo, "merge", "--ff-only", "main")
    assert "mlmake: restored 1 output" in r.stderr
    assert model(repo) == v2
    assert [r["outcome"] for r in repo.runs()] == ["ran", "ran", "ran"]  # the setup's builds


def test_a_rebase_restores_once_at_the_end(two_versions):
    repo, v1, v2 = two_versions
    git(repo, "switch", "-q", "-c", "side", "HEAD~1")
    repo.write({"README.md": "side note\n"})
    repo.commit("readme")
    assert model(repo) == v1
    # stop after replaying the README commit onto v2's commit: mid-rebase nothing churns
    r = git(repo, "-c", "sequence.editor=sed -i s/^pick/edit/", "rebase", "-i", "main")
    assert (repo.path / ".git" / "rebase-merge").is_dir()
    assert model(repo) == v1 and "mlmake" not in r.stderr
    r = git(repo, "rebase", "--continue")
    assert model(repo) == v2  # post-rewrite restored the outputs of the new HEAD
    assert r.stderr.count("mlmake: restored 1 output (model.bin)") == 1
    git(repo, "switch", "-q", "main")
    repo.write({"NOTES.md": "main note\n"})
    repo.commit("notes")
    r = git(repo, "rebase", "side")  # main's outputs are those of side's tip: nothing to do
    assert model(repo) == v2 and "mlmake: restored" not in r.stderr


def test_hooks_live_in_core_hooks_path(two_versions, tmp_path):
    repo, v1, v2 = two_versions
    repo.mlmake("hooks", "uninstall")
    absolute = tmp_path / "shared-hooks"
    for where in (".githooks", str(absolute)):
        git(repo, "config", "core.hooksPath", where)
        install(repo)
        assert "post-checkout" in hook_files(repo, where)
        git(repo, "checkout", "-q", "HEAD~1")
        assert model(repo) == v1
        git(repo, "checkout", "-q", "main")
        assert model(repo) == v2
        assert repo.mlmake("hooks", "uninstall").code == 0
        assert hook_files(repo, where) == {}
    assert not any((repo.path / ".git" / "hooks" / n).exists() for n in hooks.HOOK_NAMES)


def test_a_worktree_shares_the_hooks_of_its_repository(two_versions, tmp_path):
    repo, _, _ = two_versions
    wt = tmp_path / "wt"
    r = git(repo, "worktree", "add", "-q", str(wt), "HEAD~1")
    assert "mlmake: 2 outputs of this commit not in the cache" in r.stderr  # own cache
    status = Repo.__new__(Repo)
    status.path = wt
    states = {s["hook"]: s for s in status.mlmake("hooks", "status", "--json").json()}
    assert states["post-checkout"]["state"] == "installed"
    assert Path(states["post-checkout"]["path"]) == repo.path / ".git" / "hooks" / "post-checkout"


def test_a_project_in_a_subdirectory_is_found_by_its_hooks(repo):
    repo.write({"README.md": "before the project\n"})
    repo.commit("before")
    sub = Repo.__new__(Repo)
    sub.path = repo.path / "ml"
    sub.write({"Mlfile": MLFILE, "raw/data.txt": "1\n"})
    set_params(sub, 0.1)
    v1 = build(sub)
    repo.commit("one")
    set_params(sub, 0.2)
    build(sub)
    repo.commit("two")
    install(sub)
    assert b"-C ml hooks run" in (repo.path / ".git/hooks/post-checkout").read_bytes()
    git(repo, "checkout", "-q", "HEAD~1")
    assert model(sub) == v1
    r = git(repo, "checkout", "-q", "HEAD~1")  # ml/ did not exist yet: nothing to say
    assert r.stderr == ""


# -- builds follow merges ----------------------------------------------------------------------

def wait_for_build(path: Path, trigger: str, timeout: float = 30) -> dict:
    store = RunStore(str(path / ".mlmake" / "runs.db"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [b for b in store.builds() if b["trigger"] == trigger and b["finished"]]
        if done:
            return done[0]
        time.sleep(0.1)
    logs = sorted((path / ".mlmake" / "logs" / "hooks").glob("*.log"))
    raise AssertionError(f"no finished {trigger} build; log: "
                         f"{logs[-1].read_text() if logs else '(none)'}")


def test_pull_returns_at_once_and_the_stale_target_rebuilds_in_the_background(repo, tmp_path):
    repo.write({"Mlfile": MLFILE, "raw/data.txt": "1\n2\n"})
    set_params(repo, 0.1)
    build(repo)
    repo.commit("first")
    mate = Repo.__new__(Repo)
    mate.path = tmp_path / "mate"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(mate.path)], check=True)
    build(mate)  # a fresh clone with no cache: it builds everything
    with open(mate.path / "Mlfile", "a") as fh:
        fh.write('\n[hooks]\npost-merge = "run"\n')
    install(mate)
    set_params(repo, 0.2, sleep=3)  # committed without building: the teammate is stale
    repo.commit("lr 0.2")

    started = time.monotonic()
    r = git(mate, "pull", "-q", "--no-rebase")
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"git pull took {elapsed:.1f}s: {r.stderr}"
    assert "in the background; log: .mlmake/logs/hooks/" in r.stderr
    assert b"lr=0.1" in model(mate)  # not built yet

    b = wait_for_build(mate.path, "hook:post-merge")
    assert b["status"] == "succeeded" and b["summary"]["ran"] == 1
    assert b"lr=0.2" in model(mate)
    runs = mate.mlmake("runs")
    row = next(line for line in runs.out.splitlines() if " train " in line)
    assert "hook:post-merge" in row and " ran " in row
    assert mate.mlmake("status").code == 0


def test_a_commit_can_rebuild_in_the_background(repo):
    repo.write({"Mlfile": MLFILE + '\n[hooks]\npost-commit = ["run:train", "status"]\n',
                "raw/data.txt": "1\n"})
    set_params(repo, 0.1)
    build(repo)
    repo.commit("first")
    install(repo)
    set_params(repo, 0.3)
    repo.git("add", "-A")
    r = git(repo, "commit", "-q", "-m", "lr 0.3")
    assert "rebuilding train in the background" in r.stderr
    assert "mlmake: 1 of 2 targets stale (train); run `mlmake` to rebuild" in r.stderr
    assert wait_for_build(repo.path, "hook:post-commit")["summary"]["ran"] == 1
    assert b"lr=0.3" in model(repo)


# -- chaining, installing, uninstalling --------------------------------------------------------

CUSTOM = b"#!/bin/sh\n# a teammate's hook\r\necho \"$@\" >> custom-hook.log"  # no final newline


def test_an_existing_hook_keeps_running_and_comes_back_byte_for_byte(repo):
    repo.write({"Mlfile": MLFILE, "raw/data.txt": "1\n"})
    set_params(repo, 0.1)
    v1 = build(repo)
    first = repo.commit("first")
    set_params(repo, 0.2)
    build(repo)
    second = repo.commit("second")
    hook = repo.path / ".git" / "hooks" / "post-checkout"
    hook.write_bytes(CUSTOM)
    hook.chmod(0o750)
    out = install(repo)
    assert "runs after the existing hook, kept as post-checkout.mlmake-orig" in out

    git(repo, "checkout", "-q", "HEAD~1")
    assert repo.read("custom-hook.log") == f"{second} {first} 1\n"
    assert model(repo) == v1

    r = repo.mlmake("hooks", "uninstall")
    assert "restored the original .git/hooks/post-checkout" in r.out
    assert hook.read_bytes() == CUSTOM
    assert stat.S_IMODE(hook.stat().st_mode) == 0o750
    assert set(hook_files(repo)) == {"post-checkout"}  # the hooks mlmake created are gone


def test_installing_twice_changes_nothing(two_versions):
    repo, _, _ = two_versions
    before = hook_files(repo)
    mtimes = {n: (repo.path / ".git/hooks" / n).stat().st_mtime_ns for n in before}
    assert install(repo) == "hooks already installed; nothing changed\n"
    assert hook_files(repo) == before
    assert {n: (repo.path / ".git/hooks" / n).stat().st_mtime_ns for n in before} == mtimes
    assert set(before) == {"post-checkout", "post-merge", "post-rewrite", "pre-push"}
    assert all(data.count(hooks.BEGIN.encode()) == 1 for data in before.values())
    r = repo.mlmake("hooks", "status")
    assert r.code == 0 and "post-checkout  installed  checkout" in r.out


def test_status_says_when_hooks_are_missing(repo):
    repo.write({"Mlfile": MLFILE, "raw/data.txt": "1\n"})
    set_params(repo, 0.1)
    r = repo.mlmake("hooks", "status")
    assert r.code == 1 and "run `mlmake hooks install`" in r.out
    assert repo.mlmake("hooks", "uninstall").out == "no mlmake hooks installed; nothing changed\n"


# -- hooks never hold Git up --------------------------------------------------------------------

def test_a_broken_mlfile_warns_in_one_line_and_git_goes_on(two_versions):
    repo, _, _ = two_versions
    repo.write({"Mlfile": "[target.x\n"})
    repo.commit("broken")
    git(repo, "checkout", "-q", "HEAD~1")
    r = git(repo, "checkout", "-q", "main")
    warnings = [line for line in r.stderr.splitlines() if line.startswith("mlmake:")]
    assert len(warnings) == 1 and warnings[0].startswith("mlmake: warning: ")
    assert "Mlfile:1" in warnings[0]


def test_a_commit_without_an_mlfile_is_quietly_skipped(two_versions):
    repo, _, _ = two_versions
    git(repo, "checkout", "-q", "--orphan", "empty")
    repo.git("rm", "-rq", "--cached", ".")
    for p in ("Mlfile", "Mlfile.lock", "params.toml"):
        (repo.path / p).unlink()
    repo.commit("nothing")
    r = git(repo, "checkout", "HEAD")
    assert "mlmake" not in r.stderr


def test_a_running_build_does_not_make_checkout_wait(two_versions):
    repo, v1, v2 = two_versions
    with open(repo.path / ".mlmake" / "run.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        started = time.monotonic()
        r = git(repo, "checkout", "-q", "HEAD~1", env={hooks.TIMEOUT_ENV: "0.5"})
        assert time.monotonic() - started < 5
    assert r.returncode == 0
    assert "mlmake: warning: post-checkout checkout: another mlmake run" in r.stderr
    assert model(repo) == v2  # not restored; `mlmake checkout` does it later
    assert repo.mlmake("checkout").code == 0 and model(repo) == v1


def test_the_hook_falls_back_to_mlmake_on_path_when_its_python_is_gone(two_versions, tmp_path):
    repo, v1, v2 = two_versions
    hooks.install(str(repo.path), names=("post-checkout",), python=str(tmp_path / "gone/python"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    path = {"PATH": str(bin_dir)}
    r = git(repo, "checkout", "-q", "HEAD~1", env=path)
    assert model(repo) == v2 and "mlmake: warning: mlmake is gone" in r.stderr
    shim = bin_dir / "mlmake"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m mlmake \"$@\"\n")
    shim.chmod(0o755)
    git(repo, "checkout", "-q", "main", env=path)
    git(repo, "checkout", "-q", "HEAD~1", env=path)
    assert model(repo) == v1


# -- pre-push ---------------------------------------------------------------------------------

def test_pre_push_gives_the_existing_hook_its_stdin(two_versions, tmp_path):
    repo, _, _ = two_versions
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git(repo, "remote", "add", "origin", str(bare))
    hook = repo.path / ".git" / "hooks" / "pre-push"
    hook.write_text("#!/bin/sh\necho \"$1 $2\" > pre-push.log\ncat >> pre-push.log\n")
    hook.chmod(0o755)
    install(repo)
    git(repo, "push", "-q", "origin", "main")
    head = repo.git("rev-parse", "HEAD").strip()
    assert repo.read("pre-push.log") == (f"origin {bare}\n"
                                         f"refs/heads/main {head} refs/heads/main {'0' * 40}\n")
    hook.write_text("#!/bin/sh\nexit 3\n")  # the original refuses: the push stops
    repo.write({"README.md": "x\n"})
    repo.commit("more")
    assert git(repo, "push", "-q", "origin", "main", check=False).returncode != 0


def with_remote(repo: Repo, url: str, strict: bool = False) -> None:
    text = (repo.path / "Mlfile").read_text()
    text = f'[project]\nremote = "team"\n\n[remote.team]\nurl = "{url}"\n' + text
    if strict:
        text += "\n[hooks]\nstrict = true\n"
    (repo.path / "Mlfile").write_text(text)


@pytest.mark.parametrize("strict", [False, True])
def test_a_failed_cache_push_blocks_git_push_only_when_strict(two_versions, tmp_path, strict):
    repo, _, _ = two_versions
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the remote directory should be\n")
    with_remote(repo, str(blocker / "cache"), strict)
    repo.commit("remote")
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git(repo, "remote", "add", "origin", str(bare))
    r = git(repo, "push", "-q", "origin", "main", check=False)
    if strict:
        assert r.returncode != 0
        assert "mlmake: error: the cache push failed, so the push is blocked" in r.stderr
        assert subprocess.run(["git", "rev-parse", "-q", "--verify", "main"], cwd=bare,
                              capture_output=True, check=False).returncode != 0
    else:
        assert r.returncode == 0, r.stderr
        assert "mlmake: warning: pre-push push:" in r.stderr


def test_git_push_pushes_the_cache_and_a_fresh_clone_builds_nothing(two_versions, tmp_path):
    repo, _, v2 = two_versions
    cache = tmp_path / "team-cache"
    with_remote(repo, str(cache))
    repo.commit("share the cache")
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git(repo, "remote", "add", "origin", str(bare))
    r = git(repo, "push", "-q", "origin", "main")
    assert "mlmake: pushed the cache to 'team'" in r.stderr
    assert any(cache.rglob("*"))

    mate = Repo.__new__(Repo)
    mate.path = tmp_path / "mate"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(bare), str(mate.path)], check=True)
    r = mate.mlmake()
    assert r.code == 0, r.text
    assert mate.executed() == []
    assert model(mate) == v2

    set_params(repo, 0.3)  # one more commit on top: only the work tree's lock needs pushing
    v3 = build(repo)
    repo.commit("lr 0.3")
    r = git(repo, "push", "-q", "origin", "main")
    assert "mlmake: pushed the cache to 'team' (1 object uploaded" in r.stderr
    git(mate, "pull", "-q")
    assert mate.mlmake().code == 0
    assert mate.executed() == [] and model(mate) == v3
