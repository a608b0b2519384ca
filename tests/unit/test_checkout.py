"""Project.checkout: a commit's outs come back from the cache; what it touched is reported."""

from __future__ import annotations

import pytest

from mlmake.checkout import ModifiedOutError
from mlmake.errors import UsageError
from mlmake.lockfile import Lock
from mlmake.store import CorruptObjectError

from .conftest import CHAIN, Workspace, corrupt, out_hash

V1 = "HELLO\nlr=0.1\n"
V2 = "HELLO\nlr=0.25\n"  # one byte longer, so evaluate's score differs too


class History:
    """The chain built and committed at lr = 0.1 (`old`), then at lr = 0.25 (`new`)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.first = ws.commit("nothing built")
        assert ws.run()[0].ok
        self.old = ws.commit("lr 0.1")
        ws.set_param(0.25)
        assert ws.run()[0].ok
        self.new = ws.commit("lr 0.25")


@pytest.fixture
def history(ws: Workspace) -> History:
    ws.write(CHAIN)
    return History(ws)


def test_checkout_restores_the_outs_an_older_commit_recorded(history: History):
    ws = history.ws
    result = ws.project().checkout(history.old)
    assert result.commit == history.old
    assert sorted(result.restored) == ["model.txt", "score.txt"]
    assert result.unchanged == ["prepared.txt"]
    assert result.missing == []
    assert ws.read("model.txt") == V1
    assert ws.read("score.txt").strip() == "13"


def test_checkout_leaves_tracked_files_and_the_lock_alone(history: History):
    ws = history.ws
    ws.project().checkout(history.old)
    assert ws.git("status", "--porcelain") == ""
    assert ws.read("params.toml") == "[train]\nlr = 0.25\n"
    assert ws.status().stale == ["train", "evaluate"]  # the work tree's lock is still lr 0.25


def test_checkout_back_to_the_newer_commit_restores_its_outs(history: History):
    ws = history.ws
    ws.project().checkout(history.old)
    result = ws.project().checkout(history.new)
    assert sorted(result.restored) == ["model.txt", "score.txt"]
    assert ws.read("model.txt") == V2
    assert ws.status().stale == []


def test_checkout_without_a_rev_restores_from_the_work_tree_lock(history: History):
    ws = history.ws
    ws.remove("model.txt")
    result = ws.project().checkout()
    assert result.commit == "workspace"
    assert result.restored == ["model.txt"]
    assert ws.read("model.txt") == V2


def test_checkout_of_a_commit_without_a_lock_touches_nothing(history: History):
    result = history.ws.project().checkout(history.first)
    assert (result.restored, result.unchanged, result.missing) == ([], [], [])
    assert history.ws.read("model.txt") == V2


def test_checkout_refuses_to_overwrite_a_hand_edited_out_and_changes_nothing(
        history: History):
    ws = history.ws
    ws.write({"model.txt": "my edit\n"})
    ws.remove("score.txt")
    with pytest.raises(ModifiedOutError) as err:
        ws.project().checkout(history.old)
    assert err.value.paths == ["model.txt"]
    assert ws.read("model.txt") == "my edit\n"
    assert not ws.exists("score.txt")  # refused before a single file changed


def test_forced_checkout_overwrites_a_hand_edited_out(history: History):
    ws = history.ws
    ws.write({"model.txt": "my edit\n"})
    result = ws.project().checkout(history.old, force=True)
    assert "model.txt" in result.restored
    assert ws.read("model.txt") == V1


def test_checkout_reports_outs_the_cache_lacks_and_leaves_them(history: History):
    ws = history.ws
    project = ws.project()
    project.store().remove(_hash_at(ws, history.old, "train", "model.txt"))
    result = project.checkout(history.old)
    assert result.missing == ["model.txt"]
    assert result.restored == ["score.txt"]
    assert ws.read("model.txt") == V2


def test_checkout_of_one_target_restores_it_and_its_upstreams_only(history: History):
    ws = history.ws
    ws.remove("prepared.txt")
    result = ws.project().checkout(history.old, ["train"])
    assert sorted(result.restored) == ["model.txt", "prepared.txt"]
    assert ws.read("model.txt") == V1
    assert ws.read("score.txt").strip() == "14"  # evaluate's out is left as it was


def test_checkout_of_a_target_the_commit_does_not_record_is_a_usage_error(history: History):
    with pytest.raises(UsageError) as err:
        history.ws.project().checkout(history.old, ["nosuch"])
    assert "records no target named nosuch" in str(err.value)


def test_checkout_never_links_a_corrupt_object(history: History):
    ws = history.ws
    project = ws.project()
    corrupt(project.store().object_path(_hash_at(ws, history.old, "train", "model.txt")))
    try:
        result = project.checkout(history.old)
    except CorruptObjectError:
        pass  # refused outright, or ...
    else:
        assert "model.txt" in result.missing  # ... reported as not in the cache
    assert ws.read("model.txt") == V2


def test_checkout_with_metrics_writes_them_as_committed(ws: Workspace):
    ws.write({**CHAIN, "Mlfile": CHAIN["Mlfile"] + """
        [target.report]
        cmd = "echo '{\\"lr\\": ${train.lr}}' > metrics.json"
        params = ["train"]
        metrics = ["metrics.json"]
        """})
    history = History(ws)
    plain = ws.project().checkout(history.old)
    assert plain.metrics == ["metrics.json"]
    assert ws.read("metrics.json") == '{"lr": 0.25}\n'  # committed to Git: left to Git
    result = ws.project().checkout(history.old, metrics=True)
    assert result.metrics_written == ["metrics.json"]
    assert ws.read("metrics.json") == '{"lr": 0.1}\n'


def _hash_at(ws: Workspace, rev: str, target: str, out: str) -> str:
    """The hash of `out` in the lock committed at `rev`."""
    lock = Lock.parse(ws.git("show", f"{rev}:Mlfile.lock"), "Mlfile.lock")
    return out_hash(lock.entries[target], out)
