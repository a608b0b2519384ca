"""The remote cache through the real CLI: a directory remote and a real S3 API (moto's server
on loopback), fresh clones that build nothing, concurrent pushes, corruption and secrets."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import MLMAKE, S3_SECRET as SECRET, Repo, free_port as _free_port

PIPE = {
    "params.toml": "[train]\nlr = 0.1\n",
    "raw/data.txt": "1\n2\n3\n",
    "Mlfile": """
        [target.prepare]
        cmd = "mkdir -p prep && cp raw/data.txt prep/a.txt && for i in $(seq 1 40); do (echo row $i; cat raw/data.txt) > prep/part-$i.txt; done && printf '#!/bin/sh\\necho hi\\n' > prep/run.sh && chmod +x prep/run.sh"
        deps = ["raw/"]
        outs = ["prep/"]

        [target.train]
        cmd = "cat prep/a.txt prep/part-7.txt > model.bin && echo lr=${train.lr} >> model.bin && echo '{\\"lr\\": ${train.lr}}' > metrics.json"
        deps = ["prep/"]
        params = ["train"]
        outs = ["model.bin"]
        metrics = ["metrics.json"]
    """,
}


# -- the remote, seen from outside ----------------------------------------------------------
class RemoteStore:
    """The remote seen from outside mlmake: list, read and overwrite its files."""

    def __init__(self, kind: str, tmp_path: Path, s3: dict[str, Any] | None) -> None:
        self.kind = kind
        if kind == "dir":
            self.root = tmp_path / "team-cache"
            self.url = str(self.root)
            self.toml = f'url = "{self.url}"\n'
        else:
            assert s3 is not None
            self.client, self.bucket = s3["client"], s3["bucket"]
            self.url = f"s3://{self.bucket}/fraud"
            self.toml = (f'url = "{self.url}"\n'
                         f'options = {{ endpoint_url = "{s3["endpoint"]}" }}\n')

    def names(self) -> list[str]:
        if self.kind == "dir":
            return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                          if p.is_file())
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix="fraud/")
        return sorted(o["Key"][len("fraud/"):] for page in pages
                      for o in page.get("Contents", []))

    def read(self, name: str) -> bytes:
        if self.kind == "dir":
            return (self.root / name).read_bytes()
        return self.client.get_object(Bucket=self.bucket, Key=f"fraud/{name}")["Body"].read()

    def write(self, name: str, data: bytes) -> None:
        if self.kind == "dir":
            (self.root / name).write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=f"fraud/{name}", Body=data)

    def corrupt(self, oid: str) -> str:
        """Flip the bytes of object `oid` wherever it is stored; returns that file's name."""
        loose = f"objects/{oid[:2]}/{oid[2:]}"
        if loose in self.names():
            self.write(loose, b"tampered" + self.read(loose))
            return loose
        for name in self.names():
            if name.endswith(".idx"):
                for o, off, _size in json.loads(self.read(name))["objects"]:
                    if o == oid:
                        pack = name[:-4] + ".pack"
                        data = bytearray(self.read(pack))
                        data[off] ^= 0xFF
                        self.write(pack, bytes(data))
                        return pack
        raise AssertionError(f"object {oid} is not on the remote")


@pytest.fixture(params=["dir", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> RemoteStore:
    s3 = request.getfixturevalue("s3") if request.param == "s3" else None
    return RemoteStore(request.param, tmp_path, s3)


def with_remote(files: dict[str, str], remote: RemoteStore, extra: str = "") -> dict[str, str]:
    out = dict(files)
    out["Mlfile"] = (f'[project]\nremote = "team"\n{extra}\n[remote.team]\n{remote.toml}\n'
                     + _dedent(files["Mlfile"]))
    return out


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


def clone(src: Repo, dest: Path) -> Repo:
    subprocess.run(["git", "clone", "-q", str(src.path), str(dest)], check=True)
    mate = Repo.__new__(Repo)
    mate.path = dest
    mate.git("config", "user.email", "mate@example.com")
    mate.git("config", "user.name", "Mate")
    return mate


def outs(repo: Repo) -> dict[str, bytes]:
    """Every output file (and its bytes) in the work tree."""
    found = {}
    for rel in ("model.bin", "metrics.json"):
        if repo.exists(rel):
            found[rel] = (repo.path / rel).read_bytes()
    if repo.exists("prep"):
        for p in sorted((repo.path / "prep").iterdir()):
            found[f"prep/{p.name}"] = p.read_bytes()
    return found


@pytest.fixture
def built(repo: Repo, remote: RemoteStore) -> Repo:
    """Clone A: built, pushed and committed."""
    repo.write(with_remote(PIPE, remote))
    r = repo.mlmake()
    assert r.code == 0, r.text
    r = repo.mlmake("push")
    assert r.code == 0, r.text
    repo.commit("v1")
    return repo


def _lock(repo: Repo) -> dict[str, Any]:
    return json.loads(repo.read("Mlfile.lock"))["targets"]


# -- acceptance ---------------------------------------------------------------------------------
def test_a_fresh_clone_builds_nothing_and_gets_identical_outputs(built, remote, tmp_path):
    assert built.mlmake("push").out.startswith("pushed 0 objects")  # nothing is missing
    mate = clone(built, tmp_path / "mate")
    r = mate.mlmake()
    assert r.code == 0, r.text
    assert mate.executed() == []
    assert "↺ train restored (remote team)" in r.out
    assert (mate.path / "model.bin").read_bytes() == (built.path / "model.bin").read_bytes()
    assert mate.mlmake("status").code == 0
    # the upstream outs come along, as `dvc pull` brings them
    assert outs(mate) == outs(built)
    r = mate.mlmake("pull")
    assert r.code == 0, r.text
    assert outs(mate) == outs(built)
    assert os.access(mate.path / "prep" / "run.sh", os.X_OK)
    assert mate.mlmake("status").code == 0
    assert mate.executed() == []


def test_a_fresh_clone_says_what_is_not_materialized_and_dry_run_names_the_remote(
        built, remote, tmp_path):
    mate = clone(built, tmp_path / "mate")
    r = mate.mlmake("status")
    assert r.code == 1 and "not materialized: prepare" in r.out and "stale:" not in r.out
    assert "mlmake pull" in r.out
    r = mate.mlmake("-n")
    assert r.code == 0, r.text
    assert "would restore (from remote team): prepare" in r.out
    assert "would restore (from remote team): train" in r.out and "would run" not in r.out
    assert not any((mate.path / ".mlmake" / "cache").rglob("*.txt"))  # nothing downloaded
    assert outs(mate) == {"metrics.json": (built.path / "metrics.json").read_bytes()}
    r = mate.mlmake()
    assert r.code == 0 and mate.executed() == [] and outs(mate) == outs(built)
    assert mate.mlmake("status").code == 0


def test_two_clones_pushing_at_once_both_succeed_and_leave_nothing_partial(built, remote,
                                                                           tmp_path):
    mate = clone(built, tmp_path / "mate")
    for repo in (built, mate):  # the same new results in both, unknown to the remote
        repo.write({"raw/data.txt": "4\n5\n6\n"})
        r = repo.mlmake("--no-remote")
        assert r.code == 0, r.text
    assert (mate.path / "model.bin").read_bytes() == (built.path / "model.bin").read_bytes()
    before = set(remote.names())
    procs = [subprocess.Popen([*MLMAKE, "push"], cwd=repo.path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for repo in (built, mate)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    names = remote.names()
    assert any(n.endswith(".pack") for n in set(names) - before)  # both wrote the same pack
    assert not [n for n in names if "tmp" in n.rsplit("/", 1)[-1]]
    from mlmake.remote import intact

    for name in names:  # every object on the remote is whole
        if name.startswith("objects/"):
            oid = name[len("objects/"):].replace("/", "")
            assert intact(oid, remote.read(name)), name
        elif name.endswith(".idx"):
            pack = remote.read(name[:-4] + ".pack")
            for oid, off, size in json.loads(remote.read(name))["objects"]:
                assert intact(oid, pack[off:off + size]), (name, oid)
    built.commit("v2")  # and the results come back from it
    other = clone(built, tmp_path / "other")
    r = other.mlmake("pull")
    assert r.code == 0, r.text
    assert outs(other) == outs(built)
    assert other.mlmake("status").code == 0 and other.executed() == []


def test_a_corrupt_remote_object_is_refused_and_nothing_is_linked(built, remote, tmp_path):
    oid = _lock(built)["train"]["outs"]["model.bin"]["hash"]
    where = remote.corrupt(oid)
    mate = clone(built, tmp_path / "mate")
    r = mate.mlmake("pull")
    assert r.code != 0
    assert "corrupt" in r.err and "'model.bin'" in r.err and where in r.err
    assert "Traceback" not in r.text
    assert not mate.exists("model.bin") and not mate.exists("prep")
    assert not any((mate.path / ".mlmake" / "cache" / oid[:2]).glob(oid[2:] + "*"))
    r = mate.mlmake()  # a build refuses it too, and runs the target instead
    assert r.code == 0, r.text
    assert "corrupt" in r.err and "Running it instead" in r.err
    assert mate.executed() == ["train"]
    assert (mate.path / "model.bin").read_bytes() == (built.path / "model.bin").read_bytes()


def test_secrets_never_reach_logs_lock_run_records_or_errors(repo, s3, tmp_path):
    remote = RemoteStore("s3", tmp_path, s3)
    repo.write(with_remote(PIPE, remote))
    texts = []
    for args in (("--push",), ("pull",)):
        r = repo.mlmake(*args)
        assert r.code == 0, r.text
        texts.append(r.text)
    repo.commit("v1")
    # error paths: a bucket that does not exist, a secret in the per-user config, no server
    wrong = remote.toml.replace(remote.bucket, "no-such-bucket")
    repo.write({"Mlfile": repo.read("Mlfile").replace(remote.toml, wrong)})
    r = repo.mlmake("push")
    assert r.code == 4 and "no-such-bucket" in r.err and "does not exist" in r.err, r.text
    texts.append(r.text)
    repo.write({".mlmake/config.toml": f'[remote.team]\noptions = {{ secret = "{SECRET}", '
                                       f'endpoint_url = "http://127.0.0.1:{_free_port()}" }}\n'})
    for args in (("pull",), ("--push", "-B", "train")):
        r = repo.mlmake(*args)
        texts.append(r.text)
    assert "error: cannot reach remote 'team'" in texts[-2] and "warning: cannot" in texts[-1]
    stored = [repo.path / "Mlfile.lock", repo.path / "Mlfile"]
    stored += [p for p in (repo.path / ".mlmake").rglob("*") if p.is_file()
               and p.name != "config.toml"]
    assert any(p.name == "runs.db" for p in stored) and any("logs" in p.parts for p in stored)
    for p in stored:
        assert SECRET.encode() not in p.read_bytes(), p
    for text in texts:
        assert SECRET not in text


@pytest.mark.needs("s3fs", "S3 remotes need s3fs (pip install 'mlmake[s3]')")
def test_an_unreachable_remote_warns_once_and_the_build_runs(repo):
    port = _free_port()  # nothing listens there
    repo.write({**PIPE, "Mlfile": (
        '[project]\nremote = "team"\n[remote.team]\nurl = "s3://team/cache"\n'
        f'options = {{ endpoint_url = "http://127.0.0.1:{port}" }}\n'
        + _dedent(PIPE["Mlfile"]))})
    r = repo.mlmake(env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": SECRET,
                         "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"})
    assert r.code == 0, r.text
    warnings = [line for line in r.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, r.err
    assert "cannot reach remote 'team' (s3://team/cache)" in warnings[0]
    assert "Building without it" in warnings[0]
    assert sorted(repo.executed()) == ["prepare", "train"]


# -- run integration ----------------------------------------------------------------------------
@pytest.fixture
def dir_remote(tmp_path: Path) -> RemoteStore:
    return RemoteStore("dir", tmp_path, None)


def test_run_push_uploads_each_result_and_a_clone_reuses_them(repo, dir_remote, tmp_path):
    repo.write(with_remote(PIPE, dir_remote))
    r = repo.mlmake("--push")
    assert r.code == 0, r.text
    assert any(n.startswith("runcache/") for n in dir_remote.names())
    repo.commit("v1")
    mate = clone(repo, tmp_path / "mate")
    r = mate.mlmake()
    assert r.code == 0 and mate.executed() == [], r.text


def test_project_push_setting_pushes_without_the_flag(repo, dir_remote, tmp_path):
    repo.write(with_remote(PIPE, dir_remote, "push = true\n"))
    assert repo.mlmake().code == 0
    assert len([n for n in dir_remote.names() if n.startswith("runcache/")]) == 2
    repo.write({"params.toml": "[train]\nlr = 0.5\n"})
    assert repo.mlmake("--no-remote").code == 0  # no remote at all: nothing pushed
    assert len([n for n in dir_remote.names() if n.startswith("runcache/")]) == 2


def test_the_remote_run_cache_serves_a_stale_key_and_downloads_only_what_is_needed(
        repo, dir_remote, tmp_path):
    repo.write(with_remote(PIPE, dir_remote))
    assert repo.mlmake().code == 0
    first = (repo.path / "model.bin").read_bytes()
    repo.commit("lr 0.1")
    repo.write({"params.toml": "[train]\nlr = 0.2\n"})
    assert repo.mlmake().code == 0
    assert repo.mlmake("push", "--all-commits").code == 0
    repo.commit("lr 0.2")
    mate = clone(repo, tmp_path / "mate")
    mate.write({"params.toml": "[train]\nlr = 0.1\n"})  # stale against the lock; the remote
    r = mate.mlmake("--lean")                          # run cache has this key
    assert r.code == 0, r.text
    assert "↺ train reused (remote team)" in r.out and mate.executed() == []
    assert (mate.path / "model.bin").read_bytes() == first
    assert not mate.exists("prep")  # prepare's files were never downloaded
    prep_files = _lock(repo)["prepare"]["outs"]["prep"]["files"]
    cached = [p for p in (mate.path / ".mlmake" / "cache").rglob("*") if p.is_file()]
    assert len(cached) < prep_files
    assert mate.mlmake("status", "--lean").code == 0
    r = mate.mlmake()  # by default the upstream's outs come too, with nothing run
    assert r.code == 0 and mate.executed() == [] and mate.exists("prep")
    r = mate.mlmake("--no-remote", "-B", "train")
    assert r.code == 0 and "train" in mate.executed()


def test_no_remote_builds_without_looking(repo, dir_remote, tmp_path):
    repo.write(with_remote(PIPE, dir_remote))
    assert repo.mlmake("--push").code == 0
    repo.commit("v1")
    mate = clone(repo, tmp_path / "mate")
    r = mate.mlmake("--no-remote")
    assert r.code == 0, r.text
    assert sorted(mate.executed()) == ["prepare", "train"]


def test_push_all_commits_lets_a_clone_check_out_an_old_commit(repo, dir_remote, tmp_path):
    repo.write(with_remote(PIPE, dir_remote))
    assert repo.mlmake().code == 0
    v1 = repo.commit("v1")
    old = (repo.path / "model.bin").read_bytes()
    repo.write({"params.toml": "[train]\nlr = 0.9\n"})
    assert repo.mlmake().code == 0
    repo.commit("v2")
    r = repo.mlmake("push")
    assert r.code == 0
    r = repo.mlmake("push", "--all-commits")
    assert r.code == 0 and not r.out.startswith("pushed 0 objects"), r.text
    mate = clone(repo, tmp_path / "mate")
    mate.git("checkout", "-q", v1)
    r = mate.mlmake("pull", "train")
    assert r.code == 0, r.text
    assert (mate.path / "model.bin").read_bytes() == old


# -- configuration and errors -------------------------------------------------------------------
def test_per_user_config_overrides_the_mlfile_remote(repo, dir_remote, tmp_path):
    repo.write(with_remote(PIPE, dir_remote).copy())
    repo.write({"Mlfile": repo.read("Mlfile").replace(dir_remote.url, "/nonexistent/x")})
    repo.write({".mlmake/config.toml": f'[remote.team]\nurl = "{dir_remote.url}"\n'
                                       f'[remote.mine]\nurl = "{tmp_path / "mine"}"\n'})
    assert repo.mlmake().code == 0
    r = repo.mlmake("push")
    assert r.code == 0, r.text
    assert dir_remote.names()
    r = repo.mlmake("push", "-r", "mine")
    assert r.code == 0, r.text
    assert any((tmp_path / "mine").rglob("*"))
    repo.write({".mlmake/config.toml": '[remot.team]\nurl = "x"\n'})
    r = repo.mlmake("push")
    assert r.code == 2 and "config.toml" in r.err and "unknown key 'remot'" in r.err


@pytest.mark.parametrize("args, message", [
    (("push",), "no remote configured"),
    (("pull", "-r", "team"), "no remote named 'team'"),
    (("--push",), "pushing results needs a remote"),
])
def test_remote_commands_without_a_remote_say_how_to_add_one(repo, args, message):
    repo.write(PIPE)
    r = repo.mlmake(*args)
    assert r.code == 2, r.text
    assert message in r.err and "Traceback" not in r.err


def test_push_reports_outs_missing_from_the_local_cache(repo, dir_remote, tmp_path):
    repo.write(with_remote(PIPE, dir_remote))
    assert repo.mlmake("--no-remote").code == 0
    repo.commit("v1")
    mate = clone(repo, tmp_path / "mate")  # its cache is empty and nothing was pushed
    r = mate.mlmake("push")
    assert r.code == 1, r.text
    assert "model.bin is not in the local cache" in r.err
    assert "pushed 0 objects" in r.out


def test_targets_with_cache_false_are_left_out_of_push_and_pull(repo, dir_remote, tmp_path):
    files = with_remote(PIPE, dir_remote)
    files["Mlfile"] += ('\n[target.report]\ncmd = "cat model.bin > report.txt"\n'
                        'deps = ["model.bin"]\nouts = ["report.txt"]\ncache = false\n')
    repo.write(files)
    assert repo.mlmake().code == 0
    r = repo.mlmake("push")
    assert r.code == 0 and "not in the local cache" not in r.err, r.text
    repo.commit("v1")
    mate = clone(repo, tmp_path / "mate")
    r = mate.mlmake("pull")
    assert r.code == 0, r.text
    assert mate.exists("model.bin") and not mate.exists("report.txt")
