"""The ready/done loop: order, -j, resources, GPU ids, failures and -k."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from mlmake import mlfile
from mlmake.executors.base import Capacity
from mlmake.graph import Graph
from mlmake.model import Outcome
from mlmake.scheduler import Scheduler


def graph(tmp_path: Path, text: str) -> Graph:
    return Graph.build(mlfile.parse(textwrap.dedent(text).lstrip("\n"),
                                    str(tmp_path / "Mlfile")))


def independent(n: int, resources: str = "") -> str:
    return "".join(f'[target.t{i}]\ncmd = "true"\n{resources}\n' for i in range(n))


class Work:
    """A fake executor: records starts, GPU ids and peak concurrency; fails chosen targets."""

    def __init__(self, sleep: float = 0.05, fail: tuple[str, ...] = (),
                 cpus: dict[str, float] | None = None) -> None:
        self.sleep = sleep
        self.fail = fail
        self.cpus = cpus or {}
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.cpus_used = 0.0
        self.peak_cpus = 0.0
        self.started: list[str] = []
        self.finished: list[str] = []
        self.gpus: dict[str, tuple[str, ...]] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    def __call__(self, name: str, gpus: tuple[str, ...]) -> Outcome:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.cpus_used += self.cpus.get(name, 1.0)
            self.peak_cpus = max(self.peak_cpus, self.cpus_used)
            self.started.append(name)
            self.gpus[name] = gpus
        start = time.monotonic()
        time.sleep(self.sleep)
        end = time.monotonic()
        with self.lock:
            self.running -= 1
            self.cpus_used -= self.cpus.get(name, 1.0)
            self.finished.append(name)
            self.spans[name] = (start, end)
        if name in self.fail:
            return Outcome(name, "failed", exit_code=1)
        return Outcome(name, "ran")


def run(g: Graph, work: Work, names: set[str] | None = None, capacity: Capacity | None = None,
        jobs: int = 8, keep_going: bool = False) -> dict[str, Outcome]:
    sched = Scheduler(g, set(g.targets) if names is None else names,
                      capacity or Capacity(cpus=64), jobs, keep_going, work, cancel=lambda: None)
    return sched.run()


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


CHAIN = """
    [target.prepare]
    cmd = "true"
    outs = ["data"]
    [target.train]
    matrix = { model = ["a", "b", "c"] }
    cmd = "true"
    deps = ["data"]
    outs = ["models/${model}"]
    [target.evaluate]
    cmd = "true"
    deps = ["models"]
    [target.lone]
    cmd = "true"
"""


def test_every_target_runs_once_after_its_upstream(tmp_path: Path):
    g = graph(tmp_path, CHAIN)
    work = Work(sleep=0.01)
    outcomes = run(g, work)
    assert sorted(work.started) == sorted(g.targets)
    assert {n: o.status for n, o in outcomes.items()} == {n: "ran" for n in g.targets}
    for name in g.targets:
        for up in g.up[name]:
            assert work.finished.index(up) < work.started.index(name)


def test_only_the_selected_targets_run(tmp_path: Path):
    g = graph(tmp_path, CHAIN)
    work = Work(sleep=0.0)
    outcomes = run(g, work, names={"train@a", "train@b"})
    assert sorted(work.started) == ["train@a", "train@b"]
    assert set(outcomes) == {"train@a", "train@b"}


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_at_most_jobs_targets_run_at_once(tmp_path: Path, jobs: int):
    g = graph(tmp_path, independent(6))
    work = Work(sleep=0.1)
    run(g, work, jobs=jobs)
    assert len(work.started) == 6
    assert work.peak == jobs


def test_targets_share_cpus_without_exceeding_capacity(tmp_path: Path):
    g = graph(tmp_path, independent(2, "resources = { cpus = 2 }"))
    work = Work(sleep=0.05)
    run(g, work, capacity=Capacity(cpus=2), jobs=4)
    assert work.peak == 1
    assert not overlap(work.spans["t0"], work.spans["t1"])


def test_small_targets_fill_the_cpus_a_big_one_leaves(tmp_path: Path):
    g = graph(tmp_path, """
        [target.big]
        cmd = "true"
        resources = { cpus = 3 }
        [target.s1]
        cmd = "true"
        [target.s2]
        cmd = "true"
        [target.s3]
        cmd = "true"
    """)
    work = Work(sleep=0.05, cpus={"big": 3})
    run(g, work, capacity=Capacity(cpus=4), jobs=8)
    assert work.peak_cpus == 4
    assert len(work.started) == 4


def test_memory_limits_concurrency(tmp_path: Path):
    g = graph(tmp_path, independent(3, 'resources = { memory = "6GiB" }'))
    work = Work(sleep=0.05)
    run(g, work, capacity=Capacity(cpus=8, memory=16 * 2**30), jobs=8)
    assert work.peak == 2


def test_target_larger_than_the_machine_still_runs_alone(tmp_path: Path):
    g = graph(tmp_path, """
        [target.huge]
        cmd = "true"
        resources = { cpus = 16 }
        [target.small]
        cmd = "true"
    """)
    work = Work(sleep=0.02)
    outcomes = run(g, work, capacity=Capacity(cpus=2), jobs=4)
    assert outcomes["huge"].status == "ran" and outcomes["small"].status == "ran"
    assert not overlap(work.spans["huge"], work.spans["small"])


def test_gpu_ids_are_handed_out_distinctly(tmp_path: Path):
    g = graph(tmp_path, independent(2, "resources = { gpus = 1 }"))
    work = Work(sleep=0.1)
    run(g, work, capacity=Capacity(cpus=4, gpus=("0", "1")), jobs=4)
    assert overlap(work.spans["t0"], work.spans["t1"])
    assert sorted(work.gpus.values()) == [("0",), ("1",)]


def test_gpu_targets_wait_for_a_free_gpu_and_reuse_it(tmp_path: Path):
    g = graph(tmp_path, independent(4, "resources = { gpus = 1 }") + """
        [target.cpu]
        cmd = "true"
    """)
    work = Work(sleep=0.05)
    run(g, work, capacity=Capacity(cpus=8, gpus=("0", "1")), jobs=8)
    gpu_targets = [f"t{i}" for i in range(4)]
    assert all(len(work.gpus[t]) == 1 and work.gpus[t][0] in ("0", "1") for t in gpu_targets)
    assert work.gpus["cpu"] == ()
    for i, a in enumerate(gpu_targets):  # targets on one GPU never overlap
        for b in gpu_targets[i + 1:]:
            if work.gpus[a] == work.gpus[b]:
                assert not overlap(work.spans[a], work.spans[b])


def test_fractional_gpu_takes_a_whole_device(tmp_path: Path):
    g = graph(tmp_path, independent(1, "resources = { gpus = 0.5 }"))
    work = Work(sleep=0.0)
    run(g, work, capacity=Capacity(cpus=4, gpus=("3",)))
    assert work.gpus["t0"] == ("3",)


FAILING = """
    [target.a]
    cmd = "false"
    outs = ["a"]
    [target.b]
    cmd = "true"
    deps = ["a"]
    outs = ["b"]
    [target.c]
    cmd = "true"
    deps = ["b"]
    [target.other]
    cmd = "true"
    [target.other2]
    cmd = "true"
"""


def test_keep_going_blocks_only_the_dependents_of_a_failure(tmp_path: Path):
    g = graph(tmp_path, FAILING)
    work = Work(sleep=0.02, fail=("a",))
    outcomes = run(g, work, jobs=1, keep_going=True)
    assert sorted(work.started) == ["a", "other", "other2"]
    assert outcomes["a"].status == "failed" and outcomes["a"].exit_code == 1
    assert outcomes["other"].status == "ran" and outcomes["other2"].status == "ran"
    assert outcomes["b"].status == "blocked" and outcomes["c"].status == "blocked"
    assert outcomes["b"].message == "not run: 'a' failed"
    assert outcomes["c"].message.startswith("not run: ")


def test_blocked_message_names_the_target_that_actually_failed(tmp_path: Path):
    chain = "".join(f'[target.s{i}]\ncmd = "true"\ndeps = ["o{i - 1}"]\nouts = ["o{i}"]\n'
                    for i in range(1, 10))
    g = graph(tmp_path, '[target.s0]\ncmd = "false"\nouts = ["o0"]\n' + chain)
    outcomes = run(g, Work(sleep=0.0, fail=("s0",)), keep_going=True)
    # a chain of 9 blocked targets: picking s0 every time by chance is about 1 in 9!
    assert {o.message for n, o in outcomes.items() if n != "s0"} == {"not run: 's0' failed"}


def test_without_keep_going_nothing_new_starts_after_a_failure(tmp_path: Path):
    g = graph(tmp_path, FAILING)
    work = Work(sleep=0.02, fail=("a",))
    outcomes = run(g, work, jobs=1, keep_going=False)
    assert work.started == ["a"]
    assert outcomes["a"].status == "failed"
    assert {n: o.status for n, o in outcomes.items() if n != "a"} == {
        "b": "blocked", "c": "blocked", "other": "blocked", "other2": "blocked"}
    assert "use -k to keep going" in outcomes["other"].message
    assert outcomes["b"].message == "not run: 'a' failed"


def test_without_keep_going_running_targets_finish(tmp_path: Path):
    """A failure stops new starts, but work already running is waited for and recorded."""
    g = graph(tmp_path, """
        [target.fast]
        cmd = "false"
        [target.slow]
        cmd = "true"
        [target.later]
        cmd = "true"
        deps = ["x"]
        [target.x]
        cmd = "true"
        outs = ["x"]
        resources = { cpus = 2 }
    """)

    class Mixed(Work):
        def __call__(self, name: str, gpus: tuple[str, ...]) -> Outcome:
            self.sleep = 0.2 if name == "slow" else 0.01
            return super().__call__(name, gpus)

    work = Mixed(fail=("fast",))
    outcomes = run(g, work, capacity=Capacity(cpus=2), jobs=2)
    assert set(work.started) == {"fast", "slow"}
    assert outcomes["slow"].status == "ran"
    assert outcomes["x"].status == "blocked" and outcomes["later"].status == "blocked"


def test_reused_and_uptodate_outcomes_unblock_dependents(tmp_path: Path):
    g = graph(tmp_path, FAILING)

    def work(name: str, gpus: tuple[str, ...]) -> Outcome:
        return Outcome(name, {"a": "reused", "b": "uptodate"}.get(name, "ran"))

    outcomes = Scheduler(g, set(g.targets), Capacity(cpus=4), 2, False, work,
                         cancel=lambda: None).run()
    assert outcomes["c"].status == "ran"


def test_an_exception_in_work_cancels_and_propagates(tmp_path: Path):
    g = graph(tmp_path, independent(1))
    cancelled: list[bool] = []

    def work(name: str, gpus: tuple[str, ...]) -> Outcome:
        raise RuntimeError("executor broke")

    sched = Scheduler(g, set(g.targets), Capacity(cpus=1), 1, False, work,
                      cancel=lambda: cancelled.append(True))
    with pytest.raises(RuntimeError, match="executor broke"):
        sched.run()
    assert cancelled == [True]
    assert sched.interrupted


def test_memory_is_never_oversubscribed_when_it_runs_out_exactly(tmp_path: Path):
    g = graph(tmp_path, independent(4, 'resources = { memory = "6GiB" }'))
    work = Work(sleep=0.05)
    run(g, work, capacity=Capacity(cpus=8, memory=12 * 2**30), jobs=8)
    assert work.peak == 2


def test_unknown_memory_capacity_sets_no_memory_limit(tmp_path: Path):
    g = graph(tmp_path, independent(3, 'resources = { memory = "6GiB" }'))
    work = Work(sleep=0.1)
    run(g, work, capacity=Capacity(cpus=8, memory=0), jobs=8)
    assert work.peak == 3


def test_blocked_message_names_the_first_failure_upstream(tmp_path: Path):
    g = graph(tmp_path, """
        [target.x]
        cmd = "false"
        outs = ["x"]
        [target.y]
        cmd = "false"
        outs = ["y"]
        [target.z]
        cmd = "true"
        deps = ["x", "y"]
    """)
    order = g.order({"x", "y", "z"})
    outcomes = run(g, Work(sleep=0.0, fail=("x", "y")), keep_going=True)
    assert outcomes["z"].message == f"not run: '{order[0]}' failed"
