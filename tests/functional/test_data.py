"""Data sources through the real CLI: `add`, `import`, `update`, and sources travelling with
checkout, get, gc, push, pull and fresh clones (a directory remote and a real S3 API)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from conftest import Repo
from test_remote import RemoteStore, clone, remote, with_remote  # noqa: F401 (fixture)

PIPE = {
    "Mlfile": """
        [target.count]
        cmd = "cat data/raw/*.txt | sort > summary.txt && wc -l < summary.txt > count.txt"
        deps = ["data/raw/"]
        outs = ["summary.txt", "count.txt"]
    """,
}
RAW = {f"data/raw/f{i}.txt": f"row {i}\n" for i in range(1, 4)}


def _sources(repo: Repo) -> dict[str, Any]:
    return json.loads(repo.read("Mlfile.lock")).get("sources", {})


def _replace(repo: Repo, rel: str, text: str) -> None:
    """Write a new version of a tracked file (the linked copy is read-only: replace it)."""
    p = repo.path / rel
    if p.exists():
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _raw(repo: Repo) -> dict[str, str]:
    d = repo.path / "data" / "raw"
    return {p.name: p.read_text() for p in sorted(d.iterdir())} if d.exists() else {}


def _counted_tree(repo: Repo, tree: str, count: str, files: dict[str, Any]) -> None:
    """A project whose target counts (`count > count.txt`) the files of `tree`, written long
    ago (settled: the stat cache trusts them)."""
    repo.write({"Mlfile": f"""
        [target.count]
        cmd = "{count} > count.txt"
        deps = ["{tree}/"]
        outs = ["count.txt"]
    """, **files})
    for rel in files:
        os.utime(repo.path / rel, ns=(1_600_000_000 * 10**9,) * 2)


@pytest.fixture
def tracked(repo: Repo) -> Repo:
    """A project whose raw data is tracked, built and committed (v1)."""
    repo.write({**PIPE, **RAW})
    r = repo.mlmake("add", "data/raw")
    assert r.code == 0, r.text
    assert "added data/raw/" in r.out and "3 files" in r.out
    r = repo.mlmake()
    assert r.code == 0, r.text
    repo.commit("v1")
    return repo


# -- add, status, re-add, checkout, get -------------------------------------------------------
def test_add_records_one_line_per_source_links_read_only_and_ignores_it(tracked):
    rec = _sources(tracked)["data/raw"]
    assert rec["type"] == "dir" and rec["files"] == 3 and rec["size"] == 18
    lines = [ln for ln in tracked.read("Mlfile.lock").splitlines() if "files" in ln]
    assert len(lines) == 1 and rec["hash"] in lines[0]
    assert "/data/raw" in tracked.read(".gitignore")
    assert tracked.git("ls-files", "data") == ""  # Git holds the record, not the data
    f = tracked.path / "data/raw/f1.txt"
    assert not os.stat(f).st_mode & 0o222 or os.stat(f).st_nlink == 1  # a read-only link
    assert tracked.mlmake("status").code == 0
    r = tracked.mlmake("add", "data/raw")
    assert r.code == 0 and "unchanged data/raw/" in r.out
    assert tracked.git("status", "--porcelain") == ""


def test_edited_data_is_reported_re_added_and_checkout_brings_the_old_version_back(tracked):
    v1_raw, v1_summary = _raw(tracked), tracked.read("summary.txt")
    _replace(tracked, "data/raw/f1.txt", "row one\n")
    for i in (4, 5, 6):
        _replace(tracked, f"data/raw/f{i}.txt", f"row {i}\n")
    r = tracked.mlmake("status")
    assert r.code == 1
    assert ("data data/raw/ changed: 3 files added, 1 modified — run mlmake add data/raw/ "
            "to record it") in r.out
    assert "dep changed: data/raw" in r.out
    j = tracked.mlmake("status", "--json").json()
    assert j["data"][0]["path"] == "data/raw/" and j["data"][0]["kind"] == "changed"
    r = tracked.mlmake("add", "data/raw")
    assert r.code == 0 and "updated data/raw/" in r.out, r.text
    assert _sources(tracked)["data/raw"]["files"] == 6
    assert tracked.mlmake().code == 0
    assert tracked.read("count.txt").strip() == "6"
    tracked.commit("v2")
    v2_raw = _raw(tracked)
    r = tracked.mlmake("checkout", "HEAD~1")
    assert r.code == 0, r.text
    assert _raw(tracked) == v1_raw and tracked.read("summary.txt") == v1_summary
    assert tracked.executed() == ["count", "count"]  # the two builds; the checkout ran nothing
    tracked.git("checkout", "-q", "HEAD~1")
    assert tracked.mlmake("status").code == 0
    tracked.git("checkout", "-q", "main")
    assert tracked.mlmake("checkout").code == 0
    assert _raw(tracked) == v2_raw
    dest = tracked.path.parent / "old-f1.txt"
    r = tracked.mlmake("get", "HEAD~1", "data/raw/f1.txt", "-o", str(dest))
    assert r.code == 0, r.text
    assert dest.read_text() == "row 1\n"
    whole = tracked.path.parent / "old-raw"
    assert tracked.mlmake("get", "HEAD~1", "data/raw", "-o", str(whole)).code == 0
    assert sorted(p.name for p in whole.iterdir()) == ["f1.txt", "f2.txt", "f3.txt"]


def test_a_single_file_source_and_what_add_refuses(repo):
    repo.write({"Mlfile": """
        [target.copy]
        cmd = "cp data.csv out.csv"
        deps = ["data.csv"]
        outs = ["out.csv"]
    """, "data.csv": "a,b\n1,2\n"})
    r = repo.mlmake("add", "data.csv")
    assert r.code == 0 and "added data.csv" in r.out, r.text
    assert _sources(repo)["data.csv"]["type"] == "file"
    assert repo.mlmake().code == 0
    r = repo.mlmake("add", "out.csv")
    assert r.code == 2 and "overlaps the out 'out.csv'" in r.err
    r = repo.mlmake("add", "nothing-here")
    assert r.code == 2 and "does not exist" in r.err
    r = repo.mlmake("add", str(repo.path.parent))
    assert r.code == 2 and "mlmake import" in r.err


@pytest.mark.timeout(60)  # reading a pipe would wait forever
def test_a_pipe_in_a_tree_is_left_out_and_refused_alone(repo):
    repo.write({**PIPE, **RAW})
    os.mkfifo(repo.path / "data" / "raw" / "pipe")
    assert repo.mlmake("status").code == 1
    r = repo.mlmake("add", "data/raw")
    assert r.code == 0 and "3 files" in r.out, r.text
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert repo.read("count.txt").strip() == "3"
    r = repo.mlmake("add", "data/raw/pipe")
    assert r.code == 2 and "'data/raw/pipe' is a pipe, socket or device" in r.err, r.text


def test_a_large_tree_is_moved_into_the_store_and_a_changed_file_is_picked_up(repo):
    """34 MiB: hashed by parallel workers; every file becomes its own object, no copy."""
    big = {f"data/big/{i % 4}/f{i}.bin": os.urandom(1 << 20) for i in range(34)}
    _counted_tree(repo, "data/big", "ls -R data/big | wc -l", big)
    r = repo.mlmake("add", "data/big")
    assert r.code == 0 and "added data/big/" in r.out and "34 files, 34.0 MiB" in r.out, r.text
    cache = repo.path / ".mlmake" / "cache"
    objects = {(s.st_dev, s.st_ino) for s in (p.stat() for p in cache.rglob("*") if p.is_file())}
    for rel, data in big.items():
        st = (repo.path / rel).stat()
        assert (st.st_dev, st.st_ino) in objects and st.st_nlink == 2
        assert not st.st_mode & 0o222 and (repo.path / rel).read_bytes() == data
    assert "unchanged data/big/" in repo.mlmake("add", "data/big").out
    old = _sources(repo)["data/big"]["hash"]
    _replace(repo, "data/big/0/f0.bin", "new\n")
    r = repo.mlmake("add", "data/big")
    assert r.code == 0 and "updated data/big/" in r.out, r.text
    assert _sources(repo)["data/big"]["hash"] != old
    assert repo.mlmake("status", "--json").json().get("data", []) == []
    assert repo.mlmake().code == 0


def test_a_tree_of_many_files_is_statted_and_hashed_by_workers_and_re_added(repo):
    """Over 1,024 files the walk lists the files by name and forked workers stat and hash
    them (through the stat cache when it is added again)."""
    many = {f"data/many/{i % 9}/f{i:04d}.txt": f"row {i}\n" for i in range(1100)}
    _counted_tree(repo, "data/many", "cat data/many/*/*.txt | wc -l", many)
    os.chmod(repo.path / "data/many/4/f0004.txt", 0o755)
    r = repo.mlmake("add", "data/many")
    assert r.code == 0 and "added data/many/" in r.out and "1100 files" in r.out, r.text
    for rel in many:
        st = (repo.path / rel).stat()
        assert st.st_nlink == 2 and not st.st_mode & 0o222, rel
    assert (repo.path / "data/many/4/f0004.txt").stat().st_mode & 0o111
    assert repo.mlmake().code == 0 and repo.read("count.txt").strip() == "1100"
    repo.commit("v1")
    old = _sources(repo)["data/many"]["hash"]
    assert "unchanged data/many/" in repo.mlmake("add", "data/many").out
    _replace(repo, "data/many/0/f0000.txt", "row 0, edited\n")
    r = repo.mlmake("add", "data/many")
    assert r.code == 0 and "updated data/many/" in r.out, r.text
    assert _sources(repo)["data/many"]["hash"] != old
    assert repo.mlmake("status", "--json").json().get("data", []) == []
    repo.commit("v2")
    r = repo.mlmake("checkout", "HEAD~1")
    assert r.code == 0, r.text
    assert (repo.path / "data/many/0/f0000.txt").read_text() == "row 0\n"
    assert (repo.path / "data/many/4/f0004.txt").stat().st_mode & 0o111


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc")
def test_a_file_that_cannot_be_read_stops_add_and_leaves_the_tree_as_it_was(repo):
    """34 MiB, so the files are linked into the store while the workers still hash; one
    entry cannot be read (a link to /proc/self/mem: reading it fails even as root)."""
    big = {f"data/big/{i % 4}/f{i:02d}.bin": os.urandom(1 << 20) for i in range(34)}
    big["data/big/3/copy.bin"] = big["data/big/0/f00.bin"]  # its object is stored already
    repo.write({"Mlfile": """
        [target.count]
        cmd = "ls -R data/big | wc -l > count.txt"
        deps = ["data/big/"]
        outs = ["count.txt"]
    """, **big})
    os.symlink("/proc/self/mem", repo.path / "data/big/2/zz-unreadable")
    repo.write({"data/first.csv": "id\n1\n"})  # added first, undone too
    os.link(repo.path / "data/big/1/f01.bin", repo.path / "f01-elsewhere.bin")  # the user's
    before = {rel: (repo.path / rel).stat() for rel in [*big, "data/first.csv"]}
    r = repo.mlmake("add", "data/first.csv", "data/big")
    assert r.code == 2, r.text
    assert "cannot read 'data/big/2/zz-unreadable' to add 'data/big'" in r.err
    assert not (repo.path / "Mlfile.lock").exists()
    cache = repo.path / ".mlmake" / "cache"
    assert not [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else True
    for rel, st in before.items():
        now = (repo.path / rel).stat()
        assert (now.st_ino, now.st_mode, now.st_nlink) == (st.st_ino, st.st_mode,
                                                            st.st_nlink), rel
    assert (repo.path / "data/big/1/f01.bin").stat().st_nlink == 2
    os.unlink(repo.path / "data/big/2/zz-unreadable")
    r = repo.mlmake("add", "data/big")
    assert r.code == 0 and "35 files" in r.out, r.text
    a, b = (repo.path / "data/big/0/f00.bin").stat(), (repo.path / "data/big/3/copy.bin").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 3 and not a.st_mode & 0o222
    lock = repo.read("Mlfile.lock")
    # a failure while re-adding leaves the recorded version's objects alone
    _replace(repo, "data/big/1/f01.bin", "new\n")
    os.symlink("/proc/self/mem", repo.path / "data/big/2/zz-unreadable")
    assert repo.mlmake("add", "data/big").code == 2
    assert repo.read("Mlfile.lock") == lock
    assert (repo.path / "data/big/0/f00.bin").stat().st_nlink == 3
    os.unlink(repo.path / "data/big/2/zz-unreadable")
    repo.mlmake("checkout", "--force")
    assert (repo.path / "data/big/1/f01.bin").read_bytes() == big["data/big/1/f01.bin"]
    assert repo.mlmake().code == 0


def test_gc_keeps_data_that_a_kept_commit_records(tracked):
    old = _sources(tracked)["data/raw"]["hash"]
    _replace(tracked, "data/raw/f2.txt", "changed\n")
    assert tracked.mlmake("add", "data/raw").code == 0
    tracked.commit("v2")
    assert tracked.mlmake("gc", "--all-commits").code == 0
    assert tracked.mlmake("checkout", "HEAD~1").code == 0
    assert _raw(tracked)["f2.txt"] == "row 2\n"
    assert tracked.mlmake("checkout").code == 0
    r = tracked.mlmake("gc")  # the work tree's lock only: v1's data goes
    assert r.code == 0, r.text
    r = tracked.mlmake("checkout", "HEAD~1")
    assert old[:8] and ("missing" in r.text or r.code != 0)


# -- remotes and fresh clones ---------------------------------------------------------------------
@pytest.fixture
def shared(repo: Repo, remote: RemoteStore) -> Repo:  # noqa: F811
    """Tracked data and outs, built, pushed and committed."""
    repo.write({**with_remote(PIPE, remote), **RAW})
    assert repo.mlmake("add", "data/raw").code == 0
    r = repo.mlmake()
    assert r.code == 0, r.text
    r = repo.mlmake("push")
    assert r.code == 0, r.text
    repo.commit("v1")
    return repo


def test_a_fresh_clone_gets_the_data_and_builds_with_zero_commands(shared, remote, tmp_path):  # noqa: F811
    mate = clone(shared, tmp_path / "mate")
    assert not mate.exists("data/raw")
    r = mate.mlmake()
    assert r.code == 0, r.text
    assert mate.executed() == []
    assert _raw(mate) == _raw(shared)
    assert mate.read("count.txt") == shared.read("count.txt")
    assert mate.mlmake("status").code == 0
    other = clone(shared, tmp_path / "other")
    r = other.mlmake("pull")
    assert r.code == 0, r.text
    assert _raw(other) == _raw(shared)


def test_a_corrupt_source_object_on_the_remote_is_refused(shared, remote, tmp_path):  # noqa: F811
    from mlmake.hashing import hash_bytes

    remote.corrupt(hash_bytes(b"row 2\n"))
    mate = clone(shared, tmp_path / "mate")
    r = mate.mlmake("pull")
    assert r.code != 0 and "corrupt" in r.err and "data/raw/f2.txt" in r.err, r.text
    assert "Traceback" not in r.text
    assert not mate.exists("data/raw")
    r = mate.mlmake()
    assert r.code != 0 and "corrupt" in r.err
    assert not mate.exists("data/raw") and mate.executed() == []


def test_a_build_without_the_data_anywhere_says_how_to_get_it(tracked, tmp_path):
    mate = clone(tracked, tmp_path / "mate")
    r = mate.mlmake()
    assert r.code != 0
    assert "data source 'data/raw/'" in r.err and "mlmake push" in r.err, r.text
    assert mate.executed() == []
    r = mate.mlmake("status")
    assert r.code == 1 and "data data/raw/ missing" in r.out
    assert "no target produces it" not in r.text


# -- imports --------------------------------------------------------------------------------------
def test_import_from_a_local_path_and_update_picks_up_a_new_version(repo, tmp_path):
    origin = tmp_path / "elsewhere" / "raw"
    origin.mkdir(parents=True)
    for name, text in RAW.items():
        (origin / os.path.basename(name)).write_text(text)
    repo.write(PIPE)
    r = repo.mlmake("import", str(origin), "data/raw")
    assert r.code == 0, r.text
    assert "imported data/raw/" in r.out
    rec = _sources(repo)["data/raw"]
    assert rec["url"] == str(origin) and rec["version"]
    assert repo.mlmake().code == 0
    repo.commit("v1")
    r = repo.mlmake("update", "data/raw")
    assert r.code == 0 and "up to date" in r.out, r.text
    (origin / "f4.txt").write_text("row 4\n")
    assert repo.mlmake("status").code == 0  # the origin is not watched: builds use the record
    r = repo.mlmake("update", "data/raw")
    assert r.code == 0 and "updated data/raw/" in r.out, r.text
    assert _sources(repo)["data/raw"]["files"] == 4
    assert (repo.path / "data/raw/f4.txt").read_text() == "row 4\n"
    assert repo.mlmake().code == 0 and repo.read("count.txt").strip() == "4"
    r = repo.mlmake("update", "count.txt")
    assert r.code == 2 and "not a data source" in r.err


def test_import_from_s3_records_the_etag_and_update_sees_a_new_one(repo, s3):
    client, bucket = s3["client"], s3["bucket"]
    client.put_object(Bucket=bucket, Key="origin/data.csv", Body=b"a,b\n1,2\n")
    repo.write({"Mlfile": """
        [target.copy]
        cmd = "cp data.csv out.csv"
        deps = ["data.csv"]
        outs = ["out.csv"]
    """})
    r = repo.mlmake("import", f"s3://{bucket}/origin/data.csv", "data.csv",
                    "-o", f"endpoint_url={s3['endpoint']}")
    assert r.code == 0, r.text
    rec = _sources(repo)["data.csv"]
    etag = client.head_object(Bucket=bucket, Key="origin/data.csv")["ETag"].strip('"')
    assert rec["version"] == etag and rec["url"].startswith("s3://")
    assert repo.mlmake().code == 0 and repo.read("out.csv") == "a,b\n1,2\n"
    repo.commit("v1")
    assert "up to date" in repo.mlmake("update").out
    client.put_object(Bucket=bucket, Key="origin/data.csv", Body=b"a,b\n3,4\n")
    r = repo.mlmake("update")
    assert r.code == 0 and "updated data.csv" in r.out, r.text
    assert repo.read("data.csv") == "a,b\n3,4\n"
    assert repo.mlmake().code == 0 and repo.read("out.csv") == "a,b\n3,4\n"
    repo.commit("v2")
    assert repo.mlmake("checkout", "HEAD~1").code == 0
    assert repo.read("data.csv") == "a,b\n1,2\n"


def test_a_directory_import_from_s3(repo, s3):
    client, bucket = s3["client"], s3["bucket"]
    for i in range(1, 4):
        client.put_object(Bucket=bucket, Key=f"raw/f{i}.txt", Body=f"row {i}\n".encode())
    repo.write(PIPE)
    r = repo.mlmake("import", f"s3://{bucket}/raw", "data/raw",
                    "-o", f"endpoint_url={s3['endpoint']}")
    assert r.code == 0, r.text
    assert _raw(repo) == {os.path.basename(k): v for k, v in RAW.items()}
    assert _sources(repo)["data/raw"]["version"].startswith("tree:")
    assert repo.mlmake().code == 0 and repo.read("count.txt").strip() == "3"


# -- hooks and served runs ------------------------------------------------------------------------
def test_git_checkout_with_hooks_brings_back_that_commits_data(tracked):
    r = tracked.mlmake("hooks", "install")
    assert r.code == 0, r.text
    _replace(tracked, "data/raw/f3.txt", "three\n")
    assert tracked.mlmake("add", "data/raw").code == 0
    assert tracked.mlmake().code == 0
    tracked.commit("v2")
    tracked.git("checkout", "-q", "HEAD~1")
    assert _raw(tracked)["f3.txt"] == "row 3\n"
    assert tracked.mlmake("status").code == 0
    tracked.git("checkout", "-q", "main")
    assert _raw(tracked)["f3.txt"] == "three\n"


def test_a_served_run_of_an_old_rev_uses_that_revs_data(tracked):
    from mlmake.project import Project

    tracked.write({"Mlfile": tracked.read("Mlfile") + '\n[endpoint.count]\ntargets = ["count"]\n'})
    assert tracked.mlmake().code == 0
    tracked.commit("endpoint")
    v1_count = json.loads(tracked.read("Mlfile.lock"))["targets"]["count"]["outs"]["summary.txt"]
    _replace(tracked, "data/raw/f1.txt", "changed\n")
    assert tracked.mlmake("add", "data/raw").code == 0
    assert tracked.mlmake().code == 0
    tracked.commit("v2")
    project = Project(str(tracked.path))
    run_id = project.trigger("count", rev="HEAD~1")
    assert project.runs_store.build(run_id)["status"] == "succeeded"
    rec = next(r for r in project.runs("count", 50) if r.build == run_id)
    assert rec.outs is not None and rec.outs["summary.txt"]["hash"] == v1_count["hash"]
    assert _raw(tracked)["f1.txt"] == "changed\n"  # the work tree is not touched


# -- which data version a run used ------------------------------------------------------------
def _runs_json(repo: Repo) -> list[dict[str, Any]]:
    r = repo.mlmake("runs", "--json")
    assert r.code == 0, r.text
    return r.json()


def test_runs_say_which_data_version_each_build_used(tracked):
    v1 = _sources(tracked)["data/raw"]["hash"]
    [first] = _runs_json(tracked)
    assert first["target"] == "count" and first["data"] == {"data/raw": v1}
    assert f"data/raw@{v1[:8]}" in tracked.mlmake("runs").out
    _replace(tracked, "data/raw/f1.txt", "row one\n")
    assert tracked.mlmake("add", "data/raw").code == 0
    v2 = _sources(tracked)["data/raw"]["hash"]
    assert v2 != v1
    assert tracked.mlmake().code == 0
    newest, oldest = _runs_json(tracked)
    assert (newest["data"], oldest["data"]) == ({"data/raw": v2}, {"data/raw": v1})
    out = tracked.mlmake("runs").out
    assert f"data/raw@{v2[:8]}" in out and f"data/raw@{v1[:8]}" in out
    assert out.index(f"data/raw@{v2[:8]}") < out.index(f"data/raw@{v1[:8]}")  # newest first


def test_a_project_without_data_sources_records_no_data(repo):
    repo.write({"Mlfile": '[target.a]\ncmd = "echo a > a.txt"\nouts = ["a.txt"]\n'})
    assert repo.mlmake().code == 0
    assert [r["data"] for r in _runs_json(repo)] == [{}]
    assert "data" not in repo.mlmake("runs").out.splitlines()[0].split()


def test_the_api_gives_each_run_the_data_it_used(tracked):
    from test_serve import Service

    v1 = _sources(tracked)["data/raw"]["hash"]
    tracked.write({"Mlfile": tracked.read("Mlfile") + '\n[endpoint.count]\ntargets = ["count"]\n'})
    _replace(tracked, "data/raw/f2.txt", "row two\n")
    assert tracked.mlmake("add", "data/raw").code == 0
    v2 = _sources(tracked)["data/raw"]["hash"]
    assert tracked.mlmake().code == 0
    tracked.commit("v2")
    svc = Service(tracked)
    try:
        served = svc.wait(svc.trigger("count", rev="HEAD~1"))
        assert served["status"] == "succeeded" and served["data"] == {"data/raw": v1}
        builds = svc.get("/api/runs")
        assert [b["data"] for b in builds[:3]] == [{"data/raw": v1}, {"data/raw": v2},
                                                   {"data/raw": v1}]
    finally:
        svc.stop()
