"""The object store: saving outs, restoring them by link or copy, and refusing corrupt objects."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mlmake.model import OutRecord
from mlmake.events import Notice
from mlmake.hashing import Hasher, StatCache, hash_file
from mlmake.store import (
    MANIFEST_SUFFIX,
    CorruptObjectError,
    MissingObjectError,
    Store,
    remove_path,
)

from .conftest import CHAIN, Workspace, corrupt, started, statuses


class Tree:
    """A work tree and an object store beside it, for the store's own tests."""

    def __init__(self, tmp_path: Path, links: tuple[str, ...]) -> None:
        self.root = tmp_path / "wt"
        self.root.mkdir()
        self.store = Store(str(tmp_path / "cache"), str(self.root), StatCache(None), links)
        self.hasher = Hasher(str(self.root), StatCache(None))

    def write(self, rel: str, data: bytes, executable: bool = False) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if executable:
            p.chmod(0o755)

    def save(self, rel: str) -> dict[str, Any]:
        """Hash `rel` as a build does, save it into the store, and return its out record."""
        full = self.root / rel
        rec: dict[str, Any]
        if full.is_dir():
            digest, entries = self.hasher.tree(rel, manifest=True)
            rec = OutRecord(digest, "dir")
            self.store.save_out(rel, rec, entries)
            return rec
        rec = OutRecord(hash_file(str(full)), "file")
        if os.access(full, os.X_OK):
            rec["exec"] = True
        self.store.save_out(rel, rec, None)
        return rec

    def obj(self, oid: str) -> Path:
        return Path(self.store.object_path(oid))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path, ("hardlink", "copy"))


def writable(p: Path) -> bool:
    return bool(p.stat().st_mode & stat.S_IWUSR)


def test_saved_out_becomes_a_read_only_object_named_by_its_hash(tree: Tree):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    obj = tree.obj(rec.hash)
    assert obj.read_bytes() == b"model bytes"
    assert hash_file(str(obj)) == rec.hash
    assert obj.stat().st_mode & 0o222 == 0


def test_saved_out_is_linked_back_into_the_work_tree_read_only(tree: Tree):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    out = tree.root / "m.bin"
    assert os.path.samefile(out, tree.obj(rec.hash))
    assert not writable(out)


def test_metrics_saved_without_link_stay_ordinary_writable_files(tree: Tree):
    tree.write("metrics.json", b'{"acc": 1}')
    oid = hash_file(str(tree.root / "metrics.json"))
    tree.store.save_out("metrics.json", OutRecord(oid, "file"), None, link=False)
    out = tree.root / "metrics.json"
    assert tree.store.has(oid)
    assert not os.path.samefile(out, tree.obj(oid)) and writable(out)


def test_restore_in_hardlink_mode_shares_the_object(tree: Tree):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    remove_path(str(tree.root / "m.bin"))
    assert tree.store.restore("m.bin", rec) == 1
    assert tree.store.link_type == "hardlink"
    assert os.path.samefile(tree.root / "m.bin", tree.obj(rec.hash))


def test_restore_in_copy_mode_gives_a_private_writable_copy(tmp_path: Path):
    tree = Tree(tmp_path, ("copy",))
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    remove_path(str(tree.root / "m.bin"))
    tree.store.restore("m.bin", rec)
    out = tree.root / "m.bin"
    assert tree.store.link_type == "copy"
    assert out.read_bytes() == b"model bytes"
    assert not os.path.samefile(out, tree.obj(rec.hash)) and writable(out)


def test_link_types_without_hardlink_never_share_the_objects_inode(tmp_path: Path):
    tree = Tree(tmp_path, ("reflink", "copy"))  # reflink where the filesystem can, else copy
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    tree.store.restore("m.bin", rec)
    assert tree.store.link_type in ("reflink", "copy")
    assert (tree.root / "m.bin").stat().st_nlink == 1


def test_corrupt_object_is_never_linked(tree: Tree):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    remove_path(str(tree.root / "m.bin"))
    corrupt(tree.obj(rec.hash))
    with pytest.raises(CorruptObjectError) as err:
        tree.store.restore("m.bin", rec)
    assert (err.value.oid, err.value.out) == (rec.hash, "m.bin")
    assert not (tree.root / "m.bin").exists()
    assert not tree.store.has(rec.hash)


def test_corrupt_object_leaves_the_work_tree_file_in_place(tree: Tree):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    remove_path(str(tree.root / "m.bin"))
    tree.write("m.bin", b"the user's file")
    corrupt(tree.obj(rec.hash))
    with pytest.raises(CorruptObjectError):
        tree.store.restore("m.bin", rec)
    assert (tree.root / "m.bin").read_bytes() == b"the user's file"


def test_edit_written_through_a_hard_link_is_kept_under_its_real_hash(tree: Tree):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    out = tree.root / "m.bin"
    out.chmod(0o644)
    out.write_bytes(b"edited bytes")  # through the link: the object changes too
    with pytest.raises(CorruptObjectError):
        tree.store.verify(rec.hash, "m.bin")
    assert not tree.store.has(rec.hash)
    assert tree.store.has(hash_file(str(out)))  # the user's only copy is not thrown away


def test_corruption_after_a_clean_verify_is_still_detected(tree: Tree):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    remove_path(str(tree.root / "m.bin"))
    tree.store.verify(rec.hash)  # now remembered as good by its stat signature
    corrupt(tree.obj(rec.hash))
    with pytest.raises(CorruptObjectError):
        tree.store.verify(rec.hash)


def test_restoring_an_object_the_store_lacks_names_the_out(tree: Tree):
    with pytest.raises(MissingObjectError) as err:
        tree.store.restore("gone.bin", OutRecord("0" * 32, "file"))
    assert err.value.out == "gone.bin"
    assert "mlmake pull" in str(err.value)


def test_directory_out_round_trips_with_its_executable_bits(tree: Tree):
    tree.write("d/a.txt", b"a")
    tree.write("d/sub/run.sh", b"#!/bin/sh\n", executable=True)
    rec = tree.save("d")
    entries = tree.store.manifest(rec.hash)
    assert entries is not None
    assert sorted((e.path, e.executable) for e in entries) == [("a.txt", False),
                                                               ("sub/run.sh", True)]
    remove_path(str(tree.root / "d"))
    assert tree.store.restore("d", rec) == 2
    assert (tree.root / "d/a.txt").read_bytes() == b"a"
    assert os.access(tree.root / "d/sub/run.sh", os.X_OK)
    assert tree.hasher.tree("d")[0] == rec.hash


def test_directory_out_needs_its_manifest_and_every_file_object(tree: Tree):
    tree.write("d/a.txt", b"a")
    tree.write("d/b.txt", b"b")
    rec = tree.save("d")
    a = hash_file(str(tree.root / "d/a.txt"))
    assert sorted(tree.store.record_oids(rec)) == sorted(
        [rec.hash + MANIFEST_SUFFIX, a, hash_file(str(tree.root / "d/b.txt"))])
    assert tree.store.missing(rec) == []
    remove_path(str(tree.root / "d"))
    tree.store.remove(a)
    assert tree.store.missing(rec) == [a]


def test_identical_files_in_a_directory_out_are_stored_once(tree: Tree):
    tree.write("d/a.txt", b"same")
    tree.write("d/b.txt", b"same")
    rec = tree.save("d")
    assert sorted(tree.store.all_oids()) == sorted(
        [rec.hash + MANIFEST_SUFFIX, hash_file(str(tree.root / "d/a.txt"))])


def test_one_corrupt_file_leaves_the_whole_directory_untouched(tree: Tree):
    tree.write("d/a.txt", b"a")
    tree.write("d/b.txt", b"b")
    rec = tree.save("d")
    remove_path(str(tree.root / "d"))
    tree.write("d/old.txt", b"previous version")
    corrupt(tree.obj(_entry_oid(tree, rec, "b.txt")))
    with pytest.raises(CorruptObjectError):
        tree.store.restore("d", rec)
    assert sorted(os.listdir(tree.root / "d")) == ["old.txt"]


def _entry_oid(tree: Tree, rec: dict[str, Any], path: str) -> str:
    entries = tree.store.manifest(rec.hash) or []
    return next(e.hash for e in entries if e.path == path)


def test_corrupt_manifest_is_refused_and_taken_out(tree: Tree):
    tree.write("d/a.txt", b"a")
    rec = tree.save("d")
    manifest = tree.obj(rec.hash + MANIFEST_SUFFIX)
    manifest.chmod(0o644)
    manifest.write_text('[["a.txt","00000000000000000000000000000000",false]]')
    with pytest.raises(CorruptObjectError):
        tree.store.manifest(rec.hash)
    assert not tree.store.has(rec.hash + MANIFEST_SUFFIX)


def test_export_writes_a_writable_copy_never_a_link(tree: Tree, tmp_path: Path):
    tree.write("m.bin", b"model bytes")
    rec = tree.save("m.bin")
    dest = tmp_path / "export" / "m.bin"
    tree.store.export(rec, str(dest))
    assert dest.read_bytes() == b"model bytes"
    assert not os.path.samefile(dest, tree.obj(rec.hash)) and writable(dest)


def test_export_of_a_path_inside_a_directory_out(tree: Tree, tmp_path: Path):
    tree.write("d/sub/x.txt", b"x")
    tree.write("d/y.txt", b"y")
    rec = tree.save("d")
    tree.store.export(rec, str(tmp_path / "one.txt"), inner="sub/x.txt")
    tree.store.export(rec, str(tmp_path / "part"), inner="sub")
    assert (tmp_path / "one.txt").read_bytes() == b"x"
    assert os.listdir(tmp_path / "part") == ["x.txt"]


# -- the store as a build uses it -----------------------------------------------------------------
def test_build_reruns_a_target_whose_cached_object_is_corrupt(built: Workspace):
    oid = built.out_hash("train", "model.txt")
    built.remove("model.txt")
    corrupt(built.project().store().object_path(oid))
    result, rec = built.run()
    assert started(rec) == ["train"]
    assert statuses(result) == {"prepare": "uptodate", "train": "ran", "evaluate": "uptodate"}
    assert any("corrupt" in n.text and n.level == "warning" for n in rec.of(Notice))
    assert built.read("model.txt") == "HELLO\nlr=0.1\n"
    assert hash_file(built.project().store().object_path(oid)) == oid


def test_build_stores_a_directory_out_as_a_manifest(ws: Workspace):
    ws.write({"Mlfile": '[target.split]\ncmd = "mkdir -p parts && echo 1 > parts/a '
                        '&& echo 2 > parts/b"\nouts = ["parts/"]\n'})
    assert ws.run()[0].ok
    store = ws.project().store()
    tree_hash = ws.out_hash("split", "parts")
    assert store.has(tree_hash + MANIFEST_SUFFIX)
    entries = store.manifest(tree_hash)
    assert entries is not None and sorted(e.path for e in entries) == ["a", "b"]
    ws.remove("parts")
    result, _ = ws.run()
    assert result.outcomes["split"].status == "reused"
    assert ws.read("parts/b") == "2\n"


def test_copy_link_mode_gives_a_freshly_built_out_a_private_copy(ws: Workspace):
    ws.write({**CHAIN, "Mlfile": '[project]\nlink = ["copy"]\n\n' + CHAIN["Mlfile"]})
    assert ws.run()[0].ok
    model = ws.root / "model.txt"
    assert not os.path.samefile(model, ws.project().store().object_path(
        ws.out_hash("train", "model.txt")))


# -- adopting work-tree files (what `mlmake add` does) -----------------------------------------
def _adopt(tree: Tree, *rels: str) -> list[tuple[int, int, int, int]]:
    files = []
    for rel in rels:
        full = str(tree.root / rel)
        st = os.stat(full)
        files.append((full, hash_file(full), bool(st.st_mode & 0o111), st))
    return tree.store.adopt(files)


def test_adopted_files_become_their_own_read_only_objects(tree: Tree):
    tree.write("d/a.txt", b"a")
    tree.write("d/run.sh", b"#!/bin/sh\n", executable=True)
    states = _adopt(tree, "d/a.txt", "d/run.sh")
    for rel, state in zip(("d/a.txt", "d/run.sh"), states, strict=True):
        p = tree.root / rel
        st = p.stat()
        assert os.path.samefile(p, tree.obj(hash_file(str(p))))  # no second copy
        assert not writable(p)
        assert state == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    assert os.access(tree.root / "d/run.sh", os.X_OK)
    tree.store.verify(hash_file(str(tree.root / "d/run.sh")))


def test_a_file_whose_content_is_stored_becomes_a_link_to_that_object(tree: Tree):
    tree.write("a.txt", b"same")
    tree.write("b.txt", b"same")
    _adopt(tree, "a.txt")
    [state] = _adopt(tree, "b.txt")
    assert os.path.samefile(tree.root / "a.txt", tree.root / "b.txt")
    assert state[0] == (tree.root / "a.txt").stat().st_ino


def test_a_corrupt_stored_object_is_replaced_never_linked(tree: Tree):
    tree.write("a.txt", b"good bytes")
    oid = hash_file(str(tree.root / "a.txt"))
    _adopt(tree, "a.txt")
    remove_path(str(tree.root / "a.txt"))
    corrupt(tree.obj(oid))
    tree.write("b.txt", b"good bytes")
    _adopt(tree, "b.txt")
    assert (tree.root / "b.txt").read_bytes() == b"good bytes"
    assert os.path.samefile(tree.root / "b.txt", tree.obj(oid))
    tree.store.verify(oid)


def test_adopting_without_hard_links_stores_copies_and_leaves_the_files(tmp_path: Path):
    tree = Tree(tmp_path, ("copy",))
    tree.write("a.txt", b"a")
    before = (tree.root / "a.txt").stat()
    [state] = _adopt(tree, "a.txt")
    assert state[0] == before.st_ino and writable(tree.root / "a.txt")
    obj = tree.obj(hash_file(str(tree.root / "a.txt")))
    assert obj.read_bytes() == b"a" and not writable(obj)
    assert not os.path.samefile(obj, tree.root / "a.txt")
