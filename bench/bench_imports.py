"""The no-op check with import tracking on and off, next to `make -q` and `python -c pass`.

    python bench/bench_imports.py [--targets 100] [--modules 20] [--repeat 7]

A project of N targets, each `python src/step_i.py`, all importing one helper package of M
modules (a chain of imports inside it). The same project is checked twice, with
`[project] track_imports` true and false, by a no-op `mlmake status` (median of --repeat
after one warm-up); `make -q` on an equivalent Makefile that lists the scripts and the
helper modules as prerequisites is the reference, and `python -c pass` the start-up floor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str], cwd: str, expect: int = 0) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != expect:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()[-400:]}")
    return dt


def median(cmd: list[str], cwd: str, repeat: int, full: bool = False) -> float:
    """Median wall time; `full`: the no-op file is removed first, so the full check runs."""
    noop = os.path.join(cwd, ".mlmake", "noop")

    def once() -> float:
        if full and os.path.exists(noop):
            os.unlink(noop)
        return timed(cmd, cwd)
    once()
    return statistics.median(once() for _ in range(repeat))


def make_project(root: str, targets: int, modules: int, track: bool) -> None:
    os.makedirs(os.path.join(root, "src", "helpers"))
    subprocess.run(["git", "init", "-q", root], check=True)
    h = os.path.join(root, "src", "helpers")
    open(os.path.join(h, "__init__.py"), "w").write("from . import m0\n")
    for j in range(modules):
        nxt = f"from . import m{j + 1}\n" if j + 1 < modules else ""
        open(os.path.join(h, f"m{j}.py"), "w").write(f"{nxt}V{j} = {j}\n")
    lines = [f"[project]\ntrack_imports = {'true' if track else 'false'}\n"]
    mk = [".SUFFIXES:\n", "all: " + " ".join(f"out/s{i}.txt" for i in range(targets)) + "\n"]
    helpers = " ".join(f"src/helpers/m{j}.py" for j in range(modules))
    for i in range(targets):
        open(os.path.join(root, "src", f"step_{i}.py"), "w").write(
            f"import helpers\nprint({i}, helpers.m0.V0)\n")
        lines.append(f'[target.s{i}]\ncmd = "mkdir -p out && python src/step_{i}.py > '
                     f'out/s{i}.txt"\ndeps = ["src/step_{i}.py"]\nouts = ["out/s{i}.txt"]\n')
        mk.append(f"out/s{i}.txt: src/step_{i}.py src/helpers/__init__.py {helpers}\n"
                  f"\tmkdir -p out && python src/step_{i}.py > $@\n")
    open(os.path.join(root, "Mlfile"), "w").write("\n".join(lines))
    open(os.path.join(root, "Makefile"), "w").write("".join(mk))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--modules", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="mlmake-bench-imports-")
    figures: dict[str, float] = {}
    try:
        mlmake = [sys.executable, "-m", "mlmake"]
        for track in (True, False):
            root = os.path.join(base, "on" if track else "off")
            make_project(root, args.targets, args.modules, track)
            subprocess.run([*mlmake, "-q", "-j", "2"], cwd=root, check=True,
                           stdout=subprocess.DEVNULL)
            figures["status_on" if track else "status_off"] = median(
                [*mlmake, "status"], root, args.repeat, full=True)
            if track:
                time.sleep(2.1)  # the no-op file trusts no file younger than 2 s
                figures["status_noop"] = median([*mlmake, "status"], root, args.repeat)
        subprocess.run(["make", "-s", "-j2"], cwd=os.path.join(base, "on"), check=True,
                       stdout=subprocess.DEVNULL)
        figures["make_q"] = median(["make", "-q"], os.path.join(base, "on"), args.repeat)
        figures["python_pass"] = median([sys.executable, "-c", "pass"], base, args.repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    on, off, mq = figures["status_on"], figures["status_off"], figures["make_q"]
    print(f"{args.targets} targets importing a {args.modules}-module helper package, no-op check:")
    print(f"  python -c pass          {figures['python_pass'] * 1000:7.1f} ms")
    print(f"  make -q                 {mq * 1000:7.1f} ms")
    print(f"  mlmake status, imports  {on * 1000:7.1f} ms  ({on / mq:.2f}x make -q)")
    print(f"  mlmake status, no imp.  {off * 1000:7.1f} ms  ({off / mq:.2f}x make -q)")
    print(f"  import tracking costs   {(on - off) * 1000:+7.1f} ms ({on / off:.2f}x)")
    nq = figures["status_noop"]
    print(f"  mlmake status, answered from .mlmake/noop {nq * 1000:7.1f} ms  "
          f"({nq / mq:.2f}x make -q, {nq / figures['python_pass']:.2f}x python -c pass)")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
