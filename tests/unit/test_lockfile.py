"""Mlfile.lock: stable JSON, atomic writes, and refusing what it cannot read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlmake.errors import MlfileError
from mlmake.lockfile import LOCK_FORMAT, Lock, LockEntry
from mlmake.model import OutRecord


def entry(key: str = "k1", env: str | None = None) -> LockEntry:
    return LockEntry(key=key, cmd="python train.py --lr 0.1",
                     deps={"src/train.py": "aa", "data/prepared": "bb"},
                     params={"train.lr": 0.1, "train.layers": [64, 32], "name": "ünï"},
                     env=env,
                     outs={"models/m.pkl": OutRecord("cc", "file", size=3),
                           "data/out": OutRecord("dd", "dir", size=10, files=2)})


def lock_with(tmp_path: Path, **entries: LockEntry) -> Lock:
    return Lock(str(tmp_path / "Mlfile.lock"), dict(entries))


def test_round_trip_keeps_every_field(tmp_path: Path):
    lock = lock_with(tmp_path, train=entry(env="envhash"), prepare=entry("k2"))
    assert lock.write()
    again = Lock.read(lock.path)
    assert again.entries == lock.entries
    assert again.entries["train"].env == "envhash"
    assert again.entries["prepare"].env is None


def test_missing_lock_file_reads_as_empty(tmp_path: Path):
    assert Lock.read(str(tmp_path / "Mlfile.lock")).entries == {}


def test_empty_lock_file_reads_as_empty(tmp_path: Path):
    (tmp_path / "Mlfile.lock").write_text("")
    assert Lock.read(str(tmp_path / "Mlfile.lock")).entries == {}


def test_rendering_is_sorted_with_two_space_indent(tmp_path: Path):
    lock = lock_with(tmp_path, train=entry(), evaluate=entry("k3"), prepare=entry("k2"))
    lock.write()
    text = Path(lock.path).read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert list(data) == ["targets", "version"]
    assert data["version"] == LOCK_FORMAT
    assert list(data["targets"]) == ["evaluate", "prepare", "train"]
    assert '\n  "targets": {\n    "evaluate": {\n      "cmd"' in text
    assert "ünï" in text  # diff-friendly: no \\u escapes


def test_rendering_is_independent_of_insertion_order(tmp_path: Path):
    a = lock_with(tmp_path, x=entry(), y=entry("k2")).render()
    b = lock_with(tmp_path, y=entry("k2"), x=entry()).render()
    assert a == b


def test_env_is_omitted_when_there_is_none(tmp_path: Path):
    data = json.loads(lock_with(tmp_path, t=entry()).render())
    assert "env" not in data["targets"]["t"]


def test_render_keeps_only_the_named_targets(tmp_path: Path):
    lock = lock_with(tmp_path, a=entry(), b=entry("k2"))
    lock.write(keep={"b"})
    assert set(Lock.read(lock.path).entries) == {"b"}


def test_write_leaves_no_temporary_files(tmp_path: Path):
    (tmp_path / "proj").mkdir()
    lock = lock_with(tmp_path / "proj", t=entry())
    lock.write()
    lock.entries["u"] = entry("k2")
    lock.write()
    assert sorted(os.listdir(tmp_path / "proj")) == ["Mlfile.lock"]


def test_write_replaces_the_file_rather_than_rewriting_it(tmp_path: Path):
    """Atomic: readers holding the old file see the old content, never a half-written one."""
    lock = lock_with(tmp_path, t=entry())
    lock.write()
    with open(lock.path, encoding="utf-8") as old:
        lock.entries["u"] = entry("k2")
        lock.write()
        assert "\"u\"" not in old.read()
    assert "\"u\"" in Path(lock.path).read_text()


def test_write_returns_false_when_unchanged(tmp_path: Path):
    lock = lock_with(tmp_path, t=entry())
    assert lock.write() is True
    mtime = os.stat(lock.path).st_mtime_ns
    assert lock.write() is False
    assert os.stat(lock.path).st_mtime_ns == mtime


def test_write_of_a_read_lock_returns_false_when_unchanged(tmp_path: Path):
    lock_with(tmp_path, t=entry()).write()
    assert Lock.read(str(tmp_path / "Mlfile.lock")).write() is False


def test_write_returns_true_when_an_entry_changed(tmp_path: Path):
    lock = lock_with(tmp_path, t=entry())
    lock.write()
    lock.entries["t"] = entry("k-new")
    assert lock.write() is True
    assert Lock.read(lock.path).entries["t"].key == "k-new"


def test_write_recreates_a_deleted_file(tmp_path: Path):
    lock = lock_with(tmp_path, t=entry())
    lock.write()
    os.unlink(lock.path)
    assert lock.write() is True
    assert os.path.exists(lock.path)


def test_invalid_json_is_an_mlfile_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "Mlfile.lock"
    path.write_text('{\n  "version": 1,\n  "targets": {,}\n}\n')
    with pytest.raises(MlfileError) as info:
        Lock.read(str(path))
    err = info.value
    assert (err.file, err.line) == ("Mlfile.lock", 3)
    assert str(err).startswith("Mlfile.lock:3:")
    assert "invalid JSON" in str(err)
    assert "git checkout -- Mlfile.lock" in str(err)


def test_newer_format_version_is_refused(tmp_path: Path):
    text = json.dumps({"version": LOCK_FORMAT + 1, "targets": {}})
    with pytest.raises(MlfileError) as info:
        Lock.parse(text, str(tmp_path / "Mlfile.lock"))
    assert f"lock format {LOCK_FORMAT + 1} is newer" in str(info.value)
    assert "upgrade mlmake" in str(info.value)
    assert info.value.file == "Mlfile.lock"


@pytest.mark.parametrize("targets", [[], {"t": "not a table"}, {"t": {"cmd": "no key"}},
                                     {"t": {"key": "k", "deps": "not a table"}}])
def test_malformed_entries_are_an_mlfile_error(tmp_path: Path, targets: object):
    text = json.dumps({"version": 1, "targets": targets})
    with pytest.raises(MlfileError, match="malformed"):
        Lock.parse(text, str(tmp_path / "Mlfile.lock"))


@pytest.mark.parametrize("text", ["[]", "42", "null", '"x"', '{"version": "2", "targets": {}}',
                                  '{"version": null}', '{"version": 1.5}'])
def test_lock_that_is_not_an_object_is_an_mlfile_error(tmp_path: Path, text: str):
    with pytest.raises(MlfileError) as info:
        Lock.parse(text, str(tmp_path / "Mlfile.lock"))
    assert info.value.file == "Mlfile.lock"
    assert "malformed" in str(info.value)


def test_a_lock_replaced_on_disk_is_not_overwritten(tmp_path):
    from mlmake.lockfile import LockChangedError

    path = tmp_path / "Mlfile.lock"
    lock = Lock.read(str(path))
    lock.entries["a"] = LockEntry("k1", "c", {}, {}, None, {})
    assert lock.write()
    path.write_text('{"targets": {}, "version": 1}\n')  # e.g. `git checkout` of another commit
    lock.entries["b"] = LockEntry("k2", "c", {}, {}, None, {})
    with pytest.raises(LockChangedError, match="was replaced while this build ran"):
        lock.write()
    assert path.read_text() == '{"targets": {}, "version": 1}\n'


# -- out records ------------------------------------------------------------------------------
BUILT = {  # the records a build writes: a file, an executable, a metric, a directory
    "model.bin": {"hash": "aa", "type": "file", "size": 3},
    "run.sh": {"hash": "bb", "type": "file", "size": 9, "exec": True},
    "metrics.json": {"hash": "cc", "type": "file", "size": 20, "metric": True},
    "data/out": {"hash": "dd", "type": "dir", "files": 2, "size": 10},
}


def test_out_records_keep_their_stored_form_byte_for_byte(tmp_path: Path):
    text = json.dumps({"targets": {"t": {"cmd": "c", "deps": {}, "key": "k", "outs": BUILT,
                                         "params": {}}}, "version": LOCK_FORMAT},
                      indent=2, sort_keys=True) + "\n"
    lock = Lock.parse(text, str(tmp_path / "Mlfile.lock"))
    assert lock.render() == text
    outs = lock.entries["t"].outs
    assert outs["run.sh"] == OutRecord("bb", size=9, executable=True)
    assert outs["data/out"].oid == "dd.dir" and outs["model.bin"].oid == "aa"
    assert {p: r.as_json() for p, r in outs.items()} == BUILT
    assert [list(outs[p].as_json()) for p in BUILT] == [list(d) for d in BUILT.values()]


def test_run_cache_entries_keep_their_stored_form(tmp_path: Path):
    from mlmake.runcache import RunCache

    cache = RunCache(str(tmp_path / "runcache"))
    cache.put("k" * 32, "t", {p: OutRecord.from_json(d) for p, d in BUILT.items()})
    data = json.loads(cache.raw("k" * 32) or b"")
    assert data["outs"] == BUILT and data["target"] == "t"
    assert cache.raw("k" * 32) == json.dumps(data, sort_keys=True).encode()
    assert cache.get("k" * 32) == {p: OutRecord.from_json(d) for p, d in BUILT.items()}


@pytest.mark.parametrize("outs", [{"o": {"type": "file"}}, {"o": {"hash": "a", "type": "link"}},
                                  {"o": {"hash": "a", "size": "3"}}, {"o": "a"}, ["o"]])
def test_a_run_cache_entry_with_bad_records_is_no_entry(tmp_path: Path, outs: object):
    from mlmake.runcache import RunCache

    cache = RunCache(str(tmp_path / "runcache"))
    cache.put_raw("k" * 32, json.dumps({"version": 1, "outs": outs}).encode())
    assert cache.get("k" * 32) is None
