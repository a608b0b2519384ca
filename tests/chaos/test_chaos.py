"""SIGKILL of mlmake's whole process group at random instants during build, checkout, pull,
push, gc and commit: afterwards `status` works, a rerun converges to a clean build's bytes,
no cache or remote object mismatches its name and no temporary file remains.

A fixed set of seeds (each op at least once, builds twice) runs in the suite;
`--chaos-trials N` runs N seeded trials instead (long runs: `python tests/chaos/chaos_harness.py N`).
"""

from __future__ import annotations


import pytest

from chaos_harness import Chaos, Tally

SEEDS = (2, 14, 1, 7, 0, 5, 19, 28)  # build, build, checkout, pull, push, gc, commit, build


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Chaos:
    return Chaos(tmp_path_factory.mktemp("chaos"))


def test_killed_at_any_instant_the_rerun_converges_to_a_clean_build(
        chaos: Chaos, request: pytest.FixtureRequest) -> None:
    n = request.config.getoption("--chaos-trials")
    seeds = range(1000, 1000 + n) if n else SEEDS
    tally = Tally()
    for seed in seeds:
        chaos.trial(seed, tally)
    assert tally.trials == len(seeds)
    assert tally.by_op.keys() >= {"build", "checkout", "pull", "push", "gc"} or n
    assert tally.wrong == 0, "\n".join(tally.failures)
