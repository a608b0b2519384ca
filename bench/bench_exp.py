#!/usr/bin/env python3
"""Experiments benchmark: a 2×2 sweep run one at a time and two at a time (issue 20).

The project has a shared upstream target `prepare` (sleeps S seconds, no params) and per
experiment `train` (sleeps S seconds, uses train.lr and train.n) and `evaluate`. The sweep
`-S train.lr=0.01,0.1 -S train.n=10,100` is queued and started with `exp start -j 1`, then on
a fresh copy with `-j 2`. `prepare`'s key is the same for all four, so it is built once (the
first experiment builds it, the others wait on its key and reuse it); with -j 2 the four
`train` runs go two at a time, so the wall time approaches half of the serial one on that
critical path. Reported: wall time of each, the ratio, and how many times `prepare` ran.

Usage:
    python bench/bench_exp.py [--sleep 2] [--json OUT] [--keep]

Standard library only (plus git and mlmake). Exit code 0 when every experiment succeeded and
`prepare` ran once per sweep; 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MLFILE = """
[target.prepare]
cmd = "sleep {s} && mkdir -p build && cat data/raw.txt > build/prepared.txt"
deps = ["data/raw.txt"]
outs = ["build/prepared.txt"]

[target.train]
cmd = "sleep {s} && echo lr=${{train.lr}} n=${{train.n}} > model.txt && cat build/prepared.txt >> model.txt"
deps = ["build/prepared.txt"]
params = ["train.lr", "train.n"]
outs = ["model.txt"]

[target.evaluate]
cmd = "mkdir -p metrics && wc -c < model.txt | sed 's/.*/{{\\"chars\\": &}}/' > metrics/eval.json"
deps = ["model.txt"]
metrics = ["metrics/eval.json"]
"""


def sh(cmd: list[str], cwd: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed ({r.returncode}): {r.stderr or r.stdout}")
    return r.stdout


def make_project(root: str, sleep: float) -> None:
    os.makedirs(os.path.join(root, "data"))
    with open(os.path.join(root, "Mlfile"), "w") as fh:
        fh.write(MLFILE.format(s=sleep))
    with open(os.path.join(root, "params.toml"), "w") as fh:
        fh.write("[train]\nlr = 0.5\nn = 1\n")
    with open(os.path.join(root, "data", "raw.txt"), "w") as fh:
        fh.write("raw\n")
    with open(os.path.join(root, ".gitignore"), "w") as fh:
        fh.write("data/\n")
    for c in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "b@b"],
              ["git", "config", "user.name", "bench"], ["git", "add", "-A"],
              ["git", "commit", "-qm", "bench"]):
        sh(c, root)


def sweep(root: str, jobs: int, mlmake: list[str]) -> dict[str, object]:
    sh([*mlmake, "exp", "run", "--queue", "-S", "train.lr=0.01,0.1", "-S", "train.n=10,100"],
       root)
    t0 = time.monotonic()
    r = subprocess.run([*mlmake, "exp", "start", "-j", str(jobs)], cwd=root,
                       capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    rows = json.loads(sh([*mlmake, "exp", "show", "--json"], root))
    exps = [row for row in rows if row["kind"] == "experiment"]
    runs = json.loads(sh([*mlmake, "runs", "--json", "-n", "1000"], root))
    return {"jobs": jobs, "wall_s": round(wall, 3), "exit": r.returncode,
            "succeeded": sum(e["status"] == "succeeded" for e in exps),
            "prepare_ran": sum(1 for x in runs
                               if x["target"] == "prepare" and x["outcome"] == "ran")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sleep", type=float, default=2.0, help="seconds per prepare/train")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the fixtures")
    a = ap.parse_args()
    mlmake = [sys.executable, "-m", "mlmake"]
    tmp = tempfile.mkdtemp(prefix="bench-exp-")
    results = []
    try:
        for jobs in (1, 2):
            root = os.path.join(tmp, f"j{jobs}")
            make_project(root, a.sleep)
            results.append(sweep(root, jobs, mlmake))
    finally:
        if a.keep:
            print(f"fixtures kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    serial, parallel = results
    ratio = parallel["wall_s"] / serial["wall_s"]  # type: ignore[operator]
    ideal = (a.sleep + 2 * a.sleep) / (a.sleep + 4 * a.sleep)
    for r in results:
        print(f"exp start -j {r['jobs']}: {r['wall_s']:.2f}s, {r['succeeded']}/4 succeeded, "
              f"prepare ran {r['prepare_ran']}x")
    print(f"-j 2 / -j 1 = {ratio:.2f} (ideal on the critical path: {ideal:.2f})")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"results": results, "ratio": ratio, "ideal": ideal}, fh, indent=2)
    ok = all(r["succeeded"] == 4 and r["prepare_ran"] == 1 and r["exit"] == 0
             for r in results)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
