#!/usr/bin/env python3
"""Issue 21, "instant on every project": each figure next to its reference, in the same run.

Scenarios (--only, comma-separated; default all):

  startup    `python -c pass` (the start-up floor every figure below is compared with),
             `mlmake --version` and `mlmake --help` (info).
  digits     examples/digits built once (needs scikit-learn), then a no-op `mlmake status`
             answered from .mlmake/noop: <= 0.10 s and <= 2x `python -c pass`. The full check
             (no-op file removed) is printed for information, next to `make -q`-free floors.
  pipe16     a 16-target pipeline (4 chains of 4, a params file): the same no-op goal, and the
             full check next to `make -q` on an equivalent Makefile (info); `dvc status` on an
             equivalent dvc.yaml when `dvc` is on PATH.
  manyfiles  100 targets x 1,000 files (the directory deps of bench_core.py's scenario b): the
             full check `mlmake status` <= 1.5x `make -q`.
  trivial    1,000 trivial targets at -j1 (bench_core.py's scenario a), fresh fixtures each time:
             (mlmake - make) / 1,000 <= 2 ms per target.
  real       a 4-target chain whose stages sleep and write 2 MiB each, built from scratch at
             -j1: mlmake's wall minus make's on the same stages (make's own overhead is a few
             ms) <= 0.15 s.

    python bench/bench_instant.py [--only digits,pipe16] [--reps 9] [--quick] [--json OUT]

Every timing is the median of --reps runs after one uncounted warm-up, the tools alternating;
the load average before and after is printed, since these figures are tens of milliseconds.
Python's bytecode is cached (PYTHONDONTWRITEBYTECODE is dropped, PYTHONPYCACHEPREFIX points
into the fixtures unless set) as it is for an installed mlmake: compiling mlmake's sources
again on every run would add about 0.1 s to each figure.
Exit code 0: every goal passed; 1: a goal was missed; 2: a tool failed or gave a wrong answer.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import (BenchError, default_mlmake, expect, fmt_s, gen_manyfiles,  # noqa: E402
                        gen_trivial, git_init, median, run, toml_str, write)

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS = os.path.join(os.path.dirname(HERE), "examples", "digits")
SCENARIOS = ("startup", "digits", "pipe16", "manyfiles", "trivial", "real")


def timed(argv: list[str], cwd: str, rcs: set[int] = frozenset({0}), what: str = "",
          before: object = None) -> float:
    if before is not None:
        before()  # type: ignore[operator]
    return expect(run(argv, cwd, timeout=900), rcs, what or " ".join(argv)).wall


def medians(cmds: dict[str, tuple[list[str], str, object]], reps: int) -> dict[str, float]:
    """Median wall time of each command (argv, cwd, setup callable or None), alternating
    them, after one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for k in range(reps + 1):
        for name, (argv, cwd, setup) in cmds.items():
            t = timed(argv, cwd, what=name, before=setup)
            if k:
                times[name].append(t)
    return {k: median(v) for k, v in times.items()}


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ml = shlex.split(args.mlmake)
        self.rows: list[tuple[str, ...]] = []
        self.results: dict[str, dict[str, float | str | bool]] = {}
        self.problems: list[str] = []
        self.floor = float("nan")

    def row(self, scen: str, measure: str, ref: str, mine: str, ratio: str, goal: str,
            status: str) -> None:
        self.rows.append((scen, measure, ref, mine, ratio, goal, status))

    def mlc(self, d: str, *rest: str) -> list[str]:
        return [*self.ml, "-C", d, *rest]

    def noop_goal(self, scen: str, d: str) -> None:
        """The no-op `status` figure of `d` (already built, its no-op file recorded)."""
        st = run(self.mlc(d, "status"), d)
        if st.rc != 0 or "up to date" not in st.log:
            raise BenchError(f"{scen}: status after the build exited {st.rc}: {st.log[-500:]}")
        noop = os.path.join(d, ".mlmake", "noop")
        if not os.path.exists(noop):
            raise BenchError(f"{scen}: the full check recorded no .mlmake/noop")
        r = self.results.setdefault(scen, {})
        m = medians({"python -c pass": ([sys.executable, "-c", "pass"], d, None),
                     "status": (self.mlc(d, "status"), d, None)}, self.args.reps)
        self.floor = m["python -c pass"]
        ratio = m["status"] / m["python -c pass"]
        ok = m["status"] <= 0.10 and ratio <= 2.0
        r.update(python_pass_s=m["python -c pass"], noop_status_s=m["status"],
                 noop_ratio=ratio, noop_pass=ok)
        self.row(scen, "no-op status (answered from .mlmake/noop)",
                 f"python -c pass {fmt_s(m['python -c pass'])}", fmt_s(m["status"]),
                 f"{ratio:.2f}x", "<= 0.10 s, <= 2x", "PASS" if ok else "MISS")

        def forget() -> None:
            if os.path.exists(noop):
                os.unlink(noop)
        full = medians({"status": (self.mlc(d, "status"), d, forget)}, self.args.reps)["status"]
        r["full_status_s"] = full
        self.row(scen, "full check status (no-op file removed)",
                 f"python -c pass {fmt_s(m['python -c pass'])}", fmt_s(full),
                 f"{full / m['python -c pass']:.2f}x", "-", "info")
        time.sleep(2.1)
        run(self.mlc(d, "status"), d)  # leave the no-op file recorded again

    # -- scenarios ----------------------------------------------------------------------------
    def scenario_startup(self, root: str) -> None:
        m = medians({"pass": ([sys.executable, "-c", "pass"], root, None),
                     "version": ([*self.ml, "--version"], root, None),
                     "help": ([*self.ml, "--help"], root, None)}, self.args.reps)
        self.floor = m["pass"]
        self.results["startup"] = dict(m)
        self.row("startup", "python -c pass (the floor)", "-", fmt_s(m["pass"]), "-", "-",
                 "info")
        for k in ("version", "help"):
            self.row("startup", f"mlmake --{k}", f"python -c pass {fmt_s(m['pass'])}",
                     fmt_s(m[k]), f"{m[k] / m['pass']:.2f}x", "-", "info")

    def scenario_digits(self, root: str) -> None:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            self.row("digits", "skipped: scikit-learn is not installed", "-", "-", "-", "-",
                     "skip")
            return
        d = os.path.join(root, "digits")
        shutil.copytree(DIGITS, d, ignore=shutil.ignore_patterns(".mlmake", "data", "models",
                                                                  "metrics", "plots"))
        git_init(d, True)
        expect(run(self.mlc(d, "-q"), d, timeout=900), {0}, "digits: first build")
        time.sleep(2.1)  # the no-op file trusts no file modified in the last 2 s
        self.noop_goal("digits", d)

    def scenario_pipe16(self, root: str) -> None:
        d = os.path.join(root, "pipe16")
        mk_dir = os.path.join(root, "pipe16-make")
        gen_pipe16(d, mk_dir)
        expect(run(self.mlc(d, "-q", "-j1"), d), {0}, "pipe16: first build")
        expect(run(["make", "-r", "-s", "-C", mk_dir], mk_dir), {0}, "pipe16: make")
        time.sleep(2.1)
        self.noop_goal("pipe16", d)
        mq = medians({"make -q": (["make", "-r", "-q", "-C", mk_dir], mk_dir, None)},
                     self.args.reps)["make -q"]
        full = float(self.results["pipe16"]["full_status_s"])
        self.results["pipe16"]["make_q_s"] = mq
        self.row("pipe16", "full check status vs make -q", f"make -q {fmt_s(mq)}", fmt_s(full),
                 f"{full / mq:.2f}x", "-", "info")
        dvc = shutil.which("dvc")
        if dvc is None:
            self.row("pipe16", "dvc status: skipped (dvc not on PATH)", "-", "-", "-", "-",
                     "skip")
            return
        dv_dir = os.path.join(root, "pipe16-dvc")
        gen_pipe16_dvc(dv_dir)
        expect(run([dvc, "repro", "-q"], dv_dir, timeout=900), {0}, "pipe16: dvc repro")
        m = medians({"dvc status": ([dvc, "status", "-q"], dv_dir, None),
                     "status": (self.mlc(d, "status"), d, None)}, self.args.reps)
        self.results["pipe16"]["dvc_status_s"] = m["dvc status"]
        self.row("pipe16", "no-op status vs dvc status", f"dvc status {fmt_s(m['dvc status'])}",
                 fmt_s(m["status"]), f"{m['status'] / m['dvc status']:.2f}x", "-", "info")

    def scenario_manyfiles(self, root: str) -> None:
        nt, nf = self.args.many_targets, self.args.many_files
        fx = gen_manyfiles(root, nt, nf, True)
        expect(run(["make", "-r", "-s", "-C", fx.make_dir], fx.make_dir), {0}, "manyfiles: make")
        expect(run(self.mlc(fx.ml_dir, "-q", "-j1"), fx.ml_dir), {0}, "manyfiles: build")
        m = medians({"make -q": (["make", "-r", "-q", "-C", fx.make_dir], fx.make_dir, None),
                     "status": (self.mlc(fx.ml_dir, "status"), fx.ml_dir, None)}, self.args.reps)
        ratio = m["status"] / m["make -q"]
        ok = ratio <= 1.5
        self.results["manyfiles"] = dict(make_q_s=m["make -q"], status_s=m["status"],
                                         ratio=ratio, pass_=ok)
        self.row("manyfiles", f"status, {nt} targets x {nf} files",
                 f"make -q {fmt_s(m['make -q'])}", fmt_s(m["status"]), f"{ratio:.2f}x",
                 "<= 1.5x", "PASS" if ok else "MISS")

    def scenario_trivial(self, root: str) -> None:
        n = self.args.trivial_targets
        mk, ml = [], []
        for k in range(self.args.build_reps):
            fx = gen_trivial(os.path.join(root, f"rep{k}"), n, True)
            mk.append(expect(run(["make", "-r", "-C", fx.make_dir, "-j1"], fx.make_dir), {0},
                             "trivial: make").wall)
            ml.append(expect(run(self.mlc(fx.ml_dir, "-j", "1"), fx.ml_dir), {0},
                             "trivial: mlmake").wall)
            if not os.path.exists(os.path.join(fx.ml_dir, "out", f"t{n - 1}.txt")):
                raise BenchError("trivial: outs missing after the mlmake build")
        a, b = median(mk), median(ml)
        per = (b - a) / n * 1000
        ok = per <= 2.0
        self.results["trivial"] = dict(make_s=a, mlmake_s=b, per_target_ms=per, pass_=ok)
        self.row("trivial", f"{n} trivial targets -j1, per target", f"make {a / n * 1000:.2f} ms/t",
                 f"{b / n * 1000:.2f} ms/t", f"+{per:.2f} ms/t", "<= +2 ms/t",
                 "PASS" if ok else "MISS")

    def scenario_real(self, root: str) -> None:
        mk, ml = [], []
        for k in range(self.args.build_reps):
            d, mk_dir = os.path.join(root, f"ml{k}"), os.path.join(root, f"mk{k}")
            gen_real(d, mk_dir, self.args.stage_sleep)
            mk.append(expect(run(["make", "-r", "-s", "-C", mk_dir], mk_dir), {0},
                             "real: make").wall)
            ml.append(expect(run(self.mlc(d, "-j", "1"), d), {0}, "real: mlmake").wall)
            if not os.path.exists(os.path.join(d, "out", "d.bin")):
                raise BenchError("real: outs missing after the mlmake build")
        a, b = median(mk), median(ml)
        over = b - a
        ok = over <= 0.15
        self.results["real"] = dict(make_s=a, mlmake_s=b, overhead_s=over, pass_=ok)
        self.row("real", "4 stages from scratch: wall - stages", f"make {fmt_s(a)}", fmt_s(b),
                 f"+{fmt_s(over)}", "<= +0.15 s", "PASS" if ok else "MISS")

    # -----------------------------------------------------------------------------------------
    def main(self) -> int:
        print(f"mlmake command: {' '.join(self.ml)} | python {sys.version.split()[0]} | "
              f"{os.cpu_count()} CPUs | load average {loadavg()}")
        base = tempfile.mkdtemp(prefix="mlmake-bench-instant-")
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(base, "pycache"))
        try:
            for s in self.args.only:
                root = os.path.join(base, s)
                os.makedirs(root)
                t0 = time.perf_counter()
                print(f"[{s}] ...", flush=True)
                try:
                    getattr(self, f"scenario_{s}")(root)
                except BenchError as e:
                    self.problems.append(str(e))
                    self.row(s, "ERROR (see below)", "-", "-", "-", "-", "FAIL")
                print(f"[{s}] done in {time.perf_counter() - t0:.1f} s (load {loadavg()})",
                      flush=True)
        finally:
            if self.args.keep:
                print(f"fixtures kept in {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
        hdr = ("", "measure", "reference", "mlmake", "ratio/delta", "goal", "result")
        rows = [hdr, *self.rows]
        w = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
        print()
        for k, r in enumerate(rows):
            print("  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)))
            if k == 0:
                print("  ".join("-" * x for x in w))
        print(f"\nload average at the end: {loadavg()}")
        for p in self.problems:
            print("PROBLEM: " + p)
        if self.args.json:
            with open(self.args.json, "w") as fh:
                json.dump({"results": self.results, "rows": self.rows,
                           "problems": self.problems}, fh, indent=2)
        if self.problems:
            return 2
        return 1 if any(r[6] == "MISS" for r in self.rows) else 0


# -- fixtures ---------------------------------------------------------------------------------
def gen_pipe16(d: str, mk_dir: str) -> None:
    """4 chains of 4 targets; each step reads the previous out and a script, the first
    of each chain a params section."""
    ml = ['[project]\nparams = ["params.toml"]\n']
    mk = [".SUFFIXES:\n", "all: " + " ".join(f"out/c{c}s3.txt" for c in range(4)) + "\n"]
    for x in (d, mk_dir):
        os.makedirs(os.path.join(x, "src"))
        os.makedirs(os.path.join(x, "data"))
        write(os.path.join(x, "params.toml"),
              "".join(f"[c{c}]\nn = {c}\n" for c in range(4)))
        for c in range(4):
            write(os.path.join(x, "data", f"raw{c}.txt"), f"raw {c}\n" * 100)
            for s in range(4):
                write(os.path.join(x, "src", f"step{s}.sh"), f"# step {s}\ncat \"$@\"\n")
    for c in range(4):
        for s in range(4):
            dep = f"data/raw{c}.txt" if s == 0 else f"out/c{c}s{s - 1}.txt"
            cmd = f"mkdir -p out && sh src/step{s}.sh {dep} > out/c{c}s{s}.txt"
            ml.append(f"[target.c{c}s{s}]\ncmd = {toml_str(cmd)}\n"
                      f'deps = ["src/step{s}.sh", "{dep}"]\nouts = ["out/c{c}s{s}.txt"]\n'
                      + (f'params = ["c{c}"]\n' if s == 0 else ""))
            mk.append(f"out/c{c}s{s}.txt: src/step{s}.sh {dep}" + (" params.toml" if s == 0
                                                                   else "")
                      + f"\n\t{cmd}\n")
    write(os.path.join(d, "Mlfile"), "\n".join(ml))
    write(os.path.join(mk_dir, "Makefile"), "".join(mk))
    git_init(d, True)
    git_init(mk_dir, True)


def gen_pipe16_dvc(d: str) -> None:
    """The same 16 stages as a dvc.yaml, in a Git repository with `dvc init`."""
    os.makedirs(os.path.join(d, "src"))
    os.makedirs(os.path.join(d, "data"))
    os.makedirs(os.path.join(d, "out"))
    write(os.path.join(d, "params.yaml"), "".join(f"c{c}:\n  n: {c}\n" for c in range(4)))
    lines = ["stages:"]
    for c in range(4):
        write(os.path.join(d, "data", f"raw{c}.txt"), f"raw {c}\n" * 100)
        for s in range(4):
            write(os.path.join(d, "src", f"step{s}.sh"), f"# step {s}\ncat \"$@\"\n")
            dep = f"data/raw{c}.txt" if s == 0 else f"out/c{c}s{s - 1}.txt"
            lines += [f"  c{c}s{s}:", f"    cmd: sh src/step{s}.sh {dep} > out/c{c}s{s}.txt",
                      "    deps:", f"    - src/step{s}.sh", f"    - {dep}",
                      "    outs:", f"    - out/c{c}s{s}.txt"]
            if s == 0:
                lines += ["    params:", f"    - c{c}.n"]
    write(os.path.join(d, "dvc.yaml"), "\n".join(lines) + "\n")
    git_init(d, False)
    subprocess.run(["dvc", "init", "-q"], cwd=d, check=True)


def gen_real(d: str, mk_dir: str, secs: float) -> None:
    """a → b → c → d, each stage sleeping `secs` and writing 2 MiB derived from its input."""
    ml, mk = [], [".SUFFIXES:\n", "all: out/d.bin\n"]
    prev = "data/seed.bin"
    for x in (d, mk_dir):
        os.makedirs(os.path.join(x, "data"))
        with open(os.path.join(x, "data", "seed.bin"), "wb") as fh:
            fh.write(bytes(range(256)) * 8192)
    for name in "abcd":
        out = f"out/{name}.bin"
        cmd = (f"mkdir -p out && sleep {secs:g} && cat {prev} > {out} && "
               f"printf {name} >> {out}")
        ml.append(f"[target.{name}]\ncmd = {toml_str(cmd)}\ndeps = [\"{prev}\"]\n"
                  f'outs = ["{out}"]\n')
        mk.append(f"{out}: {prev}\n\t{cmd}\n")
        prev = out
    write(os.path.join(d, "Mlfile"), "\n".join(ml))
    write(os.path.join(mk_dir, "Makefile"), "".join(mk))
    git_init(d, True)
    git_init(mk_dir, True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"comma-separated scenarios ({', '.join(SCENARIOS)})")
    p.add_argument("--reps", type=int, default=9, help="timed repetitions of each figure")
    p.add_argument("--build-reps", type=int, default=3,
                   help="fresh-fixture builds of trivial and real (median)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (100 trivial targets, 10 x 100 files, 3 reps)")
    p.add_argument("--trivial-targets", type=int, default=None)
    p.add_argument("--many-targets", type=int, default=None)
    p.add_argument("--many-files", type=int, default=None)
    p.add_argument("--stage-sleep", type=float, default=0.2)
    p.add_argument("--mlmake", default=None, metavar="CMD")
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument("--keep", action="store_true", help="keep the fixtures")
    a = p.parse_args(argv)
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    for s in a.only:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r} (choose from {', '.join(SCENARIOS)})")
    sizes = dict(trivial_targets=(1000, 100), many_targets=(100, 10), many_files=(1000, 100))
    for k, (full, quick) in sizes.items():
        if getattr(a, k) is None:
            setattr(a, k, quick if a.quick else full)
    if a.quick:
        a.reps = min(a.reps, 3)
        a.build_reps = 1
    a.mlmake = a.mlmake or default_mlmake()
    return a


if __name__ == "__main__":
    sys.exit(Bench(parse_args()).main())
