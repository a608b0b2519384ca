"""Remote: packs and loose objects, batched existence checks, verification, secrets, config."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from mlmake import config as user_config
from mlmake import remote as remote_mod
from mlmake.errors import MlfileError, RemoteError, UsageError
from mlmake.hashing import Entry, StatCache, hash_bytes
from mlmake.model import Pipeline, RemoteOverride, RemoteSpec, UserConfig
from mlmake.remote import CorruptRemoteObjectError, Remote, intact, scrub, scrub_url
from mlmake.store import Store


def make_store(path: Path) -> Store:
    return Store(str(path / "cache"), str(path), StatCache(None))


def fill(store: Store, n: int, size: int = 100) -> dict[str, bytes]:
    objs = {}
    for i in range(n):
        data = (f"object {i} ".encode() * size)[:size]
        oid = hash_bytes(data)
        store.add_bytes(oid, data)
        objs[oid] = data
    return objs


@pytest.fixture(params=["dir", "memory"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    url = str(tmp_path / "remote") if request.param == "dir" else \
        f"memory://mlmake-test-{secrets.token_hex(4)}"
    return Remote("team", url, root=str(tmp_path))


def test_many_small_objects_travel_in_packs_and_come_back_verified(remote, tmp_path):
    a = make_store(tmp_path / "a")
    objs = fill(a, 100)
    moved = remote.push_objects(a, objs)
    assert (moved.objects, moved.present, moved.missing) == (100, 0, [])
    names = remote.backend.names("")
    assert not [n for n in names if n.startswith("objects/")]
    assert sum(n.endswith(".pack") for n in names) == sum(n.endswith(".idx") for n in names) == 1
    again = remote.push_objects(a, objs)
    assert (again.objects, again.present) == (0, 100)
    b = make_store(tmp_path / "b")
    fresh = Remote("team", remote.url, root=str(tmp_path))  # knows nothing yet
    got = fresh.fetch_objects(b, {o: f"file {i}" for i, o in enumerate(objs)})
    assert got.objects == 100 and got.nbytes == 100 * 100
    for oid, data in objs.items():
        with open(b.object_path(oid), "rb") as fh:
            assert fh.read() == data


def test_few_or_large_objects_go_up_loose(remote, tmp_path):
    a = make_store(tmp_path / "a")
    small = fill(a, 3)
    big = os.urandom(remote_mod.SMALL_OBJECT + 1)
    a.add_bytes(hash_bytes(big), big)
    remote.push_objects(a, [*small, hash_bytes(big)])
    loose = [n for n in remote.backend.names("objects")]
    assert len(loose) == 4 and not remote.backend.names("packs")
    assert remote.present([*small, hash_bytes(big), "00" * 16]) == {*small, hash_bytes(big)}


def test_a_corrupt_packed_object_is_refused_and_the_rest_is_stored(remote, tmp_path):
    a = make_store(tmp_path / "a")
    objs = fill(a, 40)
    remote.push_objects(a, objs)
    idx = next(n for n in remote.backend.names("packs") if n.endswith(".idx"))
    entries = json.loads(remote.backend.read(f"packs/{idx}"))["objects"]
    bad, off, _ = entries[5]
    pack = bytearray(remote.backend.read(f"packs/{idx[:-4]}.pack"))
    pack[off] ^= 0xFF
    remote.backend.write(f"packs/{idx[:-4]}.pack", bytes(pack))
    b = make_store(tmp_path / "b")
    with pytest.raises(CorruptRemoteObjectError) as err:
        Remote("team", remote.url, root=str(tmp_path)).fetch_objects(
            b, {o: f"data/{o[:6]}" for o in objs})
    assert f"'data/{bad[:6]}'" in str(err.value) and err.value.objects == [bad]
    assert not b.has(bad)
    assert all(b.has(o) for o in objs if o != bad)


def test_a_corrupt_loose_object_is_refused(tmp_path):
    r = Remote("team", str(tmp_path / "remote"))
    a = make_store(tmp_path / "a")
    (oid, _), = fill(a, 1).items()
    r.push_objects(a, [oid])
    path = tmp_path / "remote" / "objects" / oid[:2] / oid[2:]
    path.write_bytes(b"evil")
    b = make_store(tmp_path / "b")
    with pytest.raises(CorruptRemoteObjectError, match="'model.bin'"):
        r.fetch_objects(b, {oid: "model.bin"})
    assert not b.has(oid) and not list((tmp_path / "b" / "cache").rglob("*.tmp"))


def test_manifests_are_verified_by_their_tree_digest(tmp_path):
    a = make_store(tmp_path / "a")
    entries = [Entry("x.txt", "ab" * 16, False), Entry("bin/run", "cd" * 16, True)]
    tree = a.add_manifest(entries)
    with open(a.object_path(tree + ".dir"), "rb") as fh:
        data = fh.read()
    assert intact(tree + ".dir", data)
    assert not intact(tree + ".dir", data.replace(b"x.txt", b"y.txt"))
    assert not intact(tree + ".dir", b"not json")


def test_missing_objects_are_reported_not_raised(remote, tmp_path):
    b = make_store(tmp_path / "b")
    got = remote.fetch_objects(b, {"ab" * 16: "model.bin"})
    assert got.missing == ["ab" * 16] and got.objects == 0
    a = make_store(tmp_path / "a")
    assert remote.push_objects(a, ["cd" * 16]).missing == ["cd" * 16]


def test_existence_checks_list_instead_of_asking_one_by_one(tmp_path, monkeypatch):
    r = Remote("team", str(tmp_path / "remote"))
    a = make_store(tmp_path / "a")
    objs = [o for o in fill(a, 200, size=remote_mod.SMALL_OBJECT + 1)]  # all loose
    r.push_objects(a, objs)
    asked = []
    monkeypatch.setattr(r.backend, "exists", lambda rel: asked.append(rel) or True)
    fresh = Remote("team", str(tmp_path / "remote"))
    monkeypatch.setattr(fresh.backend, "exists", lambda rel: asked.append(rel) or True)
    assert fresh.present(objs + ["ff" * 16]) == set(objs)
    assert asked == []


def test_the_run_cache_goes_up_after_its_objects_and_comes_back(remote, tmp_path):
    key = "12" * 16
    assert remote.runcache_get(key) is None
    assert remote.runcache_put({key: b'{"outs": {}}'}) == 1
    assert remote.runcache_put({key: b'{"outs": {}}'}) == 0
    assert remote.runcache_get(key) == b'{"outs": {}}'
    assert remote.runcache_get_many([key, "34" * 16]) == {key: b'{"outs": {}}'}


def test_a_directory_remote_leaves_no_temporary_files(tmp_path):
    r = Remote("team", str(tmp_path / "remote"))
    a = make_store(tmp_path / "a")
    r.push_objects(a, fill(a, 50))
    r.push_objects(a, fill(a, 3, size=7))
    r.runcache_put({"56" * 16: b"{}"})
    assert not [p for p in (tmp_path / "remote").rglob("*") if ".tmp" in p.name]


def test_a_file_in_place_of_the_remote_directory_is_a_clear_error(tmp_path):
    (tmp_path / "blocker").write_text("x")
    r = Remote("team", str(tmp_path / "blocker" / "cache"))
    a = make_store(tmp_path / "a")
    with pytest.raises(RemoteError, match=r"cannot upload to remote 'team'"):
        r.push_objects(a, fill(a, 1))


def test_relative_and_file_urls_are_directories(tmp_path):
    r = Remote("team", "../shared", root=str(tmp_path / "proj"))
    assert r.backend.root == str(tmp_path / "shared")
    assert Remote("t", f"file://{tmp_path}/x").backend.root == str(tmp_path / "x")


# -- secrets ------------------------------------------------------------------------------------
def test_scrub_removes_url_credentials_env_secrets_and_secret_options(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-123")
    monkeypatch.setenv("MY_API_TOKEN", "tok-abcdef")
    assert scrub_url("s3://user:pa55@bucket/x") == "s3://bucket/x"
    text = scrub("https://u:p@host/x failed with fake-secret-123 and tok-abcdef and hunter22",
                 (("password", "hunter22"), ("endpoint_url", "http://e")))
    assert "fake-secret-123" not in text and "tok-abcdef" not in text
    assert "hunter22" not in text and "u:p@" not in text and "http" in text


def test_an_unknown_scheme_or_missing_package_is_a_remote_error(tmp_path):
    with pytest.raises(RemoteError, match="remote 'x'"):
        Remote("x", "nosuchscheme://a/b").check()


# -- configuration ------------------------------------------------------------------------------
def pipeline(**kw) -> Pipeline:
    return Pipeline(path="Mlfile", root=".", targets={}, **kw)


def test_the_default_remote_is_the_config_then_the_mlfile_then_the_only_one(tmp_path):
    team = RemoteSpec("team", "/a", (("region", "x"),))
    p = pipeline(remotes={"team": team})
    assert user_config.choose(p, UserConfig(), None) == team
    assert user_config.choose(pipeline(), UserConfig(), None) is None
    two = pipeline(remotes={"team": team, "b": RemoteSpec("b", "/b")})
    assert user_config.choose(two, UserConfig(), None) is None
    cfg = UserConfig(remote="b",
                     remotes={"team": RemoteOverride("team", options=(("profile", "dev"),))})
    assert user_config.choose(two, cfg, None).name == "b"
    merged = user_config.choose(two, cfg, "team")
    assert merged.url == "/a" and dict(merged.options) == {"region": "x", "profile": "dev"}
    with pytest.raises(UsageError, match="no remote named 'tema'. Did you mean 'team'"):
        user_config.choose(two, cfg, "tema")


@pytest.mark.parametrize("text, message", [
    ("[remot]\n", "unknown key 'remot' in the top level"),
    ("[project]\npush = 1\n", "[project] push must be true or false"),
    ("[remote.x]\nurl = 3\n", "[remote.x] url must be a non-empty string"),
    ("[remote.x]\nendpoint = 'a'\n", "unknown key 'endpoint' in [remote.x]"),
    ("[project\n", "invalid TOML"),
])
def test_bad_user_config_names_the_file_and_the_fix(tmp_path, text, message):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(MlfileError) as err:
        user_config.read_config(str(path))
    assert message in str(err.value) and "config.toml" in str(err.value)


def test_user_config_errors_name_the_line(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[project]\nremote = "team"\n\n[remote.team]\nurl = "/a"\nprofile = "x"\n')
    with pytest.raises(MlfileError) as err:
        user_config.read_config(str(path))
    assert str(err.value).startswith(
        os.path.join(".mlmake", "config.toml") + ":6: unknown key 'profile' in [remote.team].")


def test_user_config_is_parsed_into_typed_overrides(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[project]\npush = true\n\n[remote.team]\noptions = { profile = "dev" }\n')
    assert user_config.read_config(str(path)) == UserConfig(
        push=True, remotes={"team": RemoteOverride("team", options=(("profile", "dev"),))})
    assert user_config.read_config(str(tmp_path / "absent.toml")) == UserConfig()


def test_a_config_remote_without_url_must_override_one(tmp_path):
    with pytest.raises(MlfileError, match="needs a `url`"):
        user_config.remotes(pipeline(), UserConfig(remotes={"x": RemoteOverride("x")}))


def test_a_few_packed_objects_are_read_with_ranges_not_whole_packs(tmp_path, monkeypatch):
    r = Remote("team", str(tmp_path / "remote"))
    a = make_store(tmp_path / "a")
    objs = list(fill(a, 400, size=4096))
    r.push_objects(a, objs)
    reads = []
    fresh = Remote("team", str(tmp_path / "remote"))
    real = fresh.backend.read
    monkeypatch.setattr(fresh.backend, "read", lambda rel, start=None, end=None: reads.append(
        (rel, start, end)) or real(rel, start, end))
    wanted = sorted(objs)[::100]  # 4 objects spread over the pack
    got = fresh.fetch_objects(make_store(tmp_path / "b"), {o: o for o in wanted})
    assert got.objects == 4
    ranges = [(s, e) for rel, s, e in reads if rel.endswith(".pack")]
    assert ranges and sum(e - s for s, e in ranges) < 400 * 4096 / 2
