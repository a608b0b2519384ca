"""plan.Checker: which targets are stale and why, read through Project.status and dry runs."""

from __future__ import annotations

import os

import pytest

from mlmake.errors import MissingInputError
from mlmake.model import Reason

from .conftest import CHAIN, Workspace, kinds

ALL = ["prepare", "train", "evaluate"]


def test_never_built_targets_are_new_and_make_their_dependents_stale(chain: Workspace):
    plan = chain.status()
    assert plan.order == ALL
    assert plan.stale == plan.to_run == ALL
    assert plan.states["prepare"].reasons == (Reason("new"),)
    # an upstream out not built yet is a missing dep, and the upstream is named
    assert plan.states["train"].reasons == (
        Reason("new"), Reason("dep", "prepared.txt"), Reason("upstream", "prepare"))
    assert plan.states["evaluate"].reasons == (
        Reason("new"), Reason("dep", "model.txt"), Reason("upstream", "train"))
    assert plan.states["train"].key is None


def test_built_project_is_up_to_date_with_the_keys_the_lock_records(built: Workspace):
    plan = built.status()
    assert plan.stale == []
    lock = built.lock()
    assert {n: plan.states[n].key for n in ALL} == {n: lock.entries[n].key for n in ALL}


def test_touched_dep_is_not_stale(built: Workspace):
    raw = built.root / "raw.txt"
    st = raw.stat()
    os.utime(raw, ns=(st.st_atime_ns + 10**10, st.st_mtime_ns + 10**10))
    assert built.status().stale == []


def test_edited_dep_is_named_with_its_old_and_new_hash(built: Workspace):
    old = built.lock().entries["prepare"].deps["raw.txt"]
    built.write({"raw.txt": "goodbye\n"})
    plan = built.status()
    new = plan.states["prepare"].deps["raw.txt"]
    assert new != old
    assert plan.states["prepare"].reasons == (Reason("dep", "raw.txt", old, new),)
    assert plan.states["train"].reasons == (Reason("upstream", "prepare"),)
    assert plan.states["evaluate"].reasons == (Reason("upstream", "train"),)


def test_changed_param_reports_old_and_new_value_and_not_the_command(built: Workspace):
    built.set_param(0.2)
    plan = built.status()
    assert plan.states["prepare"].reasons == ()
    assert plan.states["train"].reasons == (Reason("param", "train.lr", 0.1, 0.2),)
    assert plan.states["train"].reasons[0].describe() == "param train.lr: 0.1 → 0.2"


def test_a_param_no_target_reads_makes_nothing_stale(built: Workspace):
    built.write({"params.toml": "[train]\nlr = 0.1\n[other]\nx = 1\n"})
    assert built.status().stale == []


def test_changed_command_is_reported_with_old_and_new_command(built: Workspace):
    old = "wc -c < model.txt > score.txt"
    new = "wc -l < model.txt > score.txt"
    built.write({"Mlfile": CHAIN["Mlfile"].replace(old, new)})
    plan = built.status()
    assert plan.stale == ["evaluate"]
    assert plan.states["evaluate"].reasons == (Reason("cmd", new, old, new),)


def test_added_and_removed_deps_are_reported_by_name(built: Workspace):
    built.write({"notes.txt": "n\n", "Mlfile": CHAIN["Mlfile"].replace(
        'deps = ["raw.txt"]', 'deps = ["raw.txt", "notes.txt"]')})
    plan = built.status()
    (added,) = plan.states["prepare"].reasons
    assert (added.kind, added.subject, added.old) == ("dep", "notes.txt", None)
    assert added.new == plan.states["prepare"].deps["notes.txt"]
    assert added.describe() == "dep added: notes.txt"

    assert built.run()[0].ok
    built.write({"Mlfile": CHAIN["Mlfile"]})
    assert built.status().states["prepare"].reasons == (Reason("dep-removed", "notes.txt"),)


def test_a_new_declared_out_is_reported_as_changed_outs_and_missing(built: Workspace):
    built.write({"Mlfile": CHAIN["Mlfile"].replace(
        'outs = ["score.txt"]', 'outs = ["score.txt", "extra.txt"]')})
    plan = built.status()
    assert kinds(plan, "evaluate") == ["outs", "out-missing"]
    assert plan.states["evaluate"].reasons[0].subject == "extra.txt"
    assert plan.states["evaluate"].reasons[1] == Reason("out-missing", "extra.txt")


def test_deleted_out_only_needs_a_restore_and_spares_its_dependents(built: Workspace):
    built.remove("prepared.txt")
    plan = built.status()
    assert plan.states["prepare"].reasons == (Reason("out-missing", "prepared.txt"),)
    assert plan.to_restore == ["prepare"]
    assert plan.to_run == []
    assert plan.stale == ["prepare"]  # train's dep is hashed from prepare's recorded out


def test_hand_edited_out_is_out_modified_and_spares_its_dependents(built: Workspace):
    built.write({"model.txt": "mine\n"})
    plan = built.status()
    assert plan.states["train"].reasons == (Reason("out-modified", "model.txt"),)
    assert plan.stale == ["train"]
    assert plan.to_run == []


def test_always_target_is_stale_on_every_check(ws: Workspace):
    ws.write({"Mlfile": """\
        [target.stamp]
        cmd = "echo x > stamp.txt"
        outs = ["stamp.txt"]
        always = true
        """})
    assert ws.run()[0].ok
    assert ws.status().states["stamp"].reasons == (Reason("always"),)


def test_after_orders_without_ever_making_stale(ws: Workspace):
    ws.write({**CHAIN, "Mlfile": """\
        [target.report]
        cmd = "echo done > report.txt"
        outs = ["report.txt"]
        after = ["prepare"]

        [target.prepare]
        cmd = "tr a-z A-Z < raw.txt > prepared.txt"
        deps = ["raw.txt"]
        outs = ["prepared.txt"]
        """})
    assert ws.run()[0].ok
    ws.write({"raw.txt": "changed\n"})
    plan = ws.status()
    assert plan.order == ["prepare", "report"]
    assert plan.stale == ["prepare"]
    assert plan.states["report"].reasons == ()


def test_forced_dry_run_gives_every_target_a_forced_reason(built: Workspace):
    plan = built.run(dry_run=True, force=True, use_remote=False)[0].plan
    assert plan.to_run == ALL
    assert [kinds(plan, n)[0] for n in ALL] == ["forced"] * 3
    assert plan.actions == {n: "run" for n in ALL}


def test_force_only_forces_the_requested_target_and_not_its_upstream(built: Workspace):
    plan = built.run("train", dry_run=True, force_only=True, use_remote=False)[0].plan
    assert plan.order == ["prepare", "train"]
    assert plan.stale == ["train"]
    assert plan.states["train"].reasons == (Reason("forced"),)


def test_dry_run_predicts_a_restore_for_a_reverted_param_and_changes_nothing(
        built: Workspace):
    built.set_param(0.2)
    assert built.run()[0].ok
    built.set_param(0.1)
    lock_before = (built.root / "Mlfile.lock").read_bytes()
    plan = built.run(dry_run=True, use_remote=False)[0].plan
    assert plan.states["train"].reasons == (Reason("param", "train.lr", 0.2, 0.1),)
    assert plan.actions == {"train": "restore", "evaluate": "restore"}
    assert built.read("model.txt") == "HELLO\nlr=0.2\n"
    assert (built.root / "Mlfile.lock").read_bytes() == lock_before


def test_dry_run_predicts_a_run_for_inputs_never_built(built: Workspace):
    built.write({"raw.txt": "new\n"})
    plan = built.run(dry_run=True, use_remote=False)[0].plan
    assert plan.actions == {n: "run" for n in ALL}
    assert built.read("prepared.txt") == "HELLO\n"


def test_missing_input_nothing_produces_is_an_error_before_planning(chain: Workspace):
    chain.remove("raw.txt")
    with pytest.raises(MissingInputError) as err:
        chain.status()
    assert (err.value.target, err.value.path) == ("prepare", "raw.txt")
    assert "no target produces it" in str(err.value)


def test_file_added_inside_a_directory_dep_makes_it_stale(ws: Workspace):
    ws.write({"data/a.txt": "a\n", "Mlfile": """\
        [target.count]
        cmd = "ls data > count.txt"
        deps = ["data/"]
        outs = ["count.txt"]
        """})
    assert ws.run()[0].ok
    assert ws.status().stale == []
    ws.write({"data/b.txt": "b\n"})
    assert kinds(ws.status(), "count") == ["dep"]
    assert ws.status().states["count"].reasons[0].subject == "data"


def test_edited_imported_module_is_a_dep_named_with_its_importer(ws: Workspace):
    ws.write({"src/run.py": "import helper\nprint(helper.X)\n", "src/helper.py": "X = 1\n",
              "Mlfile": """\
        [target.report]
        cmd = "python src/run.py > report.txt"
        deps = ["src/run.py"]
        outs = ["report.txt"]
        """})
    assert ws.run()[0].ok
    assert ws.read("report.txt") == "1\n"
    ws.write({"src/helper.py": "X = 222\n"})
    (reason,) = ws.status().states["report"].reasons
    assert (reason.kind, reason.subject, reason.via) == ("dep", "src/helper.py", "src/run.py")


def test_lean_status_reports_unneeded_missing_outs_as_absent_not_stale(built: Workspace):
    built.remove("prepared.txt")
    plan = built.status(lean=True)
    assert plan.stale == []
    assert plan.not_materialized == {"prepare": ("prepared.txt",)}


def test_lean_status_still_needs_an_out_that_a_target_to_run_reads(built: Workspace):
    built.remove("prepared.txt")
    built.set_param(0.2)
    plan = built.status(lean=True)
    assert plan.states["prepare"].reasons == (Reason("out-missing", "prepared.txt"),)
    assert plan.not_materialized == {}
    assert plan.to_run == ["train", "evaluate"]


def test_lean_status_never_calls_an_edited_out_absent(built: Workspace):
    built.write({"prepared.txt": "TAMPERED\n"})
    plan = built.status(lean=True)
    assert plan.states["prepare"].reasons == (Reason("out-modified", "prepared.txt"),)
    assert plan.not_materialized == {}


# The lock keeps only the interpolated command, and plan._only_params_differ tells a param
# change from a command edit by replacing every occurrence of the old value's text in it.
LITERAL = CHAIN["Mlfile"].replace("echo lr=${train.lr}", "echo 0.1 lr=${train.lr}")


def test_param_change_alone_never_reports_the_command_as_changed(ws: Workspace):
    ws.write({**CHAIN, "Mlfile": LITERAL})
    assert ws.run()[0].ok
    ws.set_param(0.2)
    assert ws.status().states["train"].reasons == (Reason("param", "train.lr", 0.1, 0.2),)


def test_command_edit_is_reported_even_with_a_param_change(ws: Workspace):
    ws.write({**CHAIN, "Mlfile": LITERAL})
    assert ws.run()[0].ok
    ws.set_param(0.2)
    ws.write({"Mlfile": LITERAL.replace("echo 0.1 lr=", "echo 0.2 lr=")})
    assert kinds(ws.status(), "train") == ["cmd", "param"]
