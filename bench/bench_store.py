"""Restore speed: link a cached output of N files back into the work tree, next to `cp -al`.

    python bench/bench_store.py [--files 10000] [--repeat 5]

Builds a project whose one target writes N small files, then times, median of --repeat:
  cp -al      hard-link copy of the same tree (the reference);
  restore     mlmake's Store.restore of that out (in-process: verification + links);
  checkout    `mlmake checkout` end to end (a fresh process: start-up, lock, hashing).
Goal (SPEC §9): restore at most 2x cp -al.
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


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="mlmake-bench-store-")
    root = os.path.join(base, "proj")
    os.makedirs(root)
    subprocess.run(["git", "init", "-q", root], check=True)
    n = args.files
    gen = os.path.join(root, "gen.py")
    with open(gen, "w") as fh:
        fh.write("import os, sys\n"
                 "n = int(sys.argv[1])\n"
                 "for i in range(n):\n"
                 "    d = f'tree/d{i // 500:03d}'\n"
                 "    os.makedirs(d, exist_ok=True)\n"
                 "    open(f'{d}/f{i:05d}.txt', 'w').write(f'file {i}\\n' * 8)\n")
    with open(os.path.join(root, "Mlfile"), "w") as fh:
        fh.write(f'[target.gen]\ncmd = "python gen.py {n}"\ndeps = ["gen.py"]\n'
                 'outs = ["tree/"]\n')
    mlmake = [sys.executable, "-m", "mlmake", "-C", root]
    subprocess.run([*mlmake, "-q"], check=True, stdout=subprocess.DEVNULL)
    tree = os.path.join(root, "tree")

    from mlmake.lockfile import Lock
    from mlmake.project import Project

    rec = Lock.read(os.path.join(root, "Mlfile.lock")).entries["gen"].outs["tree"]

    cp_times, restore_times, checkout_times = [], [], []
    for _ in range(args.repeat):
        dest = os.path.join(base, "cp-copy")
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["sync"])
        cp_times.append(timed(lambda dest=dest: subprocess.run(["cp", "-al", tree, dest],
                                                               check=True)))

        shutil.rmtree(tree)
        store = Project(root).store()
        restore_times.append(timed(lambda store=store: store.restore("tree", rec)))
        store.stats.save()

        shutil.rmtree(tree)
        checkout_times.append(timed(lambda: subprocess.run([*mlmake, "-q", "checkout"],
                                                           check=True,
                                                           stdout=subprocess.DEVNULL)))
    assert len(os.listdir(os.path.join(tree, "d000"))) == min(n, 500)
    cp = statistics.median(cp_times)
    rs = statistics.median(restore_times)
    co = statistics.median(checkout_times)
    rows = [("cp -al (reference)", cp, 1.0, ""),
            ("mlmake restore (Store.restore)", rs, rs / cp, "PASS" if rs / cp <= 2 else "MISS"),
            ("mlmake checkout (whole CLI)", co, co / cp, "")]
    print(f"restore a cached output of {n} files, median of {args.repeat}")
    print(f"{'':34} {'seconds':>9} {'ratio':>7}  goal ≤ 2x")
    for name, t, ratio, verdict in rows:
        print(f"{name:34} {t:9.3f} {ratio:6.2f}x  {verdict}")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"files": n, "cp_al": cp, "restore": rs, "checkout": co}, fh, indent=2)
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
