"""Experiment grids from -S options, and override checks against the params files."""

from __future__ import annotations

import pytest

from mlmake.errors import UsageError
from mlmake.experiments import check_overrides, parse_sets


def test_comma_lists_make_the_cartesian_grid_in_order():
    assert parse_sets(["train.lr=0.01,0.1", "train.n=10,100"]) == [
        {"train.lr": 0.01, "train.n": 10}, {"train.lr": 0.01, "train.n": 100},
        {"train.lr": 0.1, "train.n": 10}, {"train.lr": 0.1, "train.n": 100}]


def test_values_are_toml_else_strings_and_quotes_and_lists_keep_their_commas():
    assert parse_sets(['a="x,y"', "b=[1, 2]", "c=true", "d=adam"]) == [
        {"a": "x,y", "b": [1, 2], "c": True, "d": "adam"}]
    assert parse_sets([]) == [{}]


@pytest.mark.parametrize("overrides, message", [
    ({"train.x": 1}, "param 'train.x' is not in the params files"),
    ({"train": 1}, "param 'train' is a table"),
    ({"train.n": 0.5}, "param 'train.n' must be an integer"),
    ({"train.lr": "fast"}, "param 'train.lr' must be a number"),
])
def test_overrides_are_checked_against_the_files(overrides, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        check_overrides({"train.lr": 0.1, "train.n": 10}, overrides)


def test_an_integer_stands_for_a_number():
    check_overrides({"train.lr": 0.1}, {"train.lr": 1})
