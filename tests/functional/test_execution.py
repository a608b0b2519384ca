"""The local executor: parallelism, failures, -k, logs, GPU pinning, interrupts, the run lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import MLMAKE


def wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


FAILING = {"Mlfile": """
    [target.bad]
    cmd = "echo broken; exit 3"
    outs = ["bad.txt"]

    [target.after_bad]
    cmd = "cat bad.txt > after_bad.txt"
    deps = ["bad.txt"]
    outs = ["after_bad.txt"]

    [target.good]
    cmd = "sleep 0.5; echo good > good.txt"
    outs = ["good.txt"]
"""}


def test_failure_blocks_dependents_and_keep_going_builds_the_rest(repo):
    repo.write(FAILING)
    r = repo.mlmake("-j", "1", "-k")
    assert r.code == 1
    assert "✗ bad failed: exit code 3" in r.err
    assert "after_bad not run: 'bad' failed" in r.err
    assert repo.exists("good.txt") and not repo.exists("after_bad.txt")
    assert "failed 1" in r.out
    lock = json.loads(repo.read("Mlfile.lock"))
    assert set(lock["targets"]) == {"good"}


def test_without_keep_going_nothing_new_starts_after_a_failure(repo):
    repo.write(FAILING)
    r = repo.mlmake("-j", "1", "bad", "good")
    assert r.code == 1
    assert not repo.exists("good.txt")
    assert "use -k to keep going" in r.err


def test_output_is_prefixed_and_kept_as_a_log(repo):
    repo.write({"Mlfile": """
        [target.talk]
        cmd = "echo hello; echo oops >&2; echo done > t.txt"
        outs = ["t.txt"]
    """})
    r = repo.mlmake()
    assert "[talk] hello" in r.out and "[talk] oops" in r.out
    log = repo.mlmake("log", "talk")
    assert log.code == 0 and log.out == "hello\noops\n"
    runs = repo.runs()
    assert runs[0]["target"] == "talk" and runs[0]["outcome"] == "ran"
    assert runs[0]["commit"] is None and runs[0]["host"]


def test_run_records_carry_commit_and_outcome(repo):
    repo.write(FAILING)
    sha = repo.commit("pipeline")
    repo.mlmake("-k")
    by_target = {r["target"]: r for r in repo.runs()}
    assert by_target["bad"]["outcome"] == "failed" and by_target["bad"]["exit_code"] == 3
    assert by_target["good"]["commit"] == sha
    assert by_target["good"]["executor"] == "local"


def test_independent_targets_run_in_parallel(repo):
    targets = "".join(f"""
        [target.s{i}]
        cmd = "sleep 1 && echo {i} > s{i}.txt"
        outs = ["s{i}.txt"]
    """ for i in range(4))
    repo.write({"Mlfile": targets})
    t0 = time.monotonic()
    assert repo.mlmake("-j", "2").code == 0
    assert time.monotonic() - t0 < 3.8  # 4 × 1 s at two at a time, plus start-up


def test_gpus_are_pinned_with_cuda_visible_devices(repo):
    repo.write({"Mlfile": """
        [target.g1]
        cmd = "sleep 0.5; echo $CUDA_VISIBLE_DEVICES > g1.txt"
        outs = ["g1.txt"]
        resources = { gpus = 1 }
        [target.g2]
        cmd = "sleep 0.5; echo $CUDA_VISIBLE_DEVICES > g2.txt"
        outs = ["g2.txt"]
        resources = { gpus = 1 }
    """})
    r = repo.mlmake("-j", "2", env={"CUDA_VISIBLE_DEVICES": "4,7"})
    assert r.code == 0, r.text
    got = {repo.read("g1.txt").strip(), repo.read("g2.txt").strip()}
    assert got == {"4", "7"}


def test_targets_hold_cpus_so_wide_ones_do_not_overlap(repo):
    ncpu = len(os.sched_getaffinity(0))
    repo.write({"Mlfile": "".join(f"""
        [target.w{i}]
        cmd = "date +%s%N > w{i}.start; sleep 0.4; date +%s%N > w{i}.end"
        outs = ["w{i}.start", "w{i}.end"]
        resources = {{ cpus = {ncpu} }}
    """ for i in range(2))})
    assert repo.mlmake("-j", "2").code == 0
    s0, e0, s1, e1 = (int(repo.read(f)) for f in ("w0.start", "w0.end", "w1.start", "w1.end"))
    assert e0 <= s1 or e1 <= s0


def start(repo, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*MLMAKE, *args], cwd=repo.path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


INTERRUPTIBLE = {"Mlfile": """
    [target.quick]
    cmd = "echo q > quick.txt"
    outs = ["quick.txt"]

    [target.slow]
    cmd = "sh -c 'echo $$ > slow.pid; exec sleep 60' ; echo s > slow.txt"
    deps = ["quick.txt"]
    outs = ["slow.txt"]

    [target.last]
    cmd = "cat slow.txt > last.txt"
    deps = ["slow.txt"]
    outs = ["last.txt"]
"""}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_every_child_and_the_next_run_resumes(repo, sig):
    repo.write(INTERRUPTIBLE)
    proc = start(repo, "-j", "1", "last")
    wait_for(lambda: repo.exists("slow.pid") and repo.read("slow.pid").strip())
    child = int(repo.read("slow.pid"))
    assert alive(child)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    wait_for(lambda: not alive(child), timeout=10)
    lock = json.loads(repo.read("Mlfile.lock"))  # valid JSON, only what finished
    assert set(lock["targets"]) == {"quick"}
    assert not any(n.endswith(".tmp") for n in os.listdir(repo.path))

    repo.write({"Mlfile": INTERRUPTIBLE["Mlfile"].replace("exec sleep 60", "true")})
    r = repo.mlmake("last")
    assert r.code == 0, r.text
    assert "✓ quick" not in r.out  # resumed: the finished target is not rerun
    assert "✓ slow" in r.out and "✓ last" in r.out


def test_a_second_run_waits_for_the_first_or_fails_with_no_wait(repo):
    repo.write({"Mlfile": """
        [target.hold]
        cmd = "touch started; sleep 2; echo h > hold.txt"
        outs = ["hold.txt"]
        [target.other]
        cmd = "echo o > other.txt"
        outs = ["other.txt"]
    """})
    first = start(repo, "hold")
    wait_for(lambda: repo.exists("started"))
    busy = repo.mlmake("--no-wait", "other")
    assert busy.code == 2 and "another mlmake run" in busy.err
    second = repo.mlmake("other")
    assert second.code == 0 and "waiting for another mlmake run" in second.err
    assert first.wait(30) == 0
    lock = json.loads(repo.read("Mlfile.lock"))
    assert set(lock["targets"]) == {"hold", "other"}


def test_init_templates_build(repo):
    for template in ("minimal",):
        r = repo.mlmake("init", "-t", template)
        assert r.code == 0, r.text
        assert repo.exists("Mlfile")
        r = repo.mlmake()
        assert r.code == 0, r.text
        assert repo.mlmake("status").code == 0
    assert repo.mlmake("init").code == 2  # never overwrites an Mlfile


def test_graph_formats(repo):
    from test_build import PIPELINE

    repo.write(PIPELINE)
    text = repo.mlmake("graph")
    assert text.code == 0 and "● prepare" in text.out and "evaluate" in text.out
    dot = repo.mlmake("graph", "--format", "dot").out
    assert dot.startswith("digraph") and '"prepare" -> "train@rf-0"' in dot
    mer = repo.mlmake("graph", "--format", "mermaid").out
    assert mer.startswith("flowchart LR") and "-->" in mer
    data = repo.mlmake("graph", "--json").json()
    assert {n["name"] for n in data["nodes"]} >= {"prepare", "evaluate"}
    assert {"from": "prepare", "to": "train@gbt-0", "kind": "data"} in data["edges"]
    assert all(n["state"] == "stale" for n in data["nodes"])


def test_global_options_directory_and_file(repo, tmp_path):
    repo.write({"sub/Other.mlfile": '[target.x]\ncmd = "echo x > x.txt"\nouts = ["x.txt"]\n'})
    r = subprocess.run([*MLMAKE, "-C", str(repo.path / "sub"), "-f", "Other.mlfile", "-q"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (repo.path / "sub" / "x.txt").exists()
    assert (repo.path / "sub" / "Other.mlfile.lock").exists()
    assert "ran 1" in r.stdout and "[x]" not in r.stdout
    v = repo.mlmake("--version")
    assert v.code == 0 and "mlmake" in v.out


def test_a_checkout_during_a_build_keeps_the_new_lock_and_the_results(repo):
    repo.write({"Mlfile": """
        [target.slow]
        cmd = "touch started; sleep 1.5; echo s > slow.txt"
        outs = ["slow.txt"]
    """})
    proc = start(repo)
    wait_for(lambda: repo.exists("started"))
    other = '{\n  "targets": {},\n  "version": 1\n}\n'
    (repo.path / "Mlfile.lock").write_text(other)  # what a `git checkout` would do
    out, err = proc.communicate(timeout=30)
    assert "was replaced while this build ran" in err
    assert repo.read("Mlfile.lock") == other
    r = repo.mlmake()
    assert r.code == 0 and "↺ slow reused" in r.out  # the result was kept in the run cache
