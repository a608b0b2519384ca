"""The target DAG: edges from paths and `after`, cycles, name resolution and missing inputs."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from mlmake import mlfile
from mlmake.errors import CycleError, MissingInputError, UsageError
from mlmake.graph import Graph


def graph(tmp_path: Path, text: str) -> Graph:
    return Graph.build(mlfile.parse(textwrap.dedent(text).lstrip("\n"),
                                    str(tmp_path / "Mlfile")))


def two_targets(out: str, dep: str) -> str:
    return f"""
        [target.make]
        cmd = "true"
        outs = ["{out}"]

        [target.use]
        cmd = "true"
        deps = ["{dep}"]
    """


@pytest.mark.parametrize("out, dep", [
    ("data/prepared", "data/prepared"),              # dep == out
    ("data/prepared", "data/prepared/"),             # dep == out, written as a directory
    ("data/prepared", "data/prepared/train.csv"),    # dep inside out
    ("data/prepared/train.csv", "data/prepared"),    # dep contains out
    ("data/prepared/train.csv", "data"),             # dep contains out, two levels up
    ("models/rf.pkl", "models/*.pkl"),               # glob matching an out
    ("models/rf/model.pkl", "models/**/*.pkl"),      # recursive glob matching an out
    ("models", "models/*.pkl"),                      # glob inside an out directory
    ("models", "models/rf/*.pkl"),                   # glob deeper inside an out directory
    ("models/rf.pkl", "models/**/*.pkl"),            # `**` matching no directory at all
    ("models/rf", "models/*/*.pkl"),                 # an out directory the glob reaches into
    ("data/x/y.csv", "data/*"),                      # out inside a directory the glob matches
    ("models/rf-2.pkl", "models/rf-[0-9].pk?"),      # `[...]` and `?`
    ("models/rf", "models/*/"),                      # a glob for directories
], ids=["equal", "equal-dir", "inside", "contains", "contains-deep", "glob", "glob-recursive",
        "glob-in-out-dir", "glob-deep-in-out-dir", "glob-recursive-zero", "glob-into-out-dir",
        "out-in-glob-match", "glob-brackets", "glob-dirs"])
def test_edge_inferred_from_paths(tmp_path: Path, out: str, dep: str):
    g = graph(tmp_path, two_targets(out, dep))
    assert g.up["use"] == {"make"}
    assert g.data_up["use"] == {"make"}
    assert g.down["make"] == {"use"}
    assert g.order() == ["make", "use"]


@pytest.mark.parametrize("out, dep", [
    ("data/prepared", "data/prepared2"),     # a sibling sharing a prefix
    ("data/prepared", "data/raw.csv"),
    ("database.csv", "data/*.csv"),          # glob prefix is not a string prefix
    ("models/rf.pkl", "models/*.json"),      # a file the glob cannot match
    ("data/x/y.csv", "data/*.csv"),          # `*` does not cross '/'
    ("models/gbt", "models/rf/*.pkl"),       # a directory the glob cannot reach into
    ("models/rf/a.txt", "models/*/*.pkl"),   # the glob's directory part matches, its name not
    ("data/.cache", "data/*"),               # like glob.glob, magic skips hidden names
], ids=["prefix-sibling", "unrelated", "glob-prefix-sibling", "glob-other-ext",
        "glob-star-one-segment", "glob-other-dir", "glob-other-name", "glob-hidden"])
def test_no_edge_between_unrelated_paths(tmp_path: Path, out: str, dep: str):
    g = graph(tmp_path, two_targets(out, dep))
    assert g.up["use"] == set()
    assert g.down["make"] == set()


def test_glob_deps_do_not_make_a_false_cycle(tmp_path: Path):
    g = graph(tmp_path, """
        [target.a]
        cmd = "true"
        deps = ["out/*.csv"]
        outs = ["out/a.txt"]
        [target.b]
        cmd = "true"
        deps = ["out/*.json"]
        outs = ["out/b.csv"]
    """)
    assert g.up == {"a": {"b"}, "b": set()}


def test_dep_on_a_metric_links_to_its_producer(tmp_path: Path):
    g = graph(tmp_path, """
        [target.evaluate]
        cmd = "true"
        metrics = ["metrics/eval.json"]
        [target.report]
        cmd = "true"
        deps = ["metrics/"]
    """)
    assert g.data_up["report"] == {"evaluate"}


def test_dep_on_its_own_out_is_not_a_self_edge(tmp_path: Path):
    g = graph(tmp_path, """
        [target.grow]
        cmd = "true"
        deps = ["data/seed.csv"]
        outs = ["data"]
        persist = true
    """)
    assert g.up["grow"] == set()


def test_after_orders_without_a_data_edge(tmp_path: Path):
    g = graph(tmp_path, """
        [target.train]
        matrix = { model = ["rf", "gbt"] }
        cmd = "true"
        outs = ["models/${model}.pkl"]
        [target.evaluate]
        cmd = "true"
        deps = ["models/rf.pkl"]
        after = ["train"]
    """)
    assert g.up["evaluate"] == {"train@rf", "train@gbt"}
    assert g.data_up["evaluate"] == {"train@rf"}
    assert g.down["train@gbt"] == {"evaluate"}
    assert g.order()[-1] == "evaluate"


def test_matrix_dep_links_to_the_matching_variant_only(tmp_path: Path):
    g = graph(tmp_path, """
        [target.train]
        matrix = { model = ["rf", "gbt"] }
        cmd = "true"
        outs = ["models/${model}.pkl"]
        [target.score]
        matrix = { model = ["rf", "gbt"] }
        cmd = "true"
        deps = ["models/${model}.pkl"]
    """)
    assert g.up["score@rf"] == {"train@rf"}
    assert g.up["score@gbt"] == {"train@gbt"}


def test_closures_follow_edges_and_roots_have_no_dependents(tmp_path: Path):
    g = graph(tmp_path, """
        [target.a]
        cmd = "true"
        outs = ["a"]
        [target.b]
        cmd = "true"
        deps = ["a"]
        outs = ["b"]
        [target.c]
        cmd = "true"
        deps = ["b"]
        [target.lone]
        cmd = "true"
    """)
    assert g.roots() == ["c", "lone"]
    assert g.upstream_closure({"c"}) == {"a", "b", "c"}
    assert g.downstream_closure({"a"}) == {"a", "b", "c"}
    assert g.order({"b", "c"}) == ["b", "c"]


CYCLES = {
    "data": """
        [target.a]
        cmd = "true"
        deps = ["b.txt"]
        outs = ["a.txt"]
        [target.b]
        cmd = "true"
        deps = ["a.txt"]
        outs = ["b.txt"]
    """,
    "after": """
        [target.a]
        cmd = "true"
        after = ["b"]
        [target.b]
        cmd = "true"
        after = ["a"]
    """,
    "mixed": """
        [target.a]
        cmd = "true"
        outs = ["a.txt"]
        after = ["b"]
        [target.b]
        cmd = "true"
        deps = ["a.txt"]
    """,
}


@pytest.mark.parametrize("kind", list(CYCLES))
def test_cycle_error_names_the_cycle(tmp_path: Path, kind: str):
    with pytest.raises(CycleError) as info:
        graph(tmp_path, CYCLES[kind])
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b"]
    assert " → ".join(cycle) in str(info.value)
    assert str(info.value).startswith("Mlfile: dependency cycle: ")


def test_longer_cycle_lists_every_member_once(tmp_path: Path):
    with pytest.raises(CycleError) as info:
        graph(tmp_path, """
            [target.a]
            cmd = "true"
            deps = ["c"]
            outs = ["a"]
            [target.b]
            cmd = "true"
            deps = ["a"]
            outs = ["b"]
            [target.c]
            cmd = "true"
            deps = ["b"]
            outs = ["c"]
            [target.free]
            cmd = "true"
        """)
    cycle = info.value.cycle
    assert len(cycle) == 4 and cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]


# -- resolve ------------------------------------------------------------------------------------

PIPELINE = """
    [target.prepare]
    cmd = "true"
    outs = ["data/prepared/"]
    [target.train]
    matrix = { model = ["rf", "gbt"] }
    cmd = "true"
    deps = ["data/prepared"]
    outs = ["models/${model}.pkl"]
    metrics = ["metrics/${model}.json"]
    [target.evaluate]
    cmd = "true"
    deps = ["models/"]
"""


@pytest.mark.parametrize("names, expected", [
    (["prepare"], {"prepare"}),
    (["train"], {"train@rf", "train@gbt"}),
    (["train@gbt"], {"train@gbt"}),
    (["train@rf", "evaluate"], {"train@rf", "evaluate"}),
    (["models/rf.pkl"], {"train@rf"}),
    (["./models/gbt.pkl"], {"train@gbt"}),
    (["metrics/gbt.json"], {"train@gbt"}),
    (["data/prepared"], {"prepare"}),
    (["data/prepared/"], {"prepare"}),
    (["data/prepared/train.csv"], {"prepare"}),
], ids=lambda v: ",".join(v) if isinstance(v, list) else None)
def test_resolve_names_bases_variants_and_out_paths(tmp_path: Path, names: list[str],
                                                   expected: set[str]):
    g = graph(tmp_path, PIPELINE)
    assert g.resolve(names, str(tmp_path)) == expected


def test_resolve_an_absolute_out_path(tmp_path: Path):
    g = graph(tmp_path, PIPELINE)
    assert g.resolve([os.path.join(str(tmp_path), "models", "rf.pkl")],
                     str(tmp_path)) == {"train@rf"}


@pytest.mark.parametrize("name, hint", [
    ("trian", "Did you mean 'train'?"),
    ("evalute", "Did you mean 'evaluate'?"),
    ("zzz", "Known targets: prepare, train, evaluate."),
    ("models/lr.pkl", "Known targets"),
])
def test_resolve_unknown_name_is_a_usage_error_with_a_hint(tmp_path: Path, name: str,
                                                           hint: str):
    g = graph(tmp_path, PIPELINE)
    with pytest.raises(UsageError) as info:
        g.resolve([name], str(tmp_path))
    assert f"no target named '{name}'" in str(info.value)
    assert hint in str(info.value)


# -- check_inputs -------------------------------------------------------------------------------

def test_missing_dep_that_nothing_produces_is_an_error(tmp_path: Path):
    g = graph(tmp_path, """
        [target.prepare]
        cmd = "true"
        deps = ["src/prepare.py", "data/raw.csv"]
        outs = ["data/prepared"]
    """)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "prepare.py").write_text("")
    with pytest.raises(MissingInputError) as info:
        g.check_inputs({"prepare"}, str(tmp_path), "Mlfile")
    err = info.value
    assert (err.target, err.path, err.line) == ("prepare", "data/raw.csv", 1)
    assert str(err).startswith("Mlfile:1: target 'prepare' needs 'data/raw.csv'")


def test_missing_input_names_the_matrix_base(tmp_path: Path):
    g = graph(tmp_path, """
        [target.train]
        matrix = { model = ["rf"] }
        cmd = "true"
        deps = ["data/${model}.csv"]
    """)
    with pytest.raises(MissingInputError) as info:
        g.check_inputs({"train@rf"}, str(tmp_path), "Mlfile")
    assert (info.value.target, info.value.path) == ("train", "data/rf.csv")


def test_glob_dep_matching_nothing_is_missing(tmp_path: Path):
    g = graph(tmp_path, """
        [target.lint]
        cmd = "true"
        deps = ["src/**/*.py"]
    """)
    with pytest.raises(MissingInputError):
        g.check_inputs({"lint"}, str(tmp_path), "Mlfile")
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "m.py").write_text("")
    g.check_inputs({"lint"}, str(tmp_path), "Mlfile")


def test_dep_produced_by_another_target_need_not_exist(tmp_path: Path):
    g = graph(tmp_path, """
        [target.prepare]
        cmd = "true"
        outs = ["data/prepared"]
        [target.train]
        cmd = "true"
        deps = ["data/prepared/train.csv", "data/prepared"]
    """)
    g.check_inputs({"prepare", "train"}, str(tmp_path), "Mlfile")
    g.check_inputs({"train"}, str(tmp_path), "Mlfile")  # producer not selected: still fine


def test_existing_dep_files_and_directories_are_accepted(tmp_path: Path):
    g = graph(tmp_path, """
        [target.t]
        cmd = "true"
        deps = ["data/raw.csv", "data"]
    """)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.csv").write_text("x")
    g.check_inputs({"t"}, str(tmp_path), "Mlfile")
