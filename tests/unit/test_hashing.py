"""Content hashes, tree and glob digests, target keys and the stat cache."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest

from mlmake import hashing, statcache
from mlmake.hashing import (
    Entry,
    Hasher,
    StatCache,
    glob_digest,
    hash_bytes,
    hash_file,
    hash_parallel,
    target_key,
    tree_digest,
)

# -- pinned digests: a change here invalidates every user's lock, cache and remote -------------

PINNED_EMPTY = "99aa06d3014798d86001c324468d497f"  # XXH3-128 of b"", the reference value
PINNED_MLMAKE = "481b681d6754c8f673158d00103d07b3"
PINNED_TREE = "d37510a07bd7edf60b77831d29157e59"
PINNED_GLOB = "825a5ac3c5c055389717b35a872cd295"
PINNED_KEY = "26b920c8aec16a8797aa8352f5a51cc2"

TWO_ENTRIES = [Entry("a.txt", hash_bytes(b"a"), False), Entry("bin/run", hash_bytes(b"b"), True)]
KEY_ARGS = {"cmd": "python train.py --lr 0.1", "wdir": ".",
            "deps": {"data/raw.csv": hash_bytes(b"raw"), "src/train.py": hash_bytes(b"code")},
            "params": {"train.lr": 0.1, "train.n": 10}, "env": None,
            "outs": ["models/model.pkl"]}

PAST_NS = 1_600_000_000 * 10**9  # 2020: far outside the racy-timestamp window


def test_hash_bytes_is_xxh3_128_hex():
    assert hash_bytes(b"") == PINNED_EMPTY
    assert hash_bytes(b"mlmake") == PINNED_MLMAKE


def test_tree_digest_of_a_fixed_manifest_is_pinned():
    assert tree_digest(TWO_ENTRIES) == PINNED_TREE


def test_tree_digest_ignores_manifest_order():
    assert tree_digest(list(reversed(TWO_ENTRIES))) == PINNED_TREE


def test_glob_digest_of_a_fixed_match_is_pinned():
    assert glob_digest({"src/a.py": hash_bytes(b"a")}) == PINNED_GLOB


def test_target_key_of_a_fixed_input_is_pinned():
    assert target_key(**KEY_ARGS) == PINNED_KEY


def test_target_key_ignores_dict_and_out_order():
    args = dict(KEY_ARGS)
    args["deps"] = dict(reversed(list(KEY_ARGS["deps"].items())))
    args["params"] = dict(reversed(list(KEY_ARGS["params"].items())))
    args["outs"] = list(reversed(KEY_ARGS["outs"]))
    assert target_key(**args) == PINNED_KEY


@pytest.mark.parametrize("field, value", [
    ("cmd", "python train.py --lr 0.2"),
    ("wdir", "src"),
    ("deps", {"data/raw.csv": hash_bytes(b"other"), "src/train.py": hash_bytes(b"code")}),
    ("deps", {"data/raw.csv": hash_bytes(b"raw")}),
    ("params", {"train.lr": 0.2, "train.n": 10}),
    ("params", {"train.lr": "0.1", "train.n": 10}),
    ("env", "envdigest"),
    ("outs", ["models/other.pkl"]),
])
def test_target_key_changes_with_each_input(field, value):
    args = dict(KEY_ARGS, **{field: value})
    assert target_key(**args) != PINNED_KEY


def test_hash_file_equals_hash_of_its_bytes(tmp_path: Path):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    (tmp_path / "f").write_bytes(data)
    assert hash_file(str(tmp_path / "f")) == hash_bytes(data)


# -- helpers ------------------------------------------------------------------------------------

def write(root: Path, files: dict[str, bytes | str], past: bool = True) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        if past:
            os.utime(p, ns=(PAST_NS, PAST_NS))


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap hashing.hash_file so each actual read of a file is recorded."""
    calls: list[str] = []
    real = hashing.hash_file

    def counting(path: str) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashing, "hash_file", counting)
    return calls


# -- stat cache ---------------------------------------------------------------------------------

def test_unchanged_file_is_not_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path, {"data.csv": "a,b\n1,2\n"})
    cache = StatCache(None)
    first = Hasher(str(tmp_path), cache).file("data.csv")
    calls = count_reads(monkeypatch)
    assert Hasher(str(tmp_path), cache).file("data.csv") == first
    assert calls == []


def test_touched_file_keeps_its_hash(tmp_path: Path):
    """A touch changes mtime: the file is read again, and its hash stays the same."""
    write(tmp_path, {"data.csv": "a,b\n"})
    cache = StatCache(None)
    first = Hasher(str(tmp_path), cache).file("data.csv")
    os.utime(tmp_path / "data.csv", ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    assert Hasher(str(tmp_path), cache).file("data.csv") == first


@pytest.mark.parametrize("change", ["content-same-size", "content-new-size", "mtime"])
def test_changed_file_is_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str):
    write(tmp_path, {"data.csv": "aaaa"})
    cache = StatCache(None)
    Hasher(str(tmp_path), cache).file("data.csv")
    p = tmp_path / "data.csv"
    if change == "content-same-size":
        p.write_bytes(b"bbbb")
        os.utime(p, ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    elif change == "content-new-size":
        p.write_bytes(b"bbbbbb")
        os.utime(p, ns=(PAST_NS, PAST_NS))
    else:
        os.utime(p, ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    calls = count_reads(monkeypatch)
    digest = Hasher(str(tmp_path), cache).file("data.csv")
    assert calls == [str(p)]
    assert digest == hash_bytes(p.read_bytes())


def test_recently_modified_file_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Racy timestamps: a file written just now may change again within one mtime tick."""
    write(tmp_path, {"data.csv": "x"}, past=False)
    cache = StatCache(None)
    Hasher(str(tmp_path), cache).file("data.csv")
    calls = count_reads(monkeypatch)
    Hasher(str(tmp_path), cache).file("data.csv")
    assert len(calls) == 1


def test_stat_cache_persists_through_save_and_reload(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "p"
    write(root, {"data.csv": "x", "d/a": "1", "d/b": "2"})
    cache_file = str(tmp_path / "statcache")
    cache = StatCache(cache_file)
    h = Hasher(str(root), cache)
    f, d = h.file("data.csv"), h.path("d")
    cache.save()
    assert os.path.exists(cache_file)
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []

    calls = count_reads(monkeypatch)
    h2 = Hasher(str(root), StatCache(cache_file))
    assert (h2.file("data.csv"), h2.path("d")) == (f, d)
    assert calls == []


def test_save_without_changes_writes_nothing(tmp_path: Path):
    cache_file = tmp_path / "statcache"
    StatCache(str(cache_file)).save()
    assert not cache_file.exists()


@pytest.mark.parametrize("content", [
    b"",
    b"not a marshal file at all \xff\xfe",
    marshal.dumps((statcache.FORMAT, {"a": (1, 2, 3, "h")}, {}))[:9],  # truncated
    marshal.dumps((statcache.FORMAT + 1, {}, {})),                     # another format
    marshal.dumps(["a", "list"]),
    marshal.dumps((statcache.FORMAT, ["not", "a", "dict"], {})),       # right format number,
    marshal.dumps((statcache.FORMAT, {"data.csv": 5}, {})),            # wrong layout
    marshal.dumps((statcache.FORMAT, {"data.csv": (1, 2, 3)}, {})),
    marshal.dumps((statcache.FORMAT, {}, {"d": "sig"})),
    marshal.dumps((statcache.FORMAT, {}, {"d": ("sig", 7)})),
], ids=["empty", "garbage", "truncated", "other-format", "wrong-type", "files-not-a-dict",
        "file-entry-not-a-tuple", "file-entry-too-short", "tree-entry-not-a-tuple",
        "tree-entry-wrong-types"])
def test_corrupt_stat_cache_is_ignored(tmp_path: Path, content: bytes):
    root = tmp_path / "p"
    write(root, {"data.csv": "x"})
    cache_file = tmp_path / "statcache"
    cache_file.write_bytes(content)
    cache = StatCache(str(cache_file))
    assert cache.files == {} and cache.trees == {}
    assert Hasher(str(root), cache).file("data.csv") == hash_bytes(b"x")
    cache.save()
    assert StatCache(str(cache_file)).direct  # rewritten as a valid cache


# -- trees --------------------------------------------------------------------------------------

def tree_of(root: Path, files: dict[str, str], order: list[str] | None = None) -> str:
    for rel in order or list(files):
        write(root, {rel: files[rel]})
    return Hasher(str(root.parent)).path(root.name)


def test_tree_hash_is_independent_of_creation_order(tmp_path: Path):
    files = {"b.txt": "b", "a.txt": "a", "sub/c.txt": "c", "sub/deep/d": "d"}
    one = tree_of(tmp_path / "one", files)
    two = tree_of(tmp_path / "two", files, order=list(reversed(files)))
    assert one == two


@pytest.mark.parametrize("change", [
    {"a.txt": "A"},                     # content
    {"b.txt": "a"},                     # a file renamed
    {"sub/a.txt": "a"},                 # a file moved to a subdirectory
])
def test_tree_hash_changes_with_content_and_names(tmp_path: Path, change: dict[str, str]):
    base = tree_of(tmp_path / "base", {"a.txt": "a"})
    assert tree_of(tmp_path / "changed", change) != base


def test_symlink_loop_in_a_tree_is_not_followed(tmp_path: Path):
    plain = tree_of(tmp_path / "plain", {"a.txt": "a", "sub/b.txt": "b"})
    tree_of(tmp_path / "loops", {"a.txt": "a", "sub/b.txt": "b"})
    os.symlink(".", tmp_path / "loops" / "self")
    os.symlink("..", tmp_path / "loops" / "sub" / "up")
    h = Hasher(str(tmp_path))
    assert [p for p, _ in h._walk("loops")] == ["a.txt", "sub/b.txt"]
    assert h.path("loops") == plain


@pytest.mark.timeout(30)  # a pipe's read waits for a writer: a hang, were it read
def test_pipes_sockets_and_devices_in_a_tree_are_left_out_and_refused_alone(tmp_path: Path):
    import socket

    from mlmake.errors import UsageError

    plain = tree_of(tmp_path / "plain", {"a.txt": "a", "sub/b.txt": "b"})
    tree_of(tmp_path / "odd", {"a.txt": "a", "sub/b.txt": "b"})
    os.mkfifo(tmp_path / "odd" / "pipe")
    os.symlink("/dev/zero", tmp_path / "odd" / "sub" / "zeros")  # a read that never ends
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "odd" / "sock"))
        h = Hasher(str(tmp_path))
        assert [p for p, _ in h._walk("odd")] == ["a.txt", "sub/b.txt"]
        assert h.path("odd") == plain
        for rel in ("odd/pipe", "odd/sub/zeros", "odd/sock"):
            with pytest.raises(UsageError, match=f"'{rel}' is a pipe, socket or device"):
                h.path(rel)


def test_symlink_to_another_directory_is_followed(tmp_path: Path):
    write(tmp_path, {"shared/c.txt": "c", "tree/a.txt": "a"})
    os.symlink("../shared", tmp_path / "tree" / "linked")
    os.symlink("../shared", tmp_path / "tree" / "again")
    h = Hasher(str(tmp_path))
    assert [p for p, _ in h._walk("tree")] == ["a.txt", "again/c.txt", "linked/c.txt"]


def test_tree_hash_changes_with_an_added_file(tmp_path: Path):
    base = tree_of(tmp_path / "base", {"a.txt": "a"})
    assert tree_of(tmp_path / "more", {"a.txt": "a", "b.txt": ""}) != base


def test_tree_hash_changes_with_the_executable_bit(tmp_path: Path):
    plain = tree_of(tmp_path / "plain", {"run.sh": "echo hi"})
    tree_of(tmp_path / "exe", {"run.sh": "echo hi"})
    os.chmod(tmp_path / "exe" / "run.sh", 0o755)
    assert Hasher(str(tmp_path)).path("exe") != plain


def test_cached_tree_notices_a_chmod(tmp_path: Path):
    """chmod leaves mtime alone: the tree's stat signature must still see it."""
    write(tmp_path, {"d/run.sh": "echo hi"})
    cache = StatCache(None)
    before = Hasher(str(tmp_path), cache).path("d")
    assert "d" in cache.trees
    os.chmod(tmp_path / "d" / "run.sh", 0o755)
    assert Hasher(str(tmp_path), cache).path("d") != before


def test_cached_tree_notices_an_edit(tmp_path: Path):
    write(tmp_path, {"d/a": "1", "d/b": "2"})
    cache = StatCache(None)
    before = Hasher(str(tmp_path), cache).path("d")
    write(tmp_path, {"d/b": "3"})
    os.utime(tmp_path / "d" / "b", ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    assert Hasher(str(tmp_path), cache).path("d") != before


def test_unchanged_tree_is_not_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path, {"d/a": "1", "d/sub/b": "2"})
    cache = StatCache(None)
    before = Hasher(str(tmp_path), cache).path("d")
    calls = count_reads(monkeypatch)
    assert Hasher(str(tmp_path), cache).path("d") == before
    assert calls == []


def test_empty_directory_hashes_as_the_empty_manifest(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    digest, entries = Hasher(str(tmp_path)).tree("empty", manifest=True)
    assert entries == []
    assert digest == tree_digest([])
    assert Hasher(str(tmp_path)).path("empty") == tree_digest([])


def test_tree_manifest_lists_sorted_entries_with_exec_bit(tmp_path: Path):
    write(tmp_path, {"d/z.txt": "z", "d/a/b.txt": "b"})
    os.chmod(tmp_path / "d" / "z.txt", 0o755)
    digest, entries = Hasher(str(tmp_path)).tree("d", manifest=True)
    assert entries == [Entry("a/b.txt", hash_bytes(b"b"), False),
                       Entry("z.txt", hash_bytes(b"z"), True)]
    assert digest == tree_digest(entries)


# -- globs and deps -----------------------------------------------------------------------------

def test_recursive_glob_matches_files_at_every_depth(tmp_path: Path):
    write(tmp_path, {"src/a.py": "a", "src/pkg/b.py": "b", "src/pkg/data.csv": "c",
                     "top.py": "t"})
    digest, found = Hasher(str(tmp_path)).glob("src/**/*.py")
    assert found == {"src/a.py": hash_bytes(b"a"), "src/pkg/b.py": hash_bytes(b"b")}
    assert digest == glob_digest(found)


def test_glob_dep_changes_when_a_matching_file_is_added(tmp_path: Path):
    write(tmp_path, {"src/a.py": "a"})
    before = Hasher(str(tmp_path)).dep("src/**/*.py")
    write(tmp_path, {"src/new/c.py": "c"})
    assert Hasher(str(tmp_path)).dep("src/**/*.py") != before


def test_glob_dep_ignores_files_it_does_not_match(tmp_path: Path):
    write(tmp_path, {"src/a.py": "a"})
    before = Hasher(str(tmp_path)).dep("src/**/*.py")
    write(tmp_path, {"src/notes.txt": "n"})
    assert Hasher(str(tmp_path)).dep("src/**/*.py") == before


@pytest.mark.parametrize("dep, kind", [
    ("data.csv", "file"),
    ("data", "tree"),
    ("data/", "tree"),
    ("src/*.py", "glob"),
])
def test_dep_hashes_files_trees_and_globs(tmp_path: Path, dep: str, kind: str):
    write(tmp_path, {"data.csv": "x", "data/a": "a", "src/m.py": "m"})
    h = Hasher(str(tmp_path))
    expected = {"file": hash_bytes(b"x"), "tree": h.path("data"),
                "glob": glob_digest({"src/m.py": hash_bytes(b"m")})}[kind]
    assert h.dep(dep) == expected


@pytest.mark.parametrize("dep", ["missing.csv", "missing/dir/", "data.csv/inside",
                                 "src/**/*.rs", "nothing/*.py"])
def test_dep_is_none_for_missing_paths(tmp_path: Path, dep: str):
    write(tmp_path, {"data.csv": "x", "src/m.py": "m"})
    assert Hasher(str(tmp_path)).dep(dep) is None


def test_large_tree_hashed_in_parallel_matches_serial(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hashing, "_PARALLEL_BYTES", 1)
    write(tmp_path, {f"d/f{i}": str(i) * 100 for i in range(20)})
    parallel = Hasher(str(tmp_path)).tree("d", manifest=True)
    monkeypatch.setattr(hashing, "_PARALLEL_BYTES", 1 << 60)
    assert Hasher(str(tmp_path)).tree("d", manifest=True) == parallel


# -- tree signatures ----------------------------------------------------------------------------

def _tree(tmp_path: Path, n: int = 3) -> Path:
    root = tmp_path / "sig"
    for i in range(n):
        write(root, {f"d{i}/a.txt": f"a{i}", f"d{i}/sub/b.txt": f"b{i}"})
    return root


def test_find_signatures_split_many_trees_like_one_at_a_time(tmp_path: Path):
    root = _tree(tmp_path, 10)
    h = Hasher(str(root), StatCache(None))
    together = h.signatures([f"d{i}" for i in range(10)])
    if not together:
        pytest.skip("GNU find is not available: the Python walk is used instead")
    assert together == {f"d{i}": h.signatures([f"d{i}"])[f"d{i}"] for i in range(10)}
    assert len(set(together.values())) == 10


def test_signature_changes_when_a_file_changes_in_place(tmp_path: Path):
    root = _tree(tmp_path, 1)
    h = Hasher(str(root), StatCache(None))
    before = h.signatures(["d0"])
    if not before:
        pytest.skip("GNU find is not available")
    f = root / "d0" / "sub" / "b.txt"
    f.write_text("B0")  # same size, new content and mtime
    assert h.signatures(["d0"]) != before


@pytest.mark.parametrize("use_find", [True, False], ids=["find", "python-walk"])
def test_tree_hash_is_the_same_with_or_without_find(tmp_path: Path, monkeypatch, use_find):
    root = _tree(tmp_path, 2)
    expected = Hasher(str(root), StatCache(None)).tree("d1", manifest=True)[0]
    if not use_find:
        monkeypatch.setattr(hashing, "_FIND", None)
    cache = StatCache(str(tmp_path / "cache"))
    h = Hasher(str(root), cache)
    h.now_ns += 10**12  # nothing here is "racy"
    h.prefetch(["d0", "d1"])
    assert h.tree("d1")[0] == expected
    cache.save()
    h2 = Hasher(str(root), StatCache(str(tmp_path / "cache")))
    h2.now_ns += 10**12
    assert h2.tree("d1")[0] == expected  # from the signature fast path
    (root / "d1" / "a.txt").write_text("changed")
    assert h2.tree("d1")[0] != expected


# -- bulk hashing (what `mlmake add` uses) ------------------------------------------------------

def test_forked_workers_hash_a_large_tree_exactly_as_a_read_does(tmp_path: Path):
    files = {f"d/{i:02d}/f{i}.bin": os.urandom(1 << 20) + bytes([i]) for i in range(34)}
    files["d/empty"] = b""
    write(tmp_path, files)  # 34 MiB: over the size where workers are used
    scan = Hasher(str(tmp_path), StatCache(None), forked=True).scan("d")
    digest, entries = Hasher(str(tmp_path), StatCache(None)).tree("d", manifest=True)
    assert (scan.digest, scan.entries) == (digest, entries)
    assert [e.hash for e in entries] == [hash_bytes(files["d/" + e.path]) for e in entries]
    assert [s.st_size for s in scan.stats] == [len(files["d/" + e.path]) for e in entries]


def test_a_file_a_worker_cannot_read_is_reported_by_the_caller(tmp_path: Path):
    # in a fresh interpreter: hash_parallel forks only while no other thread runs, and this
    # test session may hold threads of other tests' servers
    import subprocess
    import sys
    import textwrap

    write(tmp_path, {"a": "1", "b": "2"})
    paths = [str(tmp_path / "a"), str(tmp_path / "gone"), str(tmp_path / "b")]
    code = textwrap.dedent(f"""
        import pytest
        from mlmake.hashing import hash_bytes, hash_parallel
        paths = {paths!r}
        with pytest.raises(FileNotFoundError):
            hash_parallel(paths)
        assert hash_parallel(paths[::2]) == [hash_bytes(b"1"), hash_bytes(b"2")]
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_workers_hand_their_results_over_in_batches_as_they_go(tmp_path: Path):
    # in a fresh interpreter, as above
    import subprocess
    import sys
    import textwrap

    files = {f"d/{i % 3}/f{i:03d}.bin": os.urandom(1 << 18) + bytes([i]) for i in range(140)}
    write(tmp_path, files)  # 35 MiB: hashed by the workers
    code = textwrap.dedent(f"""
        import os
        from mlmake.forked import forked_map
        from mlmake.hashing import Hasher, StatCache

        def odd(i):
            if i == 500:
                raise OSError("no")
            return i * i
        calls = []
        found = forked_map(odd, range(1000), lambda ix, rs: calls.append((ix, rs)), batch=64)
        assert found == [None if i == 500 else i * i for i in range(1000)], found
        seen = [i for ix, _ in calls for i in ix]
        assert sorted(seen) == list(range(1000)) and len(calls) > 2, len(calls)
        assert all(r == (None if i == 500 else i * i)
                   for ix, rs in calls for i, r in zip(ix, rs))
        # batches larger than a pipe holds arrive over several reads
        big = forked_map(lambda i: "x" * 3000 + str(i), range(600), batch=50)
        assert big == ["x" * 3000 + str(i) for i in range(600)]
        # a worker held up by a slow batch leaves the other batches to the others
        import time
        def slow_first(i):
            if i < 10:
                time.sleep(0.05)
            return os.getpid()
        pids = forked_map(slow_first, range(1000), batch=10)
        if len(os.sched_getaffinity(0)) > 1:
            assert pids.count(pids[0]) < 500, pids.count(pids[0])
        # a few items are still shared out between the workers
        assert len(set(forked_map(lambda i: (time.sleep(0.2), os.getpid())[1], range(4)))) \\
            == min(4, len(os.sched_getaffinity(0)))

        got = []
        scan = Hasher({str(tmp_path)!r}, StatCache(None), forked=True).scan("d", got.append)
        assert len(got) > 1, len(got)
        each = sorted((p, d) for batch in got for p, d, _ in batch)
        assert each == sorted(("d/" + e.path, e.hash) for e in scan.entries), each[:3]
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_large_tree_is_statted_and_hashed_by_the_workers_as_a_walk_would(tmp_path: Path):
    # in a fresh interpreter, as above. Over 1,024 files the walk leaves the regular files
    # unstatted and forked workers stat them, through the stat cache, and hash them
    import subprocess
    import sys
    import textwrap

    files = {f"d/{i % 7}/f{i:04d}.txt": f"file {i}" for i in range(1100)}
    write(tmp_path, files)
    os.chmod(tmp_path / "d/3/f0003.txt", 0o755)
    os.symlink("0/f0000.txt", tmp_path / "d/link.txt")  # a symlinked file: statted by the walk
    os.symlink("nowhere", tmp_path / "d/broken")  # left out, as a walk leaves it
    code = textwrap.dedent(f"""
        import os
        from mlmake.hashing import Hasher, StatCache
        root = {str(tmp_path)!r}
        serial = Hasher(root, StatCache(None)).scan("d")
        got = []
        forked = Hasher(root, StatCache(None), forked=True).scan("d", got.append)
        assert forked.entries == serial.entries, (forked.entries[:3], serial.entries[:3])
        assert forked.digest == serial.digest
        fields = ("st_ino", "st_dev", "st_nlink", "st_size", "st_mtime_ns", "st_mode")
        assert [[getattr(s, f) for f in fields] for s in forked.stats] == \\
            [[getattr(s, f) for f in fields] for s in serial.stats]
        assert sorted(p for batch in got for p, _, _ in batch) == \\
            ["d/" + e.path for e in serial.entries]
        assert len(serial.entries) == 1101 and serial.entries[-1].path == "link.txt"
        # stats rebuilt by field name where os.stat_result has another layout
        import mlmake.hashing
        mlmake.hashing._mtime_ns_at_14 = lambda: False
        named = Hasher(root, StatCache(None), forked=True).scan("d")
        assert [[getattr(s, f) for f in fields] for s in named.stats] == \\
            [[getattr(s, f) for f in fields] for s in serial.stats]
        assert [e.executable for e in serial.entries].count(True) == 1

        # the workers read the stat cache: a file whose entry matches its stat is not read
        cache = StatCache(None)
        st = os.stat(root + "/d/5/f0005.txt")
        cache.files["d/5/f0005.txt"] = (st.st_ino, st.st_size, st.st_mtime_ns, "c" * 32)
        again = Hasher(root, cache, forked=True).scan("d")
        assert [e.hash for e in again.entries if e.path == "5/f0005.txt"] == ["c" * 32]

        # a file gone since the walk is left out; one that cannot be read raises here
        h = Hasher(root, StatCache(None), forked=True)
        names = [e.path for e in serial.entries[:-1]]
        entries, stats = h._visit_forked("d", names + ["gone.txt"], None)
        assert [e.path for e in entries] == sorted(names) and len(stats) == len(names)
        try:
            h._visit_forked("d", names + ["0"], None)  # a directory
        except IsADirectoryError as exc:
            assert exc.filename == root + "/d/0", exc.filename
        else:
            raise AssertionError("a directory was hashed")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_workers_are_forked_while_threads_run(tmp_path: Path):
    import threading

    write(tmp_path, {"a": "1"})
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert hash_parallel([str(tmp_path / "a")]) is None
    finally:
        stop.set()
        t.join()


def test_a_settled_tree_is_known_until_a_file_changes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    write(tmp_path, {"d/a": "1", "d/sub/b": "2"})
    cache = StatCache(None)
    scan = Hasher(str(tmp_path), cache).scan("d")
    states = [(s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode) for s in scan.stats]
    hasher = Hasher(str(tmp_path), cache)
    assert hasher.known("d") is None  # scanned, not settled
    assert hasher.settle("d", scan.digest, [(e.path, st) for e, st in
                                             zip(scan.entries, states, strict=True)])
    calls = count_reads(monkeypatch)
    assert Hasher(str(tmp_path), cache).known("d") == scan.digest
    assert Hasher(str(tmp_path), cache).path("d") == scan.digest  # a check with find
    assert calls == []
    os.chmod(tmp_path / "d" / "a", 0o444)
    assert Hasher(str(tmp_path), cache).known("d") is None


def test_a_tree_settled_with_states_it_does_not_have_is_not_known(tmp_path: Path):
    write(tmp_path, {"d/a": "1"})
    cache = StatCache(None)
    scan = Hasher(str(tmp_path), cache).scan("d")
    s = scan.stats[0]
    Hasher(str(tmp_path), cache).settle("d", scan.digest, [
        ("a", (s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode & ~0o222))])
    assert Hasher(str(tmp_path), cache).known("d") is None


def test_a_recently_written_tree_is_not_settled(tmp_path: Path):
    write(tmp_path, {"d/a": "1"}, past=False)
    cache = StatCache(None)
    scan = Hasher(str(tmp_path), cache).scan("d")
    s = scan.stats[0]
    assert not Hasher(str(tmp_path), cache).settle(
        "d", scan.digest, [("a", (s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode))])
    assert "d" not in cache.trees
