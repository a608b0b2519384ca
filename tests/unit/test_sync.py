"""Push and pull against a directory remote: objects and run-cache entries move, verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmake.errors import UsageError
from mlmake.events import Notice
from mlmake.remote import CorruptRemoteObjectError, intact

from .conftest import CHAIN, Workspace, corrupt, started, statuses

ALL = ["prepare", "train", "evaluate"]
OUTS = {"prepare": "prepared.txt", "train": "model.txt", "evaluate": "score.txt"}


class Shared:
    """A built, committed chain whose Mlfile names a directory remote, and that remote."""

    def __init__(self, ws: Workspace, remote: Path) -> None:
        self.ws = ws
        self.remote = remote

    def objects(self) -> set[str]:
        d = self.remote / "objects"
        return {p.parent.name + p.name for p in d.glob("*/*")} if d.is_dir() else set()

    def runcache(self) -> set[str]:
        d = self.remote / "runcache"
        return {p.parent.name + p.name for p in d.glob("*/*")} if d.is_dir() else set()

    def object_path(self, oid: str) -> Path:
        return self.remote / "objects" / oid[:2] / oid[2:]

    def hashes(self) -> dict[str, str]:
        return {OUTS[n]: self.ws.out_hash(n, OUTS[n]) for n in ALL}

    def keys(self) -> set[str]:
        return {e.key for e in self.ws.lock().entries.values()}


def with_remote(url: Path) -> dict[str, str]:
    return {**CHAIN, "Mlfile": f'[project]\nremote = "team"\n\n[remote.team]\nurl = "{url}"\n\n'
            + CHAIN["Mlfile"]}


@pytest.fixture
def shared(ws: Workspace, tmp_path: Path) -> Shared:
    remote = tmp_path / "remote"
    ws.write(with_remote(remote))
    result, _ = ws.run(use_remote=False)
    assert result.ok
    ws.commit("built")
    return Shared(ws, remote)


@pytest.fixture
def pushed(shared: Shared) -> Shared:
    shared.ws.project().push()
    return shared


def test_push_uploads_every_out_object_and_runcache_entry(shared: Shared):
    res = shared.ws.project().push()
    assert (res.pushed, res.runcache, res.missing) == (3, 3, [])
    assert shared.objects() == set(shared.hashes().values())
    assert shared.runcache() == shared.keys()
    for oid in shared.objects():
        assert intact(oid, shared.object_path(oid).read_bytes())


def test_second_push_moves_nothing(pushed: Shared):
    res = pushed.ws.project().push()
    assert (res.pushed, res.present, res.runcache) == (0, 3, 0)


def test_push_names_outs_the_local_cache_lacks_and_skips_their_runcache_entry(
        shared: Shared):
    project = shared.ws.project()
    project.store().remove(shared.hashes()["model.txt"])
    res = project.push()
    assert res.missing == ["model.txt"]
    assert res.pushed == 2
    assert shared.ws.lock().entries["train"].key not in shared.runcache()


def test_pull_into_a_fresh_clone_brings_objects_runcache_entries_and_outs(
        pushed: Shared, tmp_path: Path):
    clone = pushed.ws.clone(tmp_path / "clone")
    assert not clone.exists("model.txt")
    res = clone.project().pull()
    assert (res.fetched, res.runcache, res.missing) == (3, 3, [])
    assert sorted(res.checkout.restored) == sorted(OUTS.values())
    assert clone.read("model.txt") == "HELLO\nlr=0.1\n"
    assert set(clone.project().runcache.keys()) == pushed.keys()
    assert clone.status().stale == []


def test_fresh_clone_builds_with_zero_commands_from_the_remote(pushed: Shared,
                                                               tmp_path: Path):
    clone = pushed.ws.clone(tmp_path / "clone")
    result, rec = clone.run()
    assert started(rec) == []
    assert statuses(result) == {n: "reused" for n in ALL}
    assert {o.source for o in result.outcomes.values()} == {"team"}
    assert clone.read("score.txt") == pushed.ws.read("score.txt")


def test_build_without_remote_lookups_runs_everything(pushed: Shared, tmp_path: Path):
    clone = pushed.ws.clone(tmp_path / "clone")
    _, rec = clone.run(use_remote=False)
    assert started(rec) == ALL


def test_pull_of_one_target_brings_it_and_its_upstreams_only(pushed: Shared,
                                                             tmp_path: Path):
    clone = pushed.ws.clone(tmp_path / "clone")
    res = clone.project().pull(["train"])
    assert sorted(res.checkout.restored) == ["model.txt", "prepared.txt"]
    assert not clone.exists("score.txt")


def test_pull_names_outs_the_remote_lacks(pushed: Shared, tmp_path: Path):
    pushed.object_path(pushed.hashes()["score.txt"]).unlink()
    clone = pushed.ws.clone(tmp_path / "clone")
    res = clone.project().pull()
    assert res.missing == ["score.txt"]
    assert res.checkout.missing == ["score.txt"]
    assert not clone.exists("score.txt")
    assert clone.read("model.txt") == "HELLO\nlr=0.1\n"


def test_corrupt_remote_object_is_refused_by_pull(pushed: Shared, tmp_path: Path):
    bad = pushed.hashes()["model.txt"]
    corrupt(pushed.object_path(bad))
    clone = pushed.ws.clone(tmp_path / "clone")
    with pytest.raises(CorruptRemoteObjectError) as err:
        clone.project().pull()
    assert "model.txt" in str(err.value)
    store = clone.project().store()
    assert not store.has(bad)
    assert store.has(pushed.hashes()["prepared.txt"])  # the good objects did come in
    assert not clone.exists("model.txt")


def test_build_runs_a_target_whose_remote_object_is_corrupt(pushed: Shared,
                                                            tmp_path: Path):
    corrupt(pushed.object_path(pushed.hashes()["model.txt"]))
    clone = pushed.ws.clone(tmp_path / "clone")
    result, rec = clone.run()
    assert started(rec) == ["train"]
    assert statuses(result) == {"prepare": "reused", "train": "ran", "evaluate": "reused"}
    assert any(n.level == "warning" and n.text.startswith("train:") for n in rec.of(Notice))
    assert clone.read("model.txt") == "HELLO\nlr=0.1\n"


def test_next_push_replaces_a_remote_copy_a_pull_found_corrupt(pushed: Shared,
                                                               tmp_path: Path):
    bad = pushed.hashes()["model.txt"]
    corrupt(pushed.object_path(bad))
    with pytest.raises(CorruptRemoteObjectError):
        pushed.ws.clone(tmp_path / "clone").project().pull()
    res = pushed.ws.project().push()
    assert res.replaced == [bad]
    assert intact(bad, pushed.object_path(bad).read_bytes())


def test_build_with_push_uploads_each_result(ws: Workspace, tmp_path: Path):
    remote = tmp_path / "remote"
    ws.write(with_remote(remote))
    assert ws.run(push=True)[0].ok
    shared = Shared(ws, remote)
    assert shared.objects() == set(shared.hashes().values())
    assert shared.runcache() == shared.keys()


def test_push_without_a_remote_is_a_usage_error(built: Workspace):
    with pytest.raises(UsageError) as err:
        built.project().push()
    assert "[remote.NAME]" in str(err.value)
