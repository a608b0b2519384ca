"""Ray executor overhead: N trivial targets under Ray next to the local executor, and
8 × `sleep 1` on a two-node local cluster.

    python bench/bench_ray.py [--targets 200]

Starts a Ray cluster on this machine (ray.cluster_utils.Cluster: two nodes), then in fresh
Git repositories times full builds with `mlmake --executor ray --address ADDR` and with the
local executor, and prints per-target overhead and the sleep scenario's wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def project(base: str, name: str, targets: dict[str, str]) -> str:
    root = os.path.join(base, name)
    os.makedirs(root)
    subprocess.run(["git", "init", "-q", root], check=True)
    with open(os.path.join(root, "Mlfile"), "w") as fh:
        for t, cmd in targets.items():
            fh.write(f'[target.{t}]\ncmd = "{cmd}"\nouts = ["out/{t}.txt"]\n\n')
    return root


def build(root: str, *args: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mlmake", "-C", root, "-q", *args],
                       capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"mlmake failed in {root}: {r.stderr}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=200)
    args = ap.parse_args()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 80 * 2**20, "include_dashboard": False})
    cluster.add_node(num_cpus=2, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    addr = cluster.address
    base = tempfile.mkdtemp(prefix="mlmake-bench-ray-")
    n = args.targets
    trivial = {f"t{i}": f"mkdir -p out && echo {i} > out/t{i}.txt" for i in range(n)}
    sleepy = {f"s{i}": f"sleep 1 && mkdir -p out && echo {i} > out/s{i}.txt" for i in range(8)}
    try:
        empty = project(base, "empty", {"e": "mkdir -p out && echo > out/e.txt"})
        build(empty, "--executor", "ray", "--address", addr)  # warm the cluster's workers
        local_fixed = build(project(base, "local1", {"e": "mkdir -p out && echo > out/e.txt"}),
                            "-j", "2")
        ray_fixed = build(project(base, "ray1", {"e": "mkdir -p out && echo > out/e.txt"}),
                          "--executor", "ray", "--address", addr)
        local = build(project(base, "local", trivial), "-j", "2")
        ray_t = build(project(base, "ray", trivial), "--executor", "ray", "--address", addr,
                      "-j", "4")
        sleep_ray = build(project(base, "sleep", sleepy), "--executor", "ray", "--address",
                          addr, "-j", "8")
        sleep_local = build(project(base, "sleepl", sleepy), "-j", "2")
    finally:
        cluster.shutdown()
    per_local = (local - local_fixed) / n * 1000
    per_ray = (ray_t - ray_fixed) / n * 1000
    print(f"{n} trivial targets (full build, per-target cost excludes start-up):")
    print(f"  local -j2          {local:7.2f} s   {per_local:6.1f} ms/target  (start-up "
          f"{local_fixed:.2f} s)")
    print(f"  ray (2 nodes) -j4  {ray_t:7.2f} s   {per_ray:6.1f} ms/target  (start-up "
          f"{ray_fixed:.2f} s)")
    print(f"  Ray adds {per_ray - per_local:.1f} ms per target")
    print("8 x sleep 1:")
    print(f"  ray, 2 nodes x 2 CPUs, -j8   {sleep_ray:6.2f} s (ideal 2 s + start-up)")
    print(f"  local -j2 (2 cores)          {sleep_local:6.2f} s (ideal 4 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
