"""The exception tree: each domain carries its own exit code, listed once for the help text."""

from __future__ import annotations

import pytest

from mlmake import errors as e


@pytest.mark.parametrize("cls,code", [
    (e.MlfileError, 2), (e.CycleError, 2), (e.MissingInputError, 2), (e.UsageError, 2),
    (e.BusyError, 2), (e.RevisionError, 2), (e.EnvSetupError, 2), (e.ExecutorSetupError, 2),
    (e.RemoteSetupError, 2),
    (e.RemoteError, 4), (e.StoreError, 5), (e.GitError, 6), (e.EnvError, 7),
    (e.ExecutorError, 8),
])
def test_each_domain_carries_its_exit_code(cls, code):
    assert cls.exit_code == code


@pytest.mark.parametrize("setup,domain", [
    (e.RevisionError, e.GitError), (e.EnvSetupError, e.EnvError),
    (e.ExecutorSetupError, e.ExecutorError), (e.RemoteSetupError, e.RemoteError),
])
def test_a_setup_error_exits_2_and_is_still_caught_as_its_domain(setup, domain):
    with pytest.raises(domain) as caught:
        raise setup("x")
    assert caught.value.exit_code == e.EXIT_USAGE


def test_the_table_names_every_code_once_and_keeps_0_to_3_as_they_were():
    codes = [code for code, _ in e.EXIT_CODES]
    assert len(codes) == len(set(codes))
    assert codes[:4] == [0, 1, 2, 3]
    assert {c.exit_code for c in (e.RemoteError, e.StoreError, e.GitError, e.EnvError,
                                  e.ExecutorError)} <= set(codes)


def test_the_help_text_lists_the_exit_codes():
    from mlmake.cli.app import EPILOG

    for code, meaning in e.EXIT_CODES:
        assert f"{code:>3}  {meaning}" in EPILOG
