"""build.Builder through Project.run: run, reuse, early cutoff, failures, -k and forcing."""

from __future__ import annotations

import os
from pathlib import Path

from mlmake.events import BuildFinished, Notice, TargetOutput, TargetStarted
from mlmake.hashing import hash_file

from .conftest import CHAIN, Workspace, kinds, started, statuses, trace

ALL = ["prepare", "train", "evaluate"]

BRANCHES = {"Mlfile": """\
    [target.bad]
    cmd = "echo oops; exit 3"
    outs = ["bad.txt"]

    [target.after_bad]
    cmd = "cp bad.txt after.txt"
    deps = ["bad.txt"]
    outs = ["after.txt"]

    [target.good]
    cmd = "echo ok > good.txt"
    outs = ["good.txt"]
    """}


def hash_of(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / "scratch.bin"
    p.write_bytes(data)
    return hash_file(str(p))


def test_first_build_runs_every_target_in_dependency_order(chain: Workspace):
    result, rec = chain.run()
    assert trace(rec) == ["build", "start prepare", "prepare ran", "start train", "train ran",
                          "start evaluate", "evaluate ran", "end"]
    assert result.ok and result.summary.ran == 3
    assert chain.read("model.txt") == "HELLO\nlr=0.1\n"
    assert chain.read("score.txt").strip() == "13"
    lock = chain.lock()
    assert chain.out_hash("train", "model.txt") == hash_file(str(chain.root / "model.txt"))
    assert [lock.entries[n].key for n in ALL] == [result.outcomes[n].key for n in ALL]


def test_started_event_carries_why_the_target_runs(built: Workspace):
    built.write({"raw.txt": "bye\n"})
    _, rec = built.run()
    first = rec.of(TargetStarted)[0]
    assert first.name == "prepare"
    assert [r.kind for r in first.reasons] == ["dep"]
    assert first.reasons[0].subject == "raw.txt"


def test_up_to_date_build_starts_nothing(built: Workspace):
    result, rec = built.run()
    assert trace(rec) == ["build", "prepare uptodate", "train uptodate", "evaluate uptodate",
                          "end"]
    assert result.summary.uptodate == 3


def test_touched_dep_does_not_rebuild(built: Workspace):
    raw = built.root / "raw.txt"
    st = raw.stat()
    os.utime(raw, ns=(st.st_atime_ns + 10**10, st.st_mtime_ns + 10**10))
    _, rec = built.run()
    assert started(rec) == []


def test_edited_dep_reruns_its_target_and_every_dependent(built: Workspace):
    built.write({"raw.txt": "bye\n"})
    _, rec = built.run()
    assert started(rec) == ALL
    assert built.read("model.txt") == "BYE\nlr=0.1\n"
    assert built.status().stale == []


def test_reverted_param_is_reused_from_run_cache(built: Workspace):
    key_01 = built.lock().entries["train"].key
    built.set_param(0.2)
    assert started(built.run()[1]) == ["train", "evaluate"]
    built.set_param(0.1)
    result, rec = built.run()
    assert started(rec) == []
    assert statuses(result) == {"prepare": "uptodate", "train": "reused",
                                "evaluate": "reused"}
    assert result.outcomes["train"].source == "local"
    assert built.read("model.txt") == "HELLO\nlr=0.1\n"
    assert built.lock().entries["train"].key == key_01
    (finished,) = rec.of(BuildFinished)
    assert finished.summary.line == "ran 0 · reused 2 · up to date 1 · failed 0"


def test_byte_identical_upstream_output_cuts_off_downstream(built: Workspace):
    before = built.out_hash("prepare", "prepared.txt")
    built.write({"raw.txt": "HELLO\n"})  # upper-cased to the very same bytes
    result, rec = built.run()
    assert started(rec) == ["prepare"]
    assert statuses(result) == {"prepare": "ran", "train": "uptodate",
                                "evaluate": "uptodate"}
    assert built.out_hash("prepare", "prepared.txt") == before


def test_failed_target_blocks_only_its_dependents(ws: Workspace):
    ws.write(BRANCHES)
    result, rec = ws.run(keep_going=True)
    assert statuses(result) == {"bad": "failed", "after_bad": "blocked", "good": "ran"}
    assert result.outcomes["after_bad"].message == "not run: 'bad' failed"
    assert trace(rec) == ["build", "start bad", "bad failed", "start good", "good ran",
                          "after_bad blocked", "end"]
    assert not result.ok
    assert (result.summary.failed, result.summary.blocked, result.summary.ran) == (1, 1, 1)
    assert ws.read("good.txt") == "ok\n"
    assert set(ws.lock().entries) == {"good"}


def test_without_keep_going_nothing_new_starts_after_a_failure(ws: Workspace):
    ws.write(BRANCHES)
    result, rec = ws.run()
    assert started(rec) == ["bad"]
    assert statuses(result) == {"bad": "failed", "after_bad": "blocked", "good": "blocked"}
    assert "use -k" in result.outcomes["good"].message
    assert not ws.exists("good.txt")


def test_failed_outcome_carries_the_exit_code_and_the_log(ws: Workspace):
    ws.write(BRANCHES)
    result, rec = ws.run("bad")
    bad = result.outcomes["bad"]
    assert bad.exit_code == 3
    assert bad.log is not None and "oops" in Path(bad.log).read_text()
    assert [e.line for e in rec.of(TargetOutput) if e.name == "bad"] == ["oops"]


def test_failed_rebuild_keeps_the_previous_lock_entry(built: Workspace):
    entry = built.lock().entries["train"]
    built.write({"Mlfile": CHAIN["Mlfile"].replace(
        "cat prepared.txt > model.txt", "exit 1; cat prepared.txt > model.txt")})
    result, _ = built.run()
    assert statuses(result) == {"prepare": "uptodate", "train": "failed",
                                "evaluate": "blocked"}
    assert built.lock().entries["train"] == entry


def test_command_that_does_not_write_its_out_fails(ws: Workspace):
    ws.write({"Mlfile": '[target.lazy]\ncmd = "true"\nouts = ["x.txt"]\n'})
    result, _ = ws.run()
    assert result.outcomes["lazy"].status == "failed"
    assert "did not write 'x.txt'" in result.outcomes["lazy"].message
    assert "lazy" not in ws.lock().entries


def test_forced_build_reruns_up_to_date_targets(built: Workspace):
    result, rec = built.run(force=True)
    assert started(rec) == ALL
    assert [e.reasons[0].kind for e in rec.of(TargetStarted)] == ["forced"] * 3
    assert result.summary.ran == 3


def test_force_only_reruns_the_requested_target_and_reuses_its_upstream(built: Workspace):
    result, rec = built.run("train", force_only=True)
    assert started(rec) == ["train"]
    assert statuses(result) == {"prepare": "uptodate", "train": "ran"}


def test_building_one_target_runs_only_its_upstream_closure(chain: Workspace):
    result, rec = chain.run("train")
    assert started(rec) == ["prepare", "train"]
    assert "evaluate" not in result.outcomes
    assert not chain.exists("score.txt")


def test_deleted_out_is_restored_from_the_cache_without_running(built: Workspace):
    built.remove("model.txt")
    result, rec = built.run()
    assert started(rec) == []
    assert result.outcomes["train"].status == "reused"
    assert result.outcomes["train"].message == "restored"
    assert result.outcomes["evaluate"].status == "uptodate"
    assert built.read("model.txt") == "HELLO\nlr=0.1\n"


def test_hand_edited_out_is_replaced_and_the_edit_kept_in_the_cache(built: Workspace,
                                                                     tmp_path: Path):
    built.write({"model.txt": "mine\n"})
    result, rec = built.run()
    assert started(rec) == []
    assert result.outcomes["train"].status == "reused"
    assert built.read("model.txt") == "HELLO\nlr=0.1\n"
    (warning,) = [n for n in rec.of(Notice) if n.level == "warning"]
    assert "'model.txt' was modified" in warning.text
    assert built.project().store().has(hash_of(tmp_path, b"mine\n"))


def test_upstream_out_edited_by_hand_is_restored_before_a_dependent_runs(built: Workspace):
    built.write({"prepared.txt": "TAMPERED\n"})
    built.set_param(0.2)
    result, rec = built.run()
    assert started(rec) == ["train", "evaluate"]
    assert result.outcomes["prepare"].status == "reused"
    assert built.read("model.txt") == "HELLO\nlr=0.2\n"


def test_always_target_runs_on_every_build(ws: Workspace):
    ws.write({"Mlfile": '[target.stamp]\ncmd = "date +%N > stamp.txt"\n'
                        'outs = ["stamp.txt"]\nalways = true\n'})
    ws.run()
    result, rec = ws.run()
    assert started(rec) == ["stamp"]
    assert result.outcomes["stamp"].status == "ran"
    assert kinds(ws.status(), "stamp") == ["always"]


def test_always_upstream_with_identical_output_does_not_rerun_dependents(ws: Workspace):
    ws.write({"Mlfile": """\
        [target.fetch]
        cmd = "echo same > fetched.txt"
        outs = ["fetched.txt"]
        always = true

        [target.use]
        cmd = "cp fetched.txt used.txt"
        deps = ["fetched.txt"]
        outs = ["used.txt"]
        """})
    ws.run()
    result, rec = ws.run()
    assert started(rec) == ["fetch"]
    assert statuses(result) == {"fetch": "ran", "use": "uptodate"}


def test_cache_false_target_always_runs_instead_of_reusing(ws: Workspace, tmp_path: Path):
    ws.write({**CHAIN, "Mlfile": CHAIN["Mlfile"].replace(
        'outs = ["model.txt"]', 'outs = ["model.txt"]\ncache = false')})
    ws.run()
    ws.set_param(0.2)
    ws.run()
    ws.set_param(0.1)
    result, rec = ws.run()
    assert "train" in started(rec)
    assert result.outcomes["train"].status == "ran"
    assert not ws.project().store().has(hash_of(tmp_path, b"HELLO\nlr=0.1\n"))


def test_out_is_removed_before_its_command_runs(built: Workspace):
    built.write({"Mlfile": CHAIN["Mlfile"].replace(
        "wc -c < model.txt > score.txt", "test ! -e score.txt && wc -c < model.txt > score.txt")})
    result, _ = built.run()
    assert result.outcomes["evaluate"].status == "ran"


def test_persist_target_finds_its_previous_outs_writable(ws: Workspace):
    ws.write({"Mlfile": '[target.log]\ncmd = "echo line >> log.txt"\n'
                        'outs = ["log.txt"]\npersist = true\n'})
    ws.run()
    result, _ = ws.run(force=True)
    assert result.outcomes["log"].status == "ran"
    assert ws.read("log.txt") == "line\nline\n"


def test_dry_run_runs_nothing_and_writes_no_lock(chain: Workspace):
    result, rec = chain.run(dry_run=True, use_remote=False)
    assert result.plan is not None and result.plan.actions == {n: "run" for n in ALL}
    assert started(rec) == []
    assert not chain.exists("Mlfile.lock") and not chain.exists("prepared.txt")
