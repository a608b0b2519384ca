"""Comparison across commits: `metrics show|diff` and `params diff`, read from Git objects."""

from __future__ import annotations

import pytest

MLFILE = """
    [project]
    params = ["params.toml"]

    [target.train]
    cmd = "echo '{\\"acc\\": ${train.acc}, \\"nested\\": {\\"loss\\": 0.5}}' > metrics.json"
    params = ["train"]
    metrics = ["metrics.json"]
"""


def params(acc: float, lr: float = 0.1) -> str:
    return f"[train]\nacc = {acc}\nlr = {lr}\n"


def build(repo, acc: float, lr: float = 0.1, prefix: str = "", *args: str) -> None:
    repo.write({f"{prefix}params.toml": params(acc, lr)})
    r = repo.mlmake(*args)
    assert r.code == 0, r.text


@pytest.fixture
def history(repo):
    """Two commits: acc 0.8 (HEAD~1), then acc 0.9 (HEAD); the work tree equals HEAD."""
    repo.write({"Mlfile": MLFILE})
    build(repo, 0.8)
    repo.commit("acc 0.8")
    build(repo, 0.9)
    repo.commit("acc 0.9")
    return repo


def ok(result):
    assert result.code == 0, result.text
    return result


def table_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip() and "──" not in line]


# -- metrics show ------------------------------------------------------------------------------
def test_metrics_show_defaults_to_the_work_tree(history):
    assert ok(history.mlmake("metrics", "show", "--json")).json() == {
        "workspace": {"metrics.json": {"acc": 0.9, "nested.loss": 0.5}}}


def test_bare_metrics_is_metrics_show(history):
    r = ok(history.mlmake("metrics"))
    assert ["metrics.json", "acc", "0.9"] in table_rows(r.out)


def test_metrics_show_at_revisions_reads_git_objects(history):
    before = history.read("metrics.json")
    r = ok(history.mlmake("metrics", "show", "HEAD~1", "HEAD", "workspace", "--json"))
    assert r.json() == {
        "HEAD~1": {"metrics.json": {"acc": 0.8, "nested.loss": 0.5}},
        "HEAD": {"metrics.json": {"acc": 0.9, "nested.loss": 0.5}},
        "workspace": {"metrics.json": {"acc": 0.9, "nested.loss": 0.5}},
    }
    assert history.read("metrics.json") == before
    assert history.git("status", "--porcelain") == ""


def test_metrics_show_table_has_one_right_aligned_column_per_revision(history):
    r = ok(history.mlmake("metrics", "show", "HEAD~1", "HEAD"))
    lines = [line for line in r.out.splitlines() if line.strip()]
    header = lines[0]
    assert header.split() == ["path", "key", "HEAD~1", "HEAD"]
    acc = next(line for line in lines if " acc " in line)
    assert acc.split() == ["metrics.json", "acc", "0.8", "0.9"]
    # numbers end where their column's header ends
    assert acc.index("0.8") + len("0.8") == header.index("HEAD~1") + len("HEAD~1")
    assert acc.rstrip().endswith("0.9") and header.rstrip().endswith("HEAD")
    assert ["nested.loss", "0.5", "0.5"] in table_rows(r.out)


def test_metrics_show_rounds_floats_to_the_precision(repo):
    repo.write({"Mlfile": MLFILE})
    build(repo, 0.123456789)
    assert ["metrics.json", "acc", "0.1235"] in table_rows(ok(repo.mlmake("metrics", "show")).out)
    r = ok(repo.mlmake("metrics", "show", "--precision", "2"))
    assert ["metrics.json", "acc", "0.12"] in table_rows(r.out)
    assert ok(repo.mlmake("metrics", "show", "--json")).json()["workspace"]["metrics.json"][
        "acc"] == 0.123456789


def test_metrics_show_accepts_tags_and_branches(history):
    history.git("tag", "v1", "HEAD~1")
    r = ok(history.mlmake("metrics", "show", "v1", "main", "--json"))
    assert r.json()["v1"]["metrics.json"]["acc"] == 0.8
    assert r.json()["main"]["metrics.json"]["acc"] == 0.9


# -- metrics diff ------------------------------------------------------------------------------
def test_metrics_diff_with_nothing_changed_has_no_rows(history):
    r = ok(history.mlmake("metrics", "diff", "--json"))
    assert r.json() == {"old": "HEAD", "new": "workspace", "rows": []}
    r = ok(history.mlmake("metrics", "diff"))
    assert "no metrics changed between HEAD and workspace" in r.out


def test_metrics_diff_compares_head_with_the_work_tree(history):
    build(history, 0.95)
    r = ok(history.mlmake("metrics", "diff", "--json"))
    assert r.json() == {"old": "HEAD", "new": "workspace", "rows": [
        {"path": "metrics.json", "key": "acc", "old": 0.9, "new": 0.95, "change": 0.05}]}


def test_metrics_diff_with_one_revision_compares_it_with_the_work_tree(history):
    build(history, 0.95)
    r = ok(history.mlmake("metrics", "diff", "HEAD~1", "--json"))
    assert r.json() == {"old": "HEAD~1", "new": "workspace", "rows": [
        {"path": "metrics.json", "key": "acc", "old": 0.8, "new": 0.95, "change": 0.15}]}


def test_metrics_diff_with_two_revisions_compares_them(history):
    build(history, 0.95)  # the work tree plays no part
    r = ok(history.mlmake("metrics", "diff", "HEAD~1", "HEAD", "--json"))
    assert r.json() == {"old": "HEAD~1", "new": "HEAD", "rows": [
        {"path": "metrics.json", "key": "acc", "old": 0.8, "new": 0.9, "change": 0.1}]}
    r = ok(history.mlmake("metrics", "diff", "HEAD", "HEAD~1", "--json"))
    assert r.json()["rows"][0]["change"] == -0.1


def test_metrics_diff_all_lists_unchanged_keys(history):
    r = ok(history.mlmake("metrics", "diff", "HEAD~1", "HEAD", "--all", "--json"))
    assert r.json()["rows"] == [
        {"path": "metrics.json", "key": "acc", "old": 0.8, "new": 0.9, "change": 0.1},
        {"path": "metrics.json", "key": "nested.loss", "old": 0.5, "new": 0.5, "change": 0.0},
    ]


def test_metrics_diff_table_shows_the_signed_change(history):
    r = ok(history.mlmake("metrics", "diff", "HEAD~1", "HEAD"))
    rows = table_rows(r.out)
    assert rows[0] == ["path", "key", "HEAD~1", "HEAD", "change"]
    assert rows[1:] == [["metrics.json", "acc", "0.8", "0.9", "+0.1"]]
    r = ok(history.mlmake("metrics", "diff", "HEAD", "HEAD~1"))
    assert table_rows(r.out)[1:] == [["metrics.json", "acc", "0.9", "0.8", "-0.1"]]


def test_metrics_diff_of_non_numbers_has_no_change(repo):
    repo.write({"Mlfile": """
        [target.train]
        cmd = "echo '{\\"model\\": \\"${model.name}\\", \\"n\\": 3}' > m.json"
        metrics = ["m.json"]
    """, "params.toml": '[model]\nname = "rf"\n'})
    ok(repo.mlmake())
    repo.commit("rf")
    repo.write({"params.toml": '[model]\nname = "gbt"\n'})
    ok(repo.mlmake())
    r = ok(repo.mlmake("metrics", "diff", "--json"))
    assert r.json()["rows"] == [
        {"path": "m.json", "key": "model", "old": "rf", "new": "gbt", "change": None}]
    r = ok(repo.mlmake("metrics", "diff"))
    assert table_rows(r.out)[1:] == [["m.json", "model", "rf", "gbt"]]


def test_metrics_file_missing_at_an_old_revision_shows_as_absent(history):
    history.write({"Mlfile": MLFILE + """
    [target.evaluate]
    cmd = "echo 'auc: 0.7' > eval.yaml"
    metrics = ["eval.yaml"]
    """})
    ok(history.mlmake())
    history.commit("add evaluate")
    r = ok(history.mlmake("metrics", "show", "HEAD~1", "HEAD", "--json"))
    assert r.json() == {
        "HEAD~1": {"metrics.json": {"acc": 0.9, "nested.loss": 0.5}, "eval.yaml": None},
        "HEAD": {"metrics.json": {"acc": 0.9, "nested.loss": 0.5}, "eval.yaml": {"auc": 0.7}},
    }
    r = ok(history.mlmake("metrics", "diff", "HEAD~1", "--json"))
    assert r.json()["rows"] == [
        {"path": "eval.yaml", "key": "auc", "old": None, "new": 0.7, "change": None}]
    r = ok(history.mlmake("metrics", "diff", "HEAD~1"))
    assert table_rows(r.out)[1:] == [["eval.yaml", "auc", "—", "0.7"]]
    r = ok(history.mlmake("metrics", "show", "HEAD~1"))
    assert ["eval.yaml", "—"] in table_rows(r.out)


def test_metrics_file_missing_in_the_work_tree_shows_as_absent(history):
    (history.path / "metrics.json").unlink()
    r = ok(history.mlmake("metrics", "diff", "--json"))
    assert r.json()["rows"] == [
        {"path": "metrics.json", "key": "acc", "old": 0.9, "new": None, "change": None},
        {"path": "metrics.json", "key": "nested.loss", "old": 0.5, "new": None,
         "change": None}]


@pytest.mark.parametrize("name,content", [
    ("metrics.yaml", "acc: ${train.acc}\\nnested:\\n  loss: 0.5\\n  per_class: [1, 2]"),
    ("metrics.toml", "acc = ${train.acc}\\n[nested]\\nloss = 0.5\\nper_class = [1, 2]"),
])
def test_yaml_and_toml_metrics_are_flattened(repo, name, content):
    repo.write({"Mlfile": f"""
        [project]
        params = ["params.toml"]
        [target.train]
        cmd = "printf '{content}\\\\n' > {name}"
        params = ["train"]
        metrics = ["{name}"]
    """})
    build(repo, 0.8)
    repo.commit("0.8")
    build(repo, 0.85)
    r = ok(repo.mlmake("metrics", "show", "HEAD", "--json"))
    assert r.json() == {"HEAD": {name: {"acc": 0.8, "nested.loss": 0.5,
                                        "nested.per_class": [1, 2]}}}
    r = ok(repo.mlmake("metrics", "diff", "--json"))
    assert r.json()["rows"] == [
        {"path": name, "key": "acc", "old": 0.8, "new": 0.85, "change": 0.05}]


# -- params diff -------------------------------------------------------------------------------
def test_params_diff_compares_the_params_files(history):
    history.write({"params.toml": params(0.9, lr=0.2)})
    r = ok(history.mlmake("params", "diff", "--json"))
    assert r.json() == {"old": "HEAD", "new": "workspace", "rows": [
        {"path": "params.toml", "key": "train.lr", "old": 0.1, "new": 0.2, "change": 0.1}]}
    r = ok(history.mlmake("params", "diff", "HEAD~1", "--all", "--json"))
    assert r.json()["rows"] == [
        {"path": "params.toml", "key": "train.acc", "old": 0.8, "new": 0.9, "change": 0.1},
        {"path": "params.toml", "key": "train.lr", "old": 0.1, "new": 0.2, "change": 0.1}]
    r = ok(history.mlmake("params", "diff", "HEAD~1", "HEAD"))
    assert table_rows(r.out)[1:] == [["params.toml", "train.acc", "0.8", "0.9", "+0.1"]]


def test_params_diff_covers_every_params_file_and_yaml(repo):
    repo.write({
        "Mlfile": """
            [project]
            params = ["params.toml", "extra.yaml"]
            [target.t]
            cmd = "echo ${train.lr} ${model.depth} > out.txt"
            outs = ["out.txt"]
        """,
        "params.toml": "[train]\nlr = 0.1\n",
        "extra.yaml": "model:\n  depth: 3\n  kind: rf\n",
    })
    repo.commit("first")
    repo.write({"extra.yaml": "model:\n  depth: 5\n  kind: gbt\n"})
    r = ok(repo.mlmake("params", "diff", "--json"))
    assert r.json()["rows"] == [
        {"path": "extra.yaml", "key": "model.depth", "old": 3, "new": 5, "change": 2},
        {"path": "extra.yaml", "key": "model.kind", "old": "rf", "new": "gbt", "change": None}]


# -- errors and layout -------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("metrics", "show", "no-such-rev"),
    ("metrics", "diff", "no-such-rev"),
    ("metrics", "diff", "HEAD", "no-such-rev"),
    ("params", "diff", "no-such-rev", "--json"),
])
def test_unknown_revision_is_an_error_naming_it(history, args):
    r = history.mlmake(*args)
    assert r.code == 2, r.text
    assert "unknown revision 'no-such-rev'" in r.err
    assert "Traceback" not in r.err and r.out == ""


def test_diff_takes_at_most_two_revisions(history):
    r = history.mlmake("metrics", "diff", "HEAD~1", "HEAD", "HEAD")
    assert r.code == 2
    assert "at most two revisions" in r.err


def test_invalid_metrics_file_names_the_file_and_revision(history):
    history.write({"metrics.json": "{not json"})
    history.commit("broken")
    r = history.mlmake("metrics", "show", "HEAD")
    assert r.code == 2
    assert "metrics.json (at HEAD):1:2: invalid JSON" in r.err


def test_metrics_diff_before_the_first_commit_treats_head_as_empty(repo):
    repo.write({"Mlfile": MLFILE})
    build(repo, 0.8)
    r = ok(repo.mlmake("metrics", "diff", "--json"))
    assert r.json()["rows"] == [
        {"path": "metrics.json", "key": "acc", "old": None, "new": 0.8, "change": None},
        {"path": "metrics.json", "key": "nested.loss", "old": None, "new": 0.5,
         "change": None}]


def test_project_in_a_subdirectory_of_the_repository(repo):
    repo.write({"README": "top\n", "sub/Mlfile": MLFILE})
    build(repo, 0.8, 0.1, "sub/", "-C", "sub")
    repo.commit("0.8")
    build(repo, 0.9, 0.1, "sub/", "-C", "sub")
    repo.commit("0.9")
    build(repo, 0.95, 0.3, "sub/", "-C", "sub")
    r = ok(repo.mlmake("-C", "sub", "metrics", "show", "HEAD~1", "--json"))
    assert r.json() == {"HEAD~1": {"metrics.json": {"acc": 0.8, "nested.loss": 0.5}}}
    r = ok(repo.mlmake("-C", "sub", "metrics", "diff", "HEAD~1", "HEAD", "--json"))
    assert r.json()["rows"] == [
        {"path": "metrics.json", "key": "acc", "old": 0.8, "new": 0.9, "change": 0.1}]
    r = ok(repo.mlmake("-C", "sub", "params", "diff", "--json"))
    assert r.json()["rows"] == [
        {"path": "params.toml", "key": "train.acc", "old": 0.9, "new": 0.95, "change": 0.05},
        {"path": "params.toml", "key": "train.lr", "old": 0.1, "new": 0.3, "change": 0.2}]
