"""Params files: loading by extension, deep merging and dotted-key lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmake import params
from mlmake.errors import MlfileError

DATA = {"train": {"lr": 0.1, "n": 10, "opt": {"name": "adam", "betas": [0.9, 0.99]}},
        "seed": 0, "empty": {}}


@pytest.mark.parametrize("key, value", [
    ("seed", 0),
    ("train.lr", 0.1),
    ("train.opt.name", "adam"),
    ("train.opt", {"name": "adam", "betas": [0.9, 0.99]}),
    ("empty", {}),
])
def test_lookup_follows_dotted_keys(key: str, value: object):
    assert params.lookup(DATA, key) == value


@pytest.mark.parametrize("key", ["nope", "train.nope", "seed.x", "train.opt.betas.0", ""])
def test_lookup_of_an_unknown_key_raises_key_error(key: str):
    with pytest.raises(KeyError):
        params.lookup(DATA, key)


def test_select_expands_a_table_to_its_leaves():
    assert params.select(DATA, ("train", "seed")) == {
        "train.lr": 0.1, "train.n": 10, "train.opt.name": "adam",
        "train.opt.betas": [0.9, 0.99], "seed": 0}


def test_select_keeps_an_empty_table_as_a_value():
    assert params.select(DATA, ("empty",)) == {"empty": {}}


def test_all_keys_lists_tables_and_leaves():
    assert params.all_keys(DATA) == ["train", "train.lr", "train.n", "train.opt",
                                     "train.opt.name", "train.opt.betas", "seed", "empty"]


def test_later_files_deep_merge_over_earlier_ones(tmp_path: Path):
    (tmp_path / "a.toml").write_text("[train]\nlr = 0.1\nn = 10\n[other]\nx = 1\n")
    (tmp_path / "b.json").write_text('{"train": {"lr": 0.2}, "other": 5}')
    merged = params.load(str(tmp_path), ("a.toml", "b.json"))
    assert merged == {"train": {"lr": 0.2, "n": 10}, "other": 5}


def test_default_files_are_those_present_in_a_fixed_order(tmp_path: Path):
    assert params.default_files(str(tmp_path)) == ()
    for name in ("params.json", "params.toml", "unrelated.toml"):
        (tmp_path / name).write_text("{}" if name.endswith("json") else "")
    assert params.default_files(str(tmp_path)) == ("params.toml", "params.json")


def test_empty_yaml_file_is_an_empty_table(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("")
    assert params.load_file(str(tmp_path / "p.yaml"), "p.yaml") == {}


@pytest.mark.parametrize("name, content, needle", [
    ("p.json", "[1, 2]", "top level of a params file must be a table"),
    ("p.yaml", "- a\n- b\n", "top level of a params file must be a table"),
    ("p.ini", "[x]\n", "must end in .toml, .yaml, .yml or .json"),
])
def test_params_file_that_is_not_a_table_is_refused(tmp_path: Path, name: str, content: str,
                                                    needle: str):
    (tmp_path / name).write_text(content)
    with pytest.raises(MlfileError, match=needle):
        params.load_file(str(tmp_path / name), name)


def test_toml_syntax_error_carries_line_and_column():
    with pytest.raises(MlfileError) as info:
        params.parse_toml("a = 1\nb = = 2\n", "params.toml")
    assert (info.value.file, info.value.line) == ("params.toml", 2)
    assert info.value.column is not None
    assert "(at line" not in str(info.value)


@pytest.mark.parametrize("name, data, expected", [
    ("p.toml", b"[train]\nlr = 0.1\n", {"train": {"lr": 0.1}}),
    ("p.yaml", b"train:\n  lr: 0.1\n", {"train": {"lr": 0.1}}),
    ("p.yml", b"", {}),
    ("p.json", b'{"train": {"lr": 0.1}}', {"train": {"lr": 0.1}}),
])
def test_read_parses_bytes_by_extension(name: str, data: bytes, expected: dict):
    assert params.read(data, name) == expected


@pytest.mark.parametrize("name, data, line", [
    ("p.toml", b"a = 1\nb = = 2\n", 2),
    ("p.yaml", b"a: 1\nb: [1, 2\n", 3),
    ("p.json", b'{"a": 1,\n "b": }', 2),
])
def test_read_names_file_line_and_column_of_bad_syntax(name: str, data: bytes, line: int):
    with pytest.raises(MlfileError) as info:
        params.read(data, name, f"{name} (at v1)")
    assert (info.value.file, info.value.line) == (f"{name} (at v1)", line)
    assert info.value.column is not None


def test_read_refuses_bytes_that_are_not_utf8():
    with pytest.raises(MlfileError, match="not UTF-8"):
        params.read(b"\xff\xfe", "p.toml")


def test_the_params_files_of_an_mlfile_text_need_no_files_on_disk(tmp_path: Path):
    from mlmake import mlfile

    text = '[project]\nparams = ["conf/a.yaml", "b.json"]\n[target.t]\ncmd = "true"\n'
    path = str(tmp_path / "Mlfile")
    assert mlfile.params_files(text, path) == ("conf/a.yaml", "b.json")
    assert mlfile.params_files('[target.t]\ncmd = "true"\n', path) is None
    with pytest.raises(MlfileError, match="list of strings"):
        mlfile.params_files('[project]\nparams = "a.toml"\n', path)
