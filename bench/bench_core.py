#!/usr/bin/env python3
"""Core benchmark: mlmake against GNU make on the same synthetic work, in the same run.

Scenarios (SPEC.md section 9):

  a  N trivial independent targets (default 1,000): full build and no-op at -j1.
     Per-target overhead = (mlmake full - make full) / N, goal <= 5 ms.
     The no-op ratio (mlmake run / make) is reported for information.
  b  T targets x F dependency files of 1 KB (default 100 x 1,000 = 100,000 files).
     No-op check `mlmake status` vs `make -q`, median of R warm runs.
     Goal: <= 1.5x make -q, peak RSS of `mlmake status` < 200 MB.
  c  8 independent `sleep 1` targets at -j2: mlmake wall time, goal < 1.1x the ideal (4.4 s),
     next to make -j2.

Every scenario works in fresh temporary directories, each its own `git init` repository (one for make,
one for mlmake), so the two tools never see each other's state.

Usage:
    python bench/bench_core.py [--quick] [--only a,b,c] [--json OUT] [--mlmake CMD] [--keep]

Standard library only. Exit code: 0 when every measured goal passes and every correctness check holds,
1 when a goal is missed, 2 when a correctness check fails or a tool crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# --------------------------------------------------------------------------------------------------
# helpers


class BenchError(Exception):
    """A tool crashed, returned an unexpected exit code, or produced wrong output."""


class Result:
    __slots__ = ("argv", "cwd", "rc", "wall", "maxrss_kb", "log")

    def __init__(self, argv, cwd, rc, wall, maxrss_kb, log):
        self.argv, self.cwd, self.rc, self.wall, self.maxrss_kb, self.log = (
            argv, cwd, rc, wall, maxrss_kb, log)

    def cmdline(self) -> str:
        return f"cd {shlex.quote(self.cwd)} && " + " ".join(shlex.quote(a) for a in self.argv)


def run(argv, cwd, timeout=600.0, env=None) -> Result:
    """Run argv, return wall time and the peak RSS of its process tree (wait4 rusage).

    stdout and stderr go to a temporary file (never a terminal, for both tools alike) and are kept
    so a failure can be shown.
    """
    with tempfile.TemporaryFile(mode="w+b") as logf:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.perf_counter() > deadline:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
                pid, status, ru = os.wait4(p.pid, 0)
                break
            # poll quickly at first (short commands), then back off
            el = time.perf_counter() - t0
            time.sleep(0.0005 if el < 0.05 else 0.002 if el < 1 else 0.01)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        p.returncode = rc
        logf.seek(0)
        log = logf.read().decode("utf-8", "replace")
    if time.perf_counter() > deadline:
        rc = 124
        log += f"\n[bench] killed after {timeout:.0f} s timeout\n"
    return Result(list(argv), cwd, rc, wall, ru.ru_maxrss, log)


def expect(res: Result, rcs, what: str):
    if res.rc not in rcs:
        tail = "\n".join(res.log.splitlines()[-40:])
        raise BenchError(f"{what}: exit code {res.rc} (expected {sorted(rcs)}) after "
                         f"{res.wall:.2f} s\n  reproduce: {res.cmdline()}\n  output tail:\n"
                         + "\n".join("    " + line for line in tail.splitlines()))
    return res


GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")


def git_init(d: str, commit: bool, paths=None):
    subprocess.run(["git", "init", "-q", d], check=True, env=GIT_ENV)
    if commit:
        paths = [x for x in paths if os.path.exists(os.path.join(d, x))] if paths else ["."]
        subprocess.run(["git", "add", "--"] + paths, cwd=d, check=True, env=GIT_ENV)
        subprocess.run(["git", "commit", "-q", "--no-verify", "-m", "bench fixture"], cwd=d,
                       check=True, env=GIT_ENV, stdout=subprocess.DEVNULL)


def write(path: str, text: str):
    with open(path, "w") as f:
        f.write(text)


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string for our ASCII content


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_s(x):
    if x != x:  # nan
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.3f} s"


# --------------------------------------------------------------------------------------------------
# fixtures


class Fixture:
    """A pair of fresh git repositories with the same inputs: one for make, one for mlmake."""

    def __init__(self, root: str, name: str):
        self.make_dir = os.path.join(root, f"{name}-make")
        self.ml_dir = os.path.join(root, f"{name}-mlmake")
        os.makedirs(self.make_dir)
        os.makedirs(self.ml_dir)

    def dirs(self):
        return (self.make_dir, self.ml_dir)


def gen_trivial(root: str, n: int, commit: bool) -> Fixture:
    fx = Fixture(root, "a")
    mk = ["# generated by bench_core.py: scenario a", ".PHONY: all", ".SUFFIXES:",
          "all: " + " ".join(f"out/t{i}.txt" for i in range(n)), ""]
    ml = ["# generated by bench_core.py: scenario a", ""]
    for i in range(n):
        mk += [f"out/t{i}.txt: in/t{i}.txt", f"\techo {i} > out/t{i}.txt", ""]
        ml += [f"[target.t{i}]", f"cmd = {toml_str(f'echo {i} > out/t{i}.txt')}",
               f'deps = ["in/t{i}.txt"]', f'outs = ["out/t{i}.txt"]', ""]
    for d in fx.dirs():
        os.makedirs(os.path.join(d, "in"))
        os.makedirs(os.path.join(d, "out"))
        for i in range(n):
            write(os.path.join(d, "in", f"t{i}.txt"), f"input {i}\n")
    write(os.path.join(fx.make_dir, "Makefile"), "\n".join(mk))
    write(os.path.join(fx.ml_dir, "Mlfile"), "\n".join(ml))
    for d in fx.dirs():
        git_init(d, commit)
    return fx


def gen_manyfiles(root: str, n_targets: int, n_files: int, commit: bool,
                  commit_data: bool = False) -> Fixture:
    fx = Fixture(root, "b")
    blob = os.urandom(1024 * 64)
    mk = ["# generated by bench_core.py: scenario b", ".PHONY: all", ".SUFFIXES:",
          "all: " + " ".join(f"out/d{i}.txt" for i in range(n_targets)), ""]
    ml = ["# generated by bench_core.py: scenario b", ""]
    width = len(str(n_files - 1))
    for i in range(n_targets):
        files = " ".join(f"data/d{i}/f{j:0{width}d}.bin" for j in range(n_files))
        mk += [f"out/d{i}.txt: {files}", f"\techo {i} > out/d{i}.txt", ""]
        ml += [f"[target.d{i}]", f"cmd = {toml_str(f'echo {i} > out/d{i}.txt')}",
               f'deps = ["data/d{i}/"]', f'outs = ["out/d{i}.txt"]', ""]
    # The data is written once (into the make tree) and hard-linked into the mlmake tree: creating
    # 100,000 inodes is the slow part on many disks, and neither tool writes to its deps.
    for d in fx.dirs():
        os.makedirs(os.path.join(d, "out"))
    k = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(n_targets):
        src = os.path.join(fx.make_dir, "data", f"d{i}")
        dst = os.path.join(fx.ml_dir, "data", f"d{i}")
        os.makedirs(src)
        os.makedirs(dst)
        for j in range(n_files):
            # 1 KB, distinct content per file (a counter header + a slice of random bytes)
            off = (k * 37) % (len(blob) - 1024)
            head = f"{i}:{j}\n".encode()
            name = f"f{j:0{width}d}.bin"
            fd = os.open(os.path.join(src, name), flags, 0o644)
            os.write(fd, head + blob[off:off + 1024 - len(head)])
            os.close(fd)
            os.link(os.path.join(src, name), os.path.join(dst, name))
            k += 1
    write(os.path.join(fx.make_dir, "Makefile"), "\n".join(mk))
    write(os.path.join(fx.ml_dir, "Mlfile"), "\n".join(ml))
    for d in fx.dirs():
        # like most ML repositories, the data itself is not in Git unless asked (--b-commit-data)
        git_init(d, commit, None if commit_data else ["Makefile", "Mlfile"])
    return fx


def gen_sleep(root: str, n: int, secs: float, commit: bool) -> Fixture:
    fx = Fixture(root, "c")
    mk = ["# generated by bench_core.py: scenario c", ".PHONY: all", ".SUFFIXES:",
          "all: " + " ".join(f"out/s{i}.txt" for i in range(n)), ""]
    ml = ["# generated by bench_core.py: scenario c", ""]
    for i in range(n):
        cmd = f"sleep {secs:g} && echo {i} > out/s{i}.txt"
        mk += [f"out/s{i}.txt: in/s{i}.txt", f"\t{cmd}", ""]
        ml += [f"[target.s{i}]", f"cmd = {toml_str(cmd)}", f'deps = ["in/s{i}.txt"]',
               f'outs = ["out/s{i}.txt"]', ""]
    for d in fx.dirs():
        os.makedirs(os.path.join(d, "in"))
        os.makedirs(os.path.join(d, "out"))
        for i in range(n):
            write(os.path.join(d, "in", f"s{i}.txt"), f"input {i}\n")
    write(os.path.join(fx.make_dir, "Makefile"), "\n".join(mk))
    write(os.path.join(fx.ml_dir, "Mlfile"), "\n".join(ml))
    for d in fx.dirs():
        git_init(d, commit)
    return fx


def check_outs(d: str, names, contents=None):
    missing = [n for n in names if not os.path.isfile(os.path.join(d, n))]
    if missing:
        raise BenchError(f"{len(missing)} of {len(names)} outs missing in {d} after the full build, "
                         f"e.g. {missing[:3]}")
    if contents:
        bad = []
        for n, want in zip(names, contents):
            with open(os.path.join(d, n)) as f:
                if f.read() != want:
                    bad.append(n)
        if bad:
            raise BenchError(f"{len(bad)} outs in {d} have wrong content, e.g. {bad[:3]}")


def mtimes(d: str, names):
    return {n: os.stat(os.path.join(d, n)).st_mtime_ns for n in names}


# --------------------------------------------------------------------------------------------------
# scenarios


class Bench:
    def __init__(self, args):
        self.args = args
        self.ml = shlex.split(args.mlmake)
        self.rows = []        # table rows
        self.results = {}     # for --json
        self.problems = []    # correctness failures / crashes
        self.notes = []

    # -- mlmake command lines
    def mlc(self, d, *rest):
        return self.ml + ["-C", d, *rest]

    def row(self, scen, metric, make, mlmake, ratio, goal, status):
        self.rows.append((scen, metric, make, mlmake, ratio, goal, status))

    # (a) ---------------------------------------------------------------------------------------
    def scenario_a(self, root):
        n = self.args.a_targets
        reps = self.args.noop_reps
        names = [f"out/t{i}.txt" for i in range(n)]
        contents = [f"{i}\n" for i in range(n)]
        r = {"targets": n, "generate_s": 0.0}
        self.results["a"] = r
        # full builds need fresh fixtures: one pair per repetition, the median is reported
        mk_runs, ml_runs, rss = [], [], []
        for k in range(self.args.full_reps):
            t0 = time.perf_counter()
            fx = gen_trivial(os.path.join(root, f"rep{k}"), n, self.args.git_commit)
            r["generate_s"] += time.perf_counter() - t0
            m = expect(run(["make", "-r", "-C", fx.make_dir, "-j1"], fx.make_dir), {0},
                       "a: make full build")
            check_outs(fx.make_dir, names, contents)
            x = expect(run(self.mlc(fx.ml_dir, "-j", "1"), fx.ml_dir), {0}, "a: mlmake full build")
            check_outs(fx.ml_dir, names, contents)
            mk_runs.append(m.wall)
            ml_runs.append(x.wall)
            rss.append(x.maxrss_kb / 1024)

        class _W:  # median wall times, shaped like Result for the code below
            def __init__(self, w):
                self.wall = w
        mk_full, ml_full = _W(median(mk_runs)), _W(median(ml_runs))
        r.update(make_full_s=mk_full.wall, mlmake_full_s=ml_full.wall, make_full_runs=mk_runs,
                 mlmake_full_runs=ml_runs, mlmake_full_maxrss_mb=max(rss))
        per_target_ms = (ml_full.wall - mk_full.wall) / n * 1000
        r["per_target_overhead_ms"] = per_target_ms
        r["make_per_target_ms"] = mk_full.wall / n * 1000
        r["mlmake_per_target_ms"] = ml_full.wall / n * 1000
        ok = per_target_ms <= 5.0
        self.row("a", f"full build, {n} targets, -j1 (median {len(mk_runs)})", fmt_s(mk_full.wall), fmt_s(ml_full.wall),
                 f"{ml_full.wall / mk_full.wall:.2f}x", "-", "info")
        self.row("a", "per-target overhead vs make", f"{mk_full.wall / n * 1000:.2f} ms/t",
                 f"{ml_full.wall / n * 1000:.2f} ms/t", f"+{per_target_ms:.2f} ms",
                 "<= +5 ms", "PASS" if ok else "MISS")
        r["goal_per_target_pass"] = ok

        before = mtimes(fx.ml_dir, names[:50])
        mk_noop, ml_noop, ml_stat, mk_q = [], [], [], []
        for k in range(reps + 1):  # first round is a warm-up, not counted
            a = expect(run(["make", "-r", "-C", fx.make_dir, "-j1"], fx.make_dir), {0}, "a: make no-op")
            b = expect(run(self.mlc(fx.ml_dir, "-j", "1"), fx.ml_dir), {0}, "a: mlmake no-op run")
            c = expect(run(self.mlc(fx.ml_dir, "status"), fx.ml_dir), {0, 1}, "a: mlmake status")
            q = expect(run(["make", "-r", "-C", fx.make_dir, "-q"], fx.make_dir), {0, 1}, "a: make -q")
            if c.rc != 0:
                raise BenchError(f"a: mlmake status exited {c.rc} after a no-op run (expected 0: up "
                                 f"to date)\n  reproduce: {c.cmdline()}\n  output tail:\n    "
                                 + "\n    ".join(c.log.splitlines()[-20:]))
            if q.rc != 0:
                raise BenchError(f"a: make -q exited {q.rc} after a no-op (expected 0)")
            if k:
                mk_noop.append(a.wall)
                ml_noop.append(b.wall)
                ml_stat.append(c.wall)
                mk_q.append(q.wall)
        after = mtimes(fx.ml_dir, names[:50])
        if before != after:
            changed = [x for x in before if before[x] != after[x]]
            self.problems.append(f"a: mlmake no-op rewrote outs (mtime changed), e.g. {changed[:3]}")
        r.update(make_noop_s=median(mk_noop), mlmake_noop_s=median(ml_noop),
                 mlmake_status_s=median(ml_stat), make_q_s=median(mk_q))
        self.row("a", f"no-op run -j1 (median of {reps})", fmt_s(r["make_noop_s"]),
                 fmt_s(r["mlmake_noop_s"]), f"{r['mlmake_noop_s'] / r['make_noop_s']:.2f}x", "-", "info")
        self.row("a", "no-op: status vs make -r -q", fmt_s(r["make_q_s"]), fmt_s(r["mlmake_status_s"]),
                 f"{r['mlmake_status_s'] / r['make_q_s']:.2f}x", "-", "info")

    # (b) ---------------------------------------------------------------------------------------
    def scenario_b(self, root):
        nt, nf = self.args.b_targets, self.args.b_files
        reps = self.args.noop_reps
        t0 = time.perf_counter()
        fx = gen_manyfiles(root, nt, nf, self.args.git_commit, self.args.b_commit_data)
        gen_s = time.perf_counter() - t0
        names = [f"out/d{i}.txt" for i in range(nt)]
        r = {"targets": nt, "files_per_target": nf, "files": nt * nf, "generate_s": gen_s}
        self.results["b"] = r

        mk_full = expect(run(["make", "-r", "-C", fx.make_dir, "-j1"], fx.make_dir), {0}, "b: make full build")
        check_outs(fx.make_dir, names)
        ml_full = expect(run(self.mlc(fx.ml_dir, "-j", "1"), fx.ml_dir), {0}, "b: mlmake full build")
        check_outs(fx.ml_dir, names)
        r.update(make_full_s=mk_full.wall, mlmake_full_s=ml_full.wall,
                 mlmake_full_maxrss_mb=ml_full.maxrss_kb / 1024)
        self.row("b", f"first build, {nt}x{nf} files, -j1", fmt_s(mk_full.wall), fmt_s(ml_full.wall),
                 f"{ml_full.wall / mk_full.wall:.2f}x", "-", "info")

        mk_q, ml_st, rss = [], [], []
        for k in range(reps + 1):  # first round warms the page cache / stat cache; not counted
            a = expect(run(["make", "-r", "-C", fx.make_dir, "-q"], fx.make_dir), {0, 1}, "b: make -q")
            b = expect(run(self.mlc(fx.ml_dir, "status"), fx.ml_dir), {0, 1}, "b: mlmake status")
            if a.rc != 0:
                raise BenchError(f"b: make -q exited {a.rc} after the build (expected 0)")
            if b.rc != 0:
                raise BenchError(f"b: mlmake status exited {b.rc} after the build (expected 0: up to "
                                 f"date)\n  reproduce: {b.cmdline()}\n  output tail:\n    "
                                 + "\n    ".join(b.log.splitlines()[-20:]))
            if k:
                mk_q.append(a.wall)
                ml_st.append(b.wall)
                rss.append(b.maxrss_kb / 1024)
        r.update(make_q_s=median(mk_q), mlmake_status_s=median(ml_st), make_q_runs=mk_q,
                 mlmake_status_runs=ml_st, mlmake_status_maxrss_mb=max(rss))
        ratio = r["mlmake_status_s"] / r["make_q_s"]
        r["ratio"] = ratio
        r["goal_ratio_pass"] = ratio <= 1.5
        r["goal_rss_pass"] = r["mlmake_status_maxrss_mb"] < 200
        self.row("b", f"no-op: status vs make -r -q (median {reps})", fmt_s(r["make_q_s"]),
                 fmt_s(r["mlmake_status_s"]), f"{ratio:.2f}x", "<= 1.5x",
                 "PASS" if r["goal_ratio_pass"] else "MISS")
        self.row("b", "peak RSS of mlmake status", "-", f"{r['mlmake_status_maxrss_mb']:.0f} MB", "-",
                 "< 200 MB", "PASS" if r["goal_rss_pass"] else "MISS")
        self.row("b", "peak RSS of mlmake first build", "-", f"{r['mlmake_full_maxrss_mb']:.0f} MB", "-",
                 "-", "info")
        # a second no-op *run* (not just status) for information
        a = expect(run(["make", "-r", "-C", fx.make_dir, "-j1"], fx.make_dir), {0}, "b: make no-op run")
        b = expect(run(self.mlc(fx.ml_dir, "-j", "1"), fx.ml_dir), {0}, "b: mlmake no-op run")
        r.update(make_noop_run_s=a.wall, mlmake_noop_run_s=b.wall)
        self.row("b", "no-op run -j1 (single)", fmt_s(a.wall), fmt_s(b.wall), f"{b.wall / a.wall:.2f}x",
                 "-", "info")

    # (c) ---------------------------------------------------------------------------------------
    def scenario_c(self, root):
        n, secs, j = 8, self.args.c_sleep, 2
        ideal = n * secs / j
        goal = ideal * 1.1
        names = [f"out/s{i}.txt" for i in range(n)]
        r = {"targets": n, "sleep_s": secs, "jobs": j, "ideal_s": ideal, "goal_s": goal}
        self.results["c"] = r
        mk_runs, ml_runs = [], []
        for k in range(self.args.c_reps):  # fresh fixtures each time; the median is reported
            fx = gen_sleep(os.path.join(root, f"rep{k}"), n, secs, self.args.git_commit)
            a = expect(run(["make", "-r", "-C", fx.make_dir, f"-j{j}"], fx.make_dir), {0},
                       "c: make -j2")
            check_outs(fx.make_dir, names)
            b = expect(run(self.mlc(fx.ml_dir, "-j", str(j)), fx.ml_dir), {0}, "c: mlmake -j2")
            check_outs(fx.ml_dir, names)
            mk_runs.append(a.wall)
            ml_runs.append(b.wall)

        class _W:
            def __init__(self, w):
                self.wall = w
        a, b = _W(median(mk_runs)), _W(median(ml_runs))
        r.update(make_s=a.wall, mlmake_s=b.wall, make_runs=mk_runs, mlmake_runs=ml_runs,
                 efficiency=ideal / b.wall, make_efficiency=ideal / a.wall, goal_pass=b.wall < goal)
        self.row("c", f"{n} x sleep {secs:g} -j{j}, ideal {ideal:g} s (median {len(ml_runs)})", fmt_s(a.wall), fmt_s(b.wall),
                 f"{b.wall / a.wall:.2f}x", f"< {goal:.2f} s", "PASS" if r["goal_pass"] else "MISS")
        self.row("c", "parallel efficiency (ideal/wall)", f"{ideal / a.wall:.0%}", f"{ideal / b.wall:.0%}",
                 "-", ">= 90%", "PASS" if ideal / b.wall >= 0.9 else "MISS")

    # -------------------------------------------------------------------------------------------
    def main(self):
        a = self.args
        print(f"mlmake command: {' '.join(self.ml)}")
        v = run(self.ml + ["--version"], os.getcwd(), timeout=60)
        mv = run(["make", "--version"], os.getcwd(), timeout=10)
        self.results["meta"] = {
            "mlmake_cmd": self.ml, "mlmake_version": v.log.strip() if v.rc == 0 else None,
            "make_version": mv.log.splitlines()[0] if mv.log else None,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "quick": a.quick,
        }
        if v.rc != 0:
            print(f"error: `{' '.join(self.ml)} --version` failed (exit {v.rc}):\n{v.log[-2000:]}",
                  file=sys.stderr)
            return 2
        # start-up floor: what any mlmake command costs before doing work
        ver = median([run(self.ml + ["--version"], os.getcwd(), timeout=60).wall for _ in range(5)])
        py = median([run([sys.executable, "-c", "pass"], os.getcwd(), timeout=60).wall
                     for _ in range(5)])
        self.results["meta"].update(mlmake_version_s=ver, python_startup_s=py)
        print(f"{v.log.strip()} | {self.results['meta']['make_version']} | "
              f"python {self.results['meta']['python']} | {os.cpu_count()} CPUs"
              + (" | QUICK (goals are defined at full size)" if a.quick else ""))
        print(f"start-up floor: `mlmake --version` {fmt_s(ver)}, `python -c pass` {fmt_s(py)} "
              f"(medians of 5)")
        base = tempfile.mkdtemp(prefix="mlmake-bench-", dir=a.tmpdir)
        t_all = time.perf_counter()
        try:
            for s in a.only:
                root = os.path.join(base, s)
                os.makedirs(root)
                print(f"[scenario {s}] ...", flush=True)
                t0 = time.perf_counter()
                try:
                    getattr(self, f"scenario_{s}")(root)
                except BenchError as e:
                    self.problems.append(str(e))
                    self.results.setdefault(s, {})["error"] = str(e)
                    self.row(s, "ERROR (see below)", "-", "-", "-", "-", "FAIL")
                print(f"[scenario {s}] done in {time.perf_counter() - t0:.1f} s", flush=True)
        finally:
            if a.keep:
                print(f"fixtures kept in {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
        self.results["total_s"] = time.perf_counter() - t_all
        self.print_table()
        if self.problems:
            print("\nPROBLEMS:")
            for p in self.problems:
                print(" - " + p)
        if a.json:
            self.results["rows"] = [dict(zip(("scenario", "metric", "make", "mlmake", "ratio", "goal",
                                               "status"), r)) for r in self.rows]
            self.results["problems"] = self.problems
            with open(a.json, "w") as f:
                json.dump(self.results, f, indent=2)
            print(f"\nJSON written to {a.json}")
        if self.problems:
            return 2
        return 1 if any(r[6] == "MISS" for r in self.rows) else 0

    def print_table(self):
        hdr = ("", "measure", "make", "mlmake", "ratio/delta", "goal", "result")
        rows = [hdr] + [tuple(str(c) for c in r) for r in self.rows]
        w = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
        line = "  ".join("-" * x for x in w)
        print()
        for k, r in enumerate(rows):
            print("  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)))
            if k == 0:
                print(line)
        print(f"\ntotal {self.results['total_s']:.1f} s")


def default_mlmake() -> str:
    exe = shutil.which("mlmake")
    return shlex.quote(exe) if exe else f"{shlex.quote(sys.executable)} -m mlmake"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a smoke test (100 targets, 10x100 files, sleep 0.5)")
    p.add_argument("--only", default="a,b,c", help="comma-separated scenarios to run (a,b,c)")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT")
    p.add_argument("--mlmake", metavar="CMD", default=None,
                   help="command that runs mlmake (default: `mlmake` on PATH, else `python -m mlmake`)")
    p.add_argument("--noop-reps", type=int, default=5, help="timed no-op repetitions (median)")
    p.add_argument("--full-reps", type=int, default=None,
                   help="scenario a: full builds on fresh fixtures (median; default 3, 1 with --quick)")
    p.add_argument("--c-reps", type=int, default=None,
                   help="scenario c: repetitions on fresh fixtures (median; default 3, 1 with --quick)")
    p.add_argument("--no-git-commit", dest="git_commit", action="store_false",
                   help="git init the fixtures but do not commit them")
    p.add_argument("--b-commit-data", action="store_true",
                   help="scenario b: commit the 100,000 data files to Git too (slow to set up)")
    p.add_argument("--tmpdir", default=None, help="where to create the fixtures (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the fixtures for inspection")
    p.add_argument("--a-targets", type=int, default=None)
    p.add_argument("--b-targets", type=int, default=None)
    p.add_argument("--b-files", type=int, default=None)
    p.add_argument("--c-sleep", type=float, default=None)
    a = p.parse_args(argv)
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    for s in a.only:
        if s not in ("a", "b", "c"):
            p.error(f"unknown scenario {s!r} (choose from a, b, c)")
    full = dict(a_targets=1000, b_targets=100, b_files=1000, c_sleep=1.0)
    quick = dict(a_targets=100, b_targets=10, b_files=100, c_sleep=0.5)
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.quick and a.noop_reps == 5:
        a.noop_reps = 3
    if a.full_reps is None:
        a.full_reps = 1 if a.quick else 3
    if a.c_reps is None:
        a.c_reps = 1 if a.quick else 3
    a.mlmake = a.mlmake or default_mlmake()
    return a


if __name__ == "__main__":
    sys.exit(Bench(parse_args()).main())
