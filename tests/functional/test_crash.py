"""Faults a run must survive: killed runs (strays, temp files), corrupt caches, remotes, locks,
run records and stat caches, a full or read-only cache disk, and concurrent runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MLMAKE, Repo

PIPE = {
    "raw.txt": "hello\n",
    "Mlfile": """
        [target.prep]
        cmd = "mkdir -p prep && for i in 1 2 3; do cat raw.txt > prep/p$i.txt; done"
        deps = ["raw.txt"]
        outs = ["prep/"]

        [target.train]
        cmd = "cat prep/p1.txt prep/p2.txt > model.bin && echo trained >> model.bin"
        deps = ["prep/"]
        outs = ["model.bin"]
    """,
}


def lock(repo: Repo) -> dict:
    return json.loads(repo.read("Mlfile.lock"))["targets"]


def object_path(repo: Repo, oid: str) -> Path:
    return repo.path / ".mlmake" / "cache" / oid[:2] / oid[2:]


def executed(r) -> set[str]:
    return {line.split()[1] for line in r.out.splitlines() if line.startswith("✓ ")
            and " ran " in line}


@pytest.fixture
def built(repo: Repo) -> Repo:
    repo.write(PIPE)
    repo.commit("pipeline")
    r = repo.mlmake()
    assert r.code == 0, r.text
    return repo


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- a killed run ---------------------------------------------------------------------------
def test_the_processes_of_a_killed_run_die_or_are_stopped_before_the_next_build(repo: Repo):
    repo.write({"Mlfile": """
        [target.slow]
        cmd = "(sleep 2; echo v1 > late.txt) & echo $! > bg.pid; echo $$ > sh.pid; sleep 30"
        outs = ["out.txt"]
    """})
    p = subprocess.Popen(MLMAKE, cwd=repo.path, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (repo.exists("bg.pid") and repo.exists("sh.pid")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    sh, bg = int(repo.read("sh.pid")), int(repo.read("bg.pid"))
    time.sleep(0.3)
    assert not alive(sh)  # the command's shell died with mlmake
    assert alive(bg)  # what it started in the background did not, yet
    repo.write({"Mlfile": """
        [target.slow]
        cmd = "echo v2 > out.txt"
        outs = ["out.txt"]
    """})
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert "stopping 3 process(es) left running by an earlier mlmake run" in r.err  # (and
    # the sleeps)
    assert not alive(bg)
    time.sleep(2.2)
    assert not repo.exists("late.txt")  # the stray never wrote into the work tree
    assert repo.read("out.txt") == "v2\n"
    assert not os.listdir(repo.path / ".mlmake" / "procs")


def test_temp_files_a_killed_run_left_are_removed_by_the_next(built: Repo):
    dead = subprocess.run(["true"]).returncode or 999_999  # no such pid
    rec = lock(built)["train"]["outs"]["model.bin"]["hash"]
    obj = object_path(built, rec)
    leftovers = [Path(f"{obj}.mlmake-tmp-{dead}-1-abcd"),
                 built.path / f"Mlfile.lock.mlmake-tmp-{dead}-1-abcd",
                 built.path / f"model.bin.mlmake-tmp-{dead}-2-abcd",
                 built.path / "prep" / f"p1.txt.mlmake-tmp-{dead}-3-abcd"]
    for p in leftovers:
        p.write_text("half")
    live = Path(f"{obj}.mlmake-tmp-{os.getppid()}-1-abcd")  # a live writer's: kept
    live.write_text("in progress")
    (built.path / ".mlmake" / "run.active").write_text(f"{dead}\n")  # its holder died
    r = built.mlmake()
    assert r.code == 0, r.text
    assert "removed 4 temporary file(s)" in r.err
    assert not any(p.exists() for p in leftovers)
    assert live.exists()
    assert not (built.path / ".mlmake" / "run.active").exists()
    live.unlink()


def test_outs_a_killed_run_left_only_in_the_work_tree_are_stored_again(built: Repo):
    import shutil

    shutil.rmtree(built.path / ".mlmake" / "cache")  # killed after the command, before the store
    r = built.mlmake()
    assert r.code == 0 and "up to date 2" in r.out, r.text
    (built.path / "model.bin").unlink()
    shutil.rmtree(built.path / "prep")
    r = built.mlmake("checkout")
    assert r.code == 0, r.text
    assert built.read("model.bin") == "hello\nhello\ntrained\n"
    assert built.mlmake("status").code == 0


def test_a_second_run_waits_and_no_wait_exits_2(repo: Repo):
    repo.write({"Mlfile": """
        [target.slow]
        cmd = "sleep 1.5 && echo done > out.txt"
        outs = ["out.txt"]
    """})
    first = subprocess.Popen(MLMAKE, cwd=repo.path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (repo.path / ".mlmake" / "run.active").exists():  # it holds the project
        assert time.monotonic() < deadline
        time.sleep(0.02)
    busy = repo.mlmake("--no-wait")
    assert busy.code == 2 and "another mlmake run" in busy.err and "Traceback" not in busy.err
    second = repo.mlmake()
    assert first.wait() == 0
    assert second.code == 0 and "waiting for another mlmake run" in second.err


# -- corruption -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_local_object_is_detected_removed_and_the_target_reruns(built: Repo,
                                                                           damage: str):
    rec = lock(built)["train"]["outs"]["model.bin"]["hash"]
    good = built.read("model.bin")
    (built.path / "model.bin").unlink()
    obj = object_path(built, rec)
    os.chmod(obj, 0o644)
    data = obj.read_bytes()
    obj.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:] if damage == "flip" else data[:-4])
    r = built.mlmake()
    assert r.code == 0, r.text
    assert "the cached copy of 'model.bin' is corrupt" in r.err
    assert executed(r) == {"train"}
    assert built.read("model.bin") == good
    assert object_path(built, rec).read_text() == good  # stored again, intact


@pytest.mark.parametrize("garble, line", [
    (lambda t: t.replace('"hash": "', '"hash": 12, "x": "', 1), "hash"),
    (lambda t: t.replace('"outs": {', '"outs": [], "y": {', 1), "outs"),
    (lambda t: t.replace('"key": "', '"key": null, "z": "', 1), "key"),
    (lambda t: t.replace('"type": "dir"', '"type": "folder"', 1), "type"),
])
def test_a_lock_with_wrong_types_names_the_line_and_the_fix(built: Repo, garble, line: str):
    text = garble(built.read("Mlfile.lock"))
    built.write({"Mlfile.lock": text})
    want = next(i for i, s in enumerate(text.splitlines(), 1) if f'"{line}":' in s)
    for args in ((), ("status",)):
        r = built.mlmake(*args)
        assert r.code == 2, r.text
        assert f"Mlfile.lock:{want}: the lock file is malformed" in r.err
        assert "git checkout -- Mlfile.lock" in r.err and "Traceback" not in r.text
    assert built.read("Mlfile.lock") == text  # nothing changed


def test_garbled_json_in_the_lock_names_the_line(built: Repo):
    built.write({"Mlfile.lock": built.read("Mlfile.lock")[:-30]})
    r = built.mlmake("status")
    assert r.code == 2 and "Mlfile.lock:" in r.err and "invalid JSON" in r.err
    assert "Traceback" not in r.text


def test_garbled_run_records_are_set_aside_with_a_warning(built: Repo):
    db = built.path / ".mlmake" / "runs.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 200)
    r = built.mlmake("-B")
    assert r.code == 0, r.text
    assert "run records" in r.err and "were unreadable" in r.err and "moved to" in r.err
    assert "Traceback" not in r.text
    assert {x["target"] for x in built.runs()} == {"prep", "train"}
    assert [p.name for p in db.parent.glob("runs.db.corrupt-*")]
    sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()


@pytest.mark.parametrize("garbage", [b"", b"\x00garbage\xff" * 50, b"\xfb"])
def test_a_garbled_stat_cache_is_rebuilt_never_trusted(built: Repo, garbage: bytes):
    state = built.path / ".mlmake"
    for name in ("statcache", "statcache.files"):
        (state / name).write_bytes(garbage)
    r = built.mlmake("status")
    assert r.code == 0, r.text
    os.chmod(built.path / "model.bin", 0o644)
    (built.path / "model.bin").write_text("edited\n")
    r = built.mlmake("status")
    assert r.code == 1 and "model.bin" in r.out
    r = built.mlmake()
    assert r.code == 0 and built.read("model.bin") != "edited\n"
    assert built.mlmake("status").code == 0


def with_dir_remote(repo: Repo, remote: Path) -> None:
    repo.write({"Mlfile": f'[project]\nremote = "team"\n[remote.team]\nurl = "{remote}"\n'
                + PIPE["Mlfile"]})


def test_push_replaces_a_corrupt_remote_object_that_a_pull_found(repo: Repo, tmp_path: Path):
    remote = tmp_path / "team-cache"
    repo.write(PIPE)
    with_dir_remote(repo, remote)
    repo.commit("pipeline")
    assert repo.mlmake().code == 0
    assert repo.mlmake("push").code == 0
    rec = lock(repo)["train"]["outs"]["model.bin"]["hash"]
    loose = remote / "objects" / rec[:2] / rec[2:]
    loose.write_bytes(b"tampered" + loose.read_bytes())
    repo.commit("lock")
    other = Repo.__new__(Repo)
    other.path = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(other.path)], check=True)
    r = other.mlmake("pull")
    assert r.code != 0 and "corrupt" in r.err and "Traceback" not in r.text
    r = repo.mlmake("push")  # the clone with a good copy
    assert r.code == 0, r.text
    assert "replaced 1 corrupt object(s) on 'team'" in r.err
    r = other.mlmake("pull")
    assert r.code == 0, r.text
    assert other.read("model.bin") == repo.read("model.bin")
    assert repo.mlmake("push").err.count("replaced") == 0  # said once


def test_the_next_push_removes_what_a_killed_upload_left_on_a_directory_remote(
        repo: Repo, tmp_path: Path):
    import socket

    remote = tmp_path / "team-cache"
    repo.write(PIPE)
    with_dir_remote(repo, remote)
    assert repo.mlmake().code == 0 and repo.mlmake("push").code == 0
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-_")[:40]
    dead = remote / "staging" / f"abc.mlmake-tmp-999999999-1-ab@{host}"
    dead.write_text("half an upload")
    other = remote / "staging" / f"abc.mlmake-tmp-{os.getppid()}-1-ab@{host}"
    other.write_text("a live upload")
    assert repo.mlmake("push").code == 0
    assert not dead.exists() and other.exists()


def test_doctor_repairs_the_local_cache_and_the_remote(repo: Repo, tmp_path: Path):
    remote = tmp_path / "team-cache"
    repo.write(PIPE)
    with_dir_remote(repo, remote)
    repo.commit("pipeline")
    assert repo.mlmake().code == 0 and repo.mlmake("push").code == 0
    recs = lock(repo)
    model = recs["train"]["outs"]["model.bin"]["hash"]
    loose = remote / "objects" / model[:2] / model[2:]
    loose.write_bytes(loose.read_bytes()[:-3])  # truncated on the remote
    prep = [p for p in (repo.path / ".mlmake" / "cache").rglob("*") if p.is_file()
            and not p.name.endswith(".dir") and p.parent.name + p.name != model][0]
    os.chmod(prep, 0o644)
    prep.write_bytes(b"X" + prep.read_bytes()[1:])  # a flipped byte in the local cache
    r = repo.mlmake("doctor")
    assert r.code == 0, r.text
    assert f"removed corrupt object {prep.parent.name + prep.name}" in r.out
    assert f"replaced corrupt object {model}" in r.out
    assert "1 corrupt removed" in r.out and "1 corrupt replaced" in r.out
    r = repo.mlmake("doctor")
    assert r.code == 0 and "0 corrupt removed" in r.out and "0 corrupt replaced" in r.out
    assert repo.mlmake("prep", "train").code == 0 and repo.mlmake("status").code == 0


def test_doctor_says_what_it_cannot_repair(repo: Repo, tmp_path: Path):
    remote = tmp_path / "team-cache"
    repo.write(PIPE)
    with_dir_remote(repo, remote)
    repo.commit("pipeline")
    assert repo.mlmake().code == 0 and repo.mlmake("push").code == 0
    model = lock(repo)["train"]["outs"]["model.bin"]["hash"]
    loose = remote / "objects" / model[:2] / model[2:]
    loose.write_bytes(b"bad")
    os.chmod(object_path(repo, model), 0o644)
    object_path(repo, model).write_bytes(b"also bad")
    r = repo.mlmake("doctor")
    assert r.code == 1
    assert f"remote 'team' holds a corrupt copy of {model}" in r.err and "mlmake push" in r.err
    assert "model.bin" in r.out  # the out now lacks its object: named


# -- full and read-only cache disks --------------------------------------------------------
def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


BIG = {
    "Mlfile": """
        [target.big]
        cmd = "head -c ${size.n} /dev/zero | tr '\\\\0' x > big.bin"
        params = ["size"]
        outs = ["big.bin"]
    """,
}


@pytest.fixture
def small_cache(repo: Repo):
    """A project whose cache lives on a 1 MB tmpfs."""
    repo.write({**BIG, "params.toml": "[size]\nn = 100000\n"})
    repo.commit("pipeline")
    cache = repo.path / ".mlmake" / "cache"
    mount_tmpfs(cache, "1m")
    try:
        yield repo, cache
    finally:
        subprocess.run(["umount", "-l", str(cache)])


def test_a_full_cache_disk_fails_the_target_naming_the_path_and_the_space(small_cache):
    repo, cache = small_cache
    assert repo.mlmake().code == 0
    old_lock, old_out = repo.read("Mlfile.lock"), repo.read("big.bin")
    repo.write({"params.toml": "[size]\nn = 3000000\n"})
    r = repo.mlmake()
    assert r.code == 1, r.text
    assert f"no space left on the device of the cache {cache}" in r.err
    assert "'big.bin' (2.9 MB needed" in r.err and "Traceback" not in r.text
    assert repo.read("Mlfile.lock") == old_lock
    assert repo.read("big.bin") == old_out  # the old out put back from the cache
    assert not [p for p in cache.rglob("*") if "tmp" in p.name]
    subprocess.run(["mount", "-o", "remount,size=8m", str(cache)], check=True)
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert len(repo.read("big.bin")) == 3_000_000 and repo.mlmake("status").code == 0


def test_a_read_only_cache_fails_the_target_and_keeps_the_old_lock(small_cache):
    repo, cache = small_cache
    assert repo.mlmake().code == 0
    old_lock, old_out = repo.read("Mlfile.lock"), repo.read("big.bin")
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    repo.write({"params.toml": "[size]\nn = 200\n"})
    r = repo.mlmake()
    assert r.code == 1, r.text
    assert f"the cache {cache} is not writable" in r.err and "'big.bin'" in r.err
    assert "Traceback" not in r.text
    assert repo.read("Mlfile.lock") == old_lock and repo.read("big.bin") == old_out
    subprocess.run(["mount", "-o", "remount,rw", str(cache)], check=True)
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert repo.read("big.bin") == "x" * 200

