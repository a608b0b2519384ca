"""Hashing new data: mlmake's content hashing against the rate at which the same files can be
read (`cat FILES > /dev/null`), in the same run.

    python bench/bench_hash.py [--mib 1024] [--files 8]

Writes --files files totalling --mib MiB, then times, median of 3: reading them all with cat,
and hashing the directory with a fresh stat cache (mlmake.hashing.Hasher.tree: xxh3-128,
parallel threads for large data). When /proc/sys/vm/drop_caches is writable the page cache is
dropped before each timing (cold: the disk's rate); otherwise both read from memory.
Goal (SPEC §9): hashing at least 80% of the read rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=8)
    args = ap.parse_args()
    from mlmake.hashing import Hasher, StatCache

    base = tempfile.mkdtemp(prefix="mlmake-bench-hash-")
    data = os.path.join(base, "data")
    os.makedirs(data)
    chunk = os.urandom(1 << 20)
    per = args.mib // args.files
    for i in range(args.files):
        with open(os.path.join(data, f"part-{i:03d}.bin"), "wb") as fh:
            for _ in range(per):
                fh.write(chunk)
    total = per * args.files * (1 << 20)
    files = sorted(os.path.join(data, f) for f in os.listdir(data))
    cold = drop_caches()
    cat_t, hash_t = [], []
    for _ in range(3):
        drop_caches() if cold else None
        t0 = time.perf_counter()
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
        cat_t.append(time.perf_counter() - t0)
        drop_caches() if cold else None
        t0 = time.perf_counter()
        Hasher(base, StatCache(None)).tree("data", manifest=True)
        hash_t.append(time.perf_counter() - t0)
    shutil.rmtree(base, ignore_errors=True)
    cat_rate = total / statistics.median(cat_t) / 2**20
    hash_rate = total / statistics.median(hash_t) / 2**20
    ratio = hash_rate / cat_rate
    print(f"{args.mib} MiB in {args.files} files, page cache {'dropped (cold)' if cold else 'warm'}"
          ", median of 3")
    print(f"  cat (read rate)     {cat_rate:9.0f} MiB/s")
    print(f"  mlmake hashing      {hash_rate:9.0f} MiB/s   {ratio:.0%} of the read rate  "
          f"goal >= 80%  {'PASS' if ratio >= 0.8 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
