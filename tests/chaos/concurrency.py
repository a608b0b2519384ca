"""Concurrent mlmake processes on shared state: two runs in one project, two clones pushing
to one remote (a directory, an S3 bucket), gc during a build. Each round checks for corrupt
objects and lost lock entries.

`python tests/chaos/concurrency.py ROUNDS` runs every scenario ROUNDS times (an S3 API
server from moto on loopback for the bucket) and prints the figures;
tests/chaos/test_concurrency.py runs a few rounds in the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from chaos_harness import MLMAKE, PY, bad_objects, git, run, temps  # noqa: E402

SCRIPT = """
    import os, sys
    n, tag = sys.argv[1], sys.argv[2]
    os.makedirs(f"out/{tag}", exist_ok=True)
    for i in range(50):
        open(f"out/{tag}/f{i:03}.txt", "w").write(f"{n} {tag} {i}\\n")
    open(f"{tag}.bin", "wb").write((f"{n}{tag}" * 200000).encode()[:500_000])
"""


def mlfile(remote_toml: str) -> str:
    targets = "".join(textwrap.dedent(f"""
        [target.{t}]
        cmd = "{PY} gen.py ${{p.n}} {t}"
        deps = ["gen.py"]
        params = ["p"]
        outs = ["out/{t}/", "{t}.bin"]
    """) for t in ("a", "b", "c", "d"))
    return (f'[project]\nremote = "team"\n\n[remote.team]\n{remote_toml}\n' + targets
            + textwrap.dedent("""
        [target.all]
        cmd = "cat a.bin b.bin c.bin d.bin | wc -c > all.txt"
        deps = ["a.bin", "b.bin", "c.bin", "d.bin"]
        outs = ["all.txt"]
    """))


def make_repo(path: Path, remote_toml: str, n: int) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for k, v in (("user.email", "t@example.com"), ("user.name", "T"),
                 ("commit.gpgsign", "false")):
        git(path, "config", k, v)
    (path / "gen.py").write_text(textwrap.dedent(SCRIPT))
    (path / "Mlfile").write_text(mlfile(remote_toml))
    (path / "params.toml").write_text(f"[p]\nn = {n}\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "pipeline")
    return path


def spawn(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = dict(os.environ)
    full.pop("CUDA_VISIBLE_DEVICES", None)
    full.update(env or {})
    return subprocess.Popen([*MLMAKE, *args], cwd=cwd, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def lock_entries(repo: Path) -> set[str]:
    try:
        return set(json.loads((repo / "Mlfile.lock").read_text())["targets"])
    except (OSError, ValueError, KeyError):
        return set()


ALL = {"a", "b", "c", "d", "all"}


def round_two_runs(base: Path, i: int) -> list[str]:
    """Two `mlmake -B` at once in one project: the second waits; every entry recorded."""
    repo = make_repo(base / f"two-{i}", 'url = "/nonexistent-remote"', i)
    p1 = spawn(repo, "--no-remote", "-B")
    time.sleep(0.05 * (i % 7))
    p2 = spawn(repo, "--no-remote", "-B")
    problems = []
    for p in (p1, p2):
        out, err = p.communicate(timeout=300)
        if p.returncode != 0:
            problems.append(f"exit {p.returncode}: {err[-300:]}")
    lost = ALL - lock_entries(repo)
    if lost:
        problems.append(f"lost lock entries: {sorted(lost)}")
    bad = bad_objects(repo / ".mlmake" / "cache")
    if bad:
        problems.append(f"corrupt objects: {bad}")
    if run(repo, "status").returncode != 0:
        problems.append("stale after both runs")
    shutil.rmtree(repo)
    return problems


def round_two_pushes(base: Path, i: int, remote_toml: str, remote_dir: Path | None
                     ) -> list[str]:
    """Two clones (different params, shared objects) push to one remote at once; fresh
    clones of each then pull every out intact."""
    a = make_repo(base / f"push-a-{i}", remote_toml, 1000 + i)
    b = base / f"push-b-{i}"
    git(base, "clone", "-q", str(a), str(b))
    for k, v in (("user.email", "t@example.com"), ("user.name", "T"),
                 ("commit.gpgsign", "false")):
        git(b, "config", k, v)
    (b / "params.toml").write_text(f"[p]\nn = {2000 + i}\n")
    git(b, "commit", "-q", "-am", "other params")
    problems = []
    for repo in (a, b):
        r = run(repo, "--no-remote")
        if r.returncode != 0:
            problems.append(f"build: {r.stderr[-300:]}")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "lock")
    ps = [spawn(a, "push"), spawn(b, "push")]
    for p in ps:
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            problems.append(f"push exit {p.returncode}: {err[-300:]}")
    for src in (a, b):
        fresh = base / f"fresh-{i}-{src.name}"
        git(base, "clone", "-q", str(src), str(fresh))
        r = run(fresh, "pull")
        if r.returncode != 0:
            problems.append(f"pull of {src.name}: {r.stderr[-300:]}")
        else:
            st = run(fresh, "status")
            if st.returncode != 0 or (fresh / "a.bin").read_bytes() != (
                    src / "a.bin").read_bytes():
                problems.append(f"pull of {src.name} is incomplete or differs: "
                                f"{r.stdout[-200:]} {r.stderr[-200:]} {st.stdout[-300:]}")
        shutil.rmtree(fresh)
    if remote_dir is not None:
        bad = bad_objects(remote_dir / "objects")
        if bad:
            problems.append(f"corrupt remote objects: {bad}")
        left = temps(remote_dir)
        if left:
            problems.append(f"temporary files on the remote: {left[:3]}")
    shutil.rmtree(a)
    shutil.rmtree(b)
    return problems


def round_gc_during_build(base: Path, i: int) -> list[str]:
    """`gc` started while a build runs: it waits for the project; nothing the lock needs is
    removed."""
    repo = make_repo(base / f"gc-{i}", 'url = "/nonexistent-remote"', i)
    assert run(repo, "--no-remote").returncode == 0
    (repo / "params.toml").write_text(f"[p]\nn = {i + 500}\n")
    p1 = spawn(repo, "--no-remote")
    time.sleep(0.03 * (i % 10))
    p2 = spawn(repo, "gc")
    problems = []
    for p in (p1, p2):
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            problems.append(f"exit {p.returncode}: {err[-300:]}")
    lost = ALL - lock_entries(repo)
    if lost:
        problems.append(f"lost lock entries: {sorted(lost)}")
    bad = bad_objects(repo / ".mlmake" / "cache")
    if bad:
        problems.append(f"corrupt objects: {bad}")
    shutil.rmtree(repo / "out")
    for t in ("a", "b", "c", "d"):
        (repo / f"{t}.bin").unlink()
    r = run(repo, "checkout")  # every object the lock names is still in the cache
    if r.returncode != 0 or run(repo, "status").returncode != 0:
        problems.append(f"after gc the lock's objects are missing: {r.stderr[-300:]}")
    shutil.rmtree(repo)
    return problems


ENDPOINTS = """
[endpoint.left]
targets = ["a", "all"]

[endpoint.right]
targets = ["b", "all"]
"""


def round_serve_and_cli(base: Path, i: int) -> list[str]:
    """Two endpoints sharing targets built as `mlmake serve` does (threads, worktrees
    sharing the cache) while the user runs `mlmake` in the work tree with other params."""
    import threading

    from mlmake import Project

    repo = make_repo(base / f"serve-{i}", 'url = "/nonexistent-remote"', 3000 + i)
    with open(repo / "Mlfile", "a") as fh:
        fh.write(ENDPOINTS)
    git(repo, "commit", "-q", "-am", "endpoints")
    (repo / "params.toml").write_text(f"[p]\nn = {4000 + i}\n")  # the user's edit
    project = Project(str(repo))
    ids: dict[str, str] = {}
    errors: list[str] = []

    def trigger(name: str) -> None:
        try:
            ids[name] = project.trigger(name)
        except Exception as exc:  # noqa: BLE001 - reported as a problem of the round
            errors.append(f"trigger {name}: {exc!r}")

    threads = [threading.Thread(target=trigger, args=(n,)) for n in ("left", "right")]
    user = spawn(repo, "--no-remote")
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    _, err = user.communicate(timeout=300)
    problems = list(errors)
    if user.returncode != 0:
        problems.append(f"the user's run: exit {user.returncode}: {err[-300:]}")
    for name, build in ids.items():
        rec = project.runs_store.build(build)
        if rec is None or rec["status"] != "succeeded":
            why = [f"{r.target} {r.outcome}: {r.message}"
                   for r in project.runs_store.runs(build=build) if r.outcome == "failed"]
            why.append(json.dumps(rec and rec.get("summary")))
            why.append(str(rec and rec.get("message")))
            problems.append(f"endpoint {name}: {rec and rec['status']} {why}")
    lost = ALL - lock_entries(repo)
    if lost:
        problems.append(f"lost lock entries: {sorted(lost)}")
    bad = bad_objects(repo / ".mlmake" / "cache")
    if bad:
        problems.append(f"corrupt objects: {bad}")
    st = run(repo, "status")
    if st.returncode != 0:
        problems.append(f"the work tree is stale: {st.stdout[-300:]}")
    if git(repo, "status", "--porcelain", "--", "params.toml").strip() != "M params.toml":
        problems.append("the user's params edit was touched")
    shutil.rmtree(repo)
    return problems


def moto() -> tuple[Any, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def s3_toml(endpoint: str, bucket: str) -> str:
    return (f'url = "s3://{bucket}/cache"\n'
            f'options = {{ endpoint_url = "{endpoint}" }}\n')


def main(argv: list[str]) -> int:
    import tempfile

    import boto3

    rounds = int(argv[1]) if len(argv) > 1 else 50
    base = Path(tempfile.mkdtemp(prefix="mlmake-conc-"))
    os.environ.update({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    server, endpoint = moto()
    client = boto3.client("s3", endpoint_url=endpoint)
    wrong = 0
    try:
        names = [n for n in ("two runs", "dir pushes", "s3 pushes", "gc during build",
                             "serve and cli")
                 if len(argv) < 3 or n.startswith(argv[2])]
        for name in names:
            t0, failed = time.monotonic(), 0
            for i in range(rounds):
                if name == "two runs":
                    problems = round_two_runs(base, i)
                elif name == "dir pushes":
                    remote = base / f"remote-{i}"
                    problems = round_two_pushes(base, i, f'url = "{remote}"\n', remote)
                    shutil.rmtree(remote, ignore_errors=True)
                elif name == "s3 pushes":
                    bucket = f"conc-{i}"
                    client.create_bucket(Bucket=bucket)
                    problems = round_two_pushes(base, i, s3_toml(endpoint, bucket), None)
                elif name == "gc during build":
                    problems = round_gc_during_build(base, i)
                else:
                    problems = round_serve_and_cli(base, i)
                if problems:
                    failed += 1
                    print(f"WRONG {name} round {i}: {' | '.join(problems)}", flush=True)
                if (i + 1) % 10 == 0:
                    print(f"  {name}: {i + 1} rounds, {failed} wrong, "
                          f"{time.monotonic() - t0:.0f} s", flush=True)
            wrong += failed
            print(f"{name}: {rounds} rounds, {failed} wrong, {time.monotonic() - t0:.0f} s",
                  flush=True)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
