#!/usr/bin/env python3
"""Serve benchmark: how fast `mlmake serve` answers triggers of a commit that is already built.

Scenarios (issue 9):

  a  POST /api/endpoints/all/runs → status `succeeded`, for an endpoint of 20 targets all reused
     from the cache (the commit was built from the CLI): each run creates a Git worktree,
     restores the 20 outs from the object store, records the run and removes the worktree.
     Median of R triggers, one at a time. Goal: < 1 s.
  b  100 triggers POSTed back to back, then drained by the queue (--jobs J): total time from
     the first POST to the last run's end, and per run. Every run must execute nothing.

Usage:
    python bench/bench_serve.py [--reps 10] [--queued 100] [--jobs 1] [--json OUT] [--keep]

Standard library only (plus mlmake with its serve dependencies). Exit code: 0 when the goal is
met and every run succeeded without executing a command, 1 when the goal is missed, 2 when a
run failed or executed something.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

TARGETS = 20
GOAL_S = 1.0


def sh(cmd: list[str], cwd: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed ({r.returncode}): {r.stderr or r.stdout}")
    return r.stdout


def make_project(root: str) -> None:
    """20 targets in 4 chains of 5, each writing a small file and a 64 KiB one."""
    os.makedirs(os.path.join(root, "src"))
    lines = []
    for i in range(TARGETS):
        chain, step = divmod(i, 5)
        src = f"out/t{i - 1}.txt" if step else f"src/c{chain}.txt"
        cmd = (f"mkdir -p out && cat {src} > out/t{i}.txt && echo {i} >> out/t{i}.txt && "
               f"head -c 65536 /dev/zero > out/t{i}.bin")
        lines.append(f'[target.t{i}]\ncmd = "{cmd}"\ndeps = ["{src}"]\n'
                     f'outs = ["out/t{i}.txt", "out/t{i}.bin"]\n')
    for c in range(TARGETS // 5):
        with open(os.path.join(root, "src", f"c{c}.txt"), "w") as fh:
            fh.write(f"chain {c}\n")
    names = ", ".join(f'"t{i}"' for i in range(TARGETS))
    lines.append(f"[endpoint.all]\ntargets = [{names}]\n")
    with open(os.path.join(root, "Mlfile"), "w") as fh:
        fh.write("\n".join(lines))


class Service:
    def __init__(self, root: str, jobs: int) -> None:
        env = dict(os.environ)
        env.pop("MLMAKE_SERVE_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "mlmake", "serve", "--port", "0",
                                      "--jobs", str(jobs)], cwd=root, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout],  # type: ignore
                         daemon=True).start()
        deadline = time.monotonic() + 60
        page = ""
        while time.monotonic() < deadline and not page:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    sys.exit(f"mlmake serve exited: {self.proc.stderr.read()}")  # type: ignore
                continue
            if line.startswith("page: "):
                page = line[6:].strip()
        if not page:
            sys.exit("mlmake serve did not start in 60 s")
        self.url, _, frag = page.partition("#")
        self.url = self.url.rstrip("/")
        self.token = frag[len("token="):]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def status(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/runs/{run_id}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_all(svc: Service, ids: list[str], poll: float) -> dict[str, dict[str, Any]]:
    """Poll until every run ended; returns each run's record (status, summary, finished)."""
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 600
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            sys.exit("runs did not end in 600 s")
        for run in svc.call("GET", f"/api/runs?limit={len(ids) + 50}"):
            if run["id"] in ids and run["id"] not in done and \
                    run["status"] not in ("queued", "running"):
                done[run["id"]] = run
        if len(done) < len(ids):
            time.sleep(poll)
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=10, help="triggers timed one by one (a)")
    ap.add_argument("--queued", type=int, default=100, help="triggers queued at once (b)")
    ap.add_argument("--jobs", type=int, default=1, help="`mlmake serve --jobs` (b)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the project and print where")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="mlmake-bench-serve-")
    root = os.path.join(tmp, "repo")
    os.makedirs(root)
    bad: list[str] = []
    try:
        sh(["git", "init", "-q", "-b", "main"], root)
        sh(["git", "config", "user.email", "bench@example.com"], root)
        sh(["git", "config", "user.name", "bench"], root)
        make_project(root)
        sh([sys.executable, "-m", "mlmake", "-j", "2"], root)
        sh(["git", "add", "-A"], root)
        sh(["git", "commit", "-qm", "built"], root)
        svc = Service(root, args.jobs)
        try:
            # a: one at a time, POST → succeeded, polled every 10 ms
            single: list[float] = []
            for _ in range(args.reps + 1):  # the first one warms caches up and is not counted
                t0 = time.perf_counter()
                rid = svc.call("POST", "/api/endpoints/all/runs")["id"]
                while True:
                    run = svc.status(rid)
                    if run["status"] not in ("queued", "running"):
                        break
                    time.sleep(0.01)
                single.append(time.perf_counter() - t0)
                if run["status"] != "succeeded" or run["summary"]["ran"] != 0 or \
                        run["summary"]["reused"] != TARGETS:
                    bad.append(f"run {rid}: {run['status']} {run['summary']}")
            single = single[1:]

            # b: N posted back to back, then drained
            t0 = time.perf_counter()
            ids = [svc.call("POST", "/api/endpoints/all/runs")["id"]
                   for _ in range(args.queued)]
            posted = time.perf_counter() - t0
            runs = wait_all(svc, ids, 0.05)
            total = time.perf_counter() - t0
            for rid, run in runs.items():
                if run["status"] != "succeeded" or run["summary"]["ran"] != 0:
                    bad.append(f"run {rid}: {run['status']} {run['summary']}")
        finally:
            svc.stop()
        leftover = os.listdir(os.path.join(root, ".mlmake", "worktrees"))
        if leftover:
            bad.append(f"worktrees left behind: {leftover}")
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median(single)
    figures = {
        "machine": f"{platform.machine()} · {os.cpu_count()} CPUs · Python "
                   f"{platform.python_version()}",
        "a_targets": TARGETS, "a_reps": len(single), "a_median_s": round(med, 4),
        "a_min_s": round(min(single), 4), "a_max_s": round(max(single), 4),
        "a_goal_s": GOAL_S, "a_pass": med < GOAL_S,
        "b_runs": args.queued, "b_jobs": args.jobs, "b_post_s": round(posted, 3),
        "b_total_s": round(total, 3), "b_per_run_s": round(total / args.queued, 4),
        "b_runs_per_s": round(args.queued / total, 2),
    }
    print(f"machine: {figures['machine']}")
    print(f"a  POST → succeeded, {TARGETS} targets all reused, {len(single)} runs: median "
          f"{med * 1000:.0f} ms (min {min(single) * 1000:.0f}, max {max(single) * 1000:.0f}); "
          f"goal < {GOAL_S * 1000:.0f} ms: {'PASS' if med < GOAL_S else 'MISS'}")
    print(f"b  {args.queued} triggers queued (posted in {posted:.2f} s), drained with --jobs "
          f"{args.jobs} in {total:.2f} s: {total / args.queued * 1000:.0f} ms per run, "
          f"{args.queued / total:.1f} runs/s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    if bad:
        print("problems:\n  " + "\n  ".join(bad[:20]), file=sys.stderr)
        return 2
    return 0 if med < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
