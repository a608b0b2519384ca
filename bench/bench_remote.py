"""Remote cache transfer rate: push and pull of N small files to a local S3 API, next to a
sequential loop of single boto3 uploads and downloads of the same files.

    python bench/bench_remote.py [--files 10000] [--size 512] [--json out.json]

Starts moto's S3 server on 127.0.0.1 in its own process (as a real S3 endpoint would be),
builds a project whose one target writes N files of about --size bytes into one directory
out, then times, against the same server:
  loop put    boto3 put_object of each file, one after the other (the reference)
  push        Project.push(): existence check, upload of what is missing, run-cache entry
  loop get    boto3 get_object of each file into a file, one after the other
  pull        Project.pull() in a fresh `git clone`: download, verify every object's hash,
              store it, and link the N files into the work tree
Goal (issue 4): push and pull each at least 5x the loop's rate (files per second).
Needs moto[server], boto3 and s3fs (pip install 'mlmake[test]').
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BUCKET = "mlmake-bench"
GOAL = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    code = ("import logging, sys, time\n"
            "from moto.server import ThreadedMotoServer\n"
            "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
            f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start()\n"
            "while True: time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError as exc:  # 4xx answers mean it is up
            if getattr(exc, "code", None):
                break
            time.sleep(0.05)
    else:
        proc.kill()
        raise SystemExit("moto's server did not start")
    return proc, url


def rate(n: int, secs: float) -> str:
    return f"{secs:7.2f} s  {n / secs:8.0f} files/s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=512, help="bytes per file (about)")
    ap.add_argument("--jobs", type=int, default=None, help="mlmake's parallel transfers")
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the fixtures")
    args = ap.parse_args()
    try:
        import boto3
    except ImportError:
        raise SystemExit("needs boto3, moto[server] and s3fs: pip install 'mlmake[test]'") \
            from None

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
                      AWS_DEFAULT_REGION="us-east-1")
    server, endpoint = start_server()
    base = tempfile.mkdtemp(prefix="mlmake-bench-remote-")
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        root = os.path.join(base, "a")
        os.makedirs(root)
        git = ["git", "-c", "user.email=b@e", "-c", "user.name=bench", "-c",
               "commit.gpgsign=false"]
        subprocess.run(["git", "init", "-q", "-b", "main", root], check=True)
        n, size = args.files, args.size
        with open(os.path.join(root, "gen.py"), "w") as fh:
            fh.write("import os, sys\n"
                     "n, size = int(sys.argv[1]), int(sys.argv[2])\n"
                     "for i in range(n):\n"
                     "    d = f'data/d{i // 1000:03d}'\n"
                     "    os.makedirs(d, exist_ok=True)\n"
                     "    line = f'file {i} '.encode()\n"
                     "    open(f'{d}/f{i:05d}.bin', 'wb').write((line * (size // len(line)"
                     " + 1))[:size])\n")
        with open(os.path.join(root, "Mlfile"), "w") as fh:
            fh.write(f'[project]\nremote = "s3"\n\n[remote.s3]\nurl = "s3://{BUCKET}/cache"\n'
                     f'options = {{ endpoint_url = "{endpoint}" }}\n\n'
                     f'[target.gen]\ncmd = "python gen.py {n} {size}"\ndeps = ["gen.py"]\n'
                     'outs = ["data/"]\n')
        subprocess.run([sys.executable, "-m", "mlmake", "-C", root, "-q", "--no-remote"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*git, "-C", root, "add", "-A"], check=True)
        subprocess.run([*git, "-C", root, "commit", "-q", "-m", "data"], check=True)
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "data"))
                       for f in fs)
        total = sum(os.path.getsize(f) for f in files)
        print(f"{len(files)} files, {total / 1e6:.1f} MB, S3 API: moto server on loopback "
              f"(own process); {os.cpu_count()} CPUs")

        from mlmake.project import Project

        # reference: one request per file, one after the other
        t0 = time.perf_counter()
        for i, path in enumerate(files):
            with open(path, "rb") as fh:
                client.put_object(Bucket=BUCKET, Key=f"loop/{i:05d}", Body=fh.read())
        loop_put = time.perf_counter() - t0
        out_dir = os.path.join(base, "loop-get")
        os.makedirs(out_dir)
        t0 = time.perf_counter()
        for i in range(len(files)):
            body = client.get_object(Bucket=BUCKET, Key=f"loop/{i:05d}")["Body"].read()
            with open(os.path.join(out_dir, f"{i:05d}"), "wb") as fh:
                fh.write(body)
        loop_get = time.perf_counter() - t0

        t0 = time.perf_counter()
        res = Project(root).push(jobs=args.jobs)
        push = time.perf_counter() - t0
        assert res.pushed == len(files) + 1 and not res.missing, res  # + the manifest

        clone = os.path.join(base, "b")
        subprocess.run(["git", "clone", "-q", root, clone], check=True)
        t0 = time.perf_counter()
        got = Project(clone).pull(jobs=args.jobs)
        pull = time.perf_counter() - t0
        assert got.fetched == len(files) and not got.missing, got
        for a in files[:: max(1, len(files) // 200)]:  # spot-check the linked bytes
            with open(a, "rb") as x, open(clone + a[len(root):], "rb") as y:
                assert x.read() == y.read(), a

        up, down = loop_put / push, loop_get / pull
        print(f"  loop put  {rate(len(files), loop_put)}")
        print(f"  push      {rate(len(files), push)}   {up:5.1f}x the loop")
        print(f"  loop get  {rate(len(files), loop_get)}")
        print(f"  pull      {rate(len(files), pull)}   {down:5.1f}x the loop"
              "  (fetch + verify + link)")
        ok = up >= GOAL and down >= GOAL
        print(f"goal: push and pull at least {GOAL:.0f}x the loop: {'PASS' if ok else 'MISS'}")
        if args.json_out:
            with open(args.json_out, "w") as fh:
                json.dump({"files": len(files), "bytes": total, "loop_put_s": loop_put,
                           "push_s": push, "loop_get_s": loop_get, "pull_s": pull,
                           "push_ratio": up, "pull_ratio": down, "pass": ok}, fh, indent=2)
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait()
        if args.keep:
            print(f"fixtures kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
