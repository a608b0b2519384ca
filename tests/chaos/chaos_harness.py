"""Kill mlmake (SIGKILL to its whole process group) at random instants and check that what it
leaves behind is consistent and that a rerun converges to a clean build's bytes.

Used by tests/chaos/test_chaos.py (a fixed set of seeds, and `--chaos-trials N`) and by
`python tests/chaos/chaos_harness.py N` for long runs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlmake.atomic import TEMP_MARK
from mlmake.hashing import Entry, hash_bytes, hash_file, tree_digest

PY = sys.executable
MLMAKE = [PY, "-m", "mlmake"]
OPS = ("build", "checkout", "pull", "push", "gc", "commit")
BIG_MB = 20

SCRIPTS = {
    "src/big.py": """
        import os, random, sys, time
        n = int(sys.argv[1])
        rng = random.Random(n)
        os.makedirs("data", exist_ok=True)
        with open("data/big.bin", "wb") as fh:
            for _ in range({mb}):
                fh.write(rng.randbytes(1 << 20))
                fh.flush()
    """.replace("{mb}", str(BIG_MB)),
    "src/many.py": """
        import os, sys
        n = int(sys.argv[1])
        os.makedirs("data/many", exist_ok=True)
        for i in range(1000):
            with open(f"data/many/f{i:04}.txt", "w") as fh:
                fh.write(f"{n}-{i}\\n" * 3)
    """,
    "src/feat.py": """
        import hashlib, os, sys, time
        n = int(sys.argv[1])
        h = hashlib.sha256(open("data/big.bin", "rb").read()).hexdigest()
        os.makedirs("feat", exist_ok=True)
        time.sleep(0.1)
        with open("feat/f.txt", "w") as fh:
            fh.write(f"{h} {n} {len(os.listdir('data/many'))}\\n")
    """,
    "src/train.py": """
        import os, sys, time
        k, n = sys.argv[1], sys.argv[2]
        os.makedirs("models", exist_ok=True)
        feat = open("feat/f.txt").read()
        with open(f"models/y-{k}.txt", "w") as fh:
            fh.write(feat)
            fh.flush()
            time.sleep(0.15)
            fh.write(f"k={k} n={n}\\n" * 1000)
    """,
    "src/report.py": """
        import glob, json
        rows = [open(p).read() for p in sorted(glob.glob("models/y-*.txt"))]
        open("report.txt", "w").write("".join(r.splitlines()[-1] + "\\n" for r in rows))
        json.dump({"models": len(rows)}, open("metrics.json", "w"))
    """,
}


def mlfile(remote: str, spaced: bool = False) -> str:
    sp = "  " if spaced else " "  # a cosmetic change for `commit` trials
    return textwrap.dedent(f"""
        [project]
        remote = "team"
        jobs = 2

        [remote.team]
        url = "{remote}"

        [target.big]
        cmd = "{PY}{sp}src/big.py ${{gen.n}}"
        deps = ["src/big.py"]
        params = ["gen"]
        outs = ["data/big.bin"]

        [target.many]
        cmd = "{PY}{sp}src/many.py ${{gen.n}}"
        deps = ["src/many.py"]
        params = ["gen"]
        outs = ["data/many/"]

        [target.feat]
        cmd = "{PY} src/feat.py ${{gen.n}}"
        deps = ["src/feat.py", "data/big.bin", "data/many/"]
        params = ["gen"]
        outs = ["feat/f.txt"]

        [target.train]
        matrix = {{ k = [1, 2, 3] }}
        cmd = "{PY} src/train.py ${{k}} ${{gen.n}}"
        deps = ["src/train.py", "feat/f.txt"]
        params = ["gen"]
        outs = ["models/y-${{k}}.txt"]

        [target.report]
        cmd = "{PY}{sp}src/report.py"
        deps = ["src/report.py", "models/y-1.txt", "models/y-2.txt", "models/y-3.txt"]
        outs = ["report.txt"]
        metrics = ["metrics.json"]
    """)


ALL = ("big", "many", "feat", "train", "report")  # every out materialized, asked for by name
OUTS = ("data/big.bin", "data/many", "feat/f.txt", "models/y-1.txt", "models/y-2.txt",
        "models/y-3.txt", "report.txt", "metrics.json")


def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([*MLMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def git(cwd: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {r.stderr}")
    return r.stdout


def outs_digest(root: Path) -> dict[str, str]:
    """Each out's bytes (directories file by file), as hashes."""
    found: dict[str, str] = {}
    for out in OUTS:
        p = root / out
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    found[str(f.relative_to(root))] = hash_bytes(f.read_bytes())
        elif p.exists():
            found[out] = hash_bytes(p.read_bytes())
    return found


_VERIFIED: dict[str, tuple[int, int, int]] = {}  # path → stat of a copy found intact


def bad_objects(cache: Path) -> list[str]:
    """Cache objects whose content does not match their name (files already found intact
    with the same inode, size and mtime are not read again)."""
    bad = []
    if not cache.is_dir():
        return bad
    for d in cache.iterdir():
        if not d.is_dir() or len(d.name) != 2:
            continue
        for f in d.iterdir():
            oid = d.name + f.name
            if TEMP_MARK in f.name or f.name.endswith(".tmp"):
                continue
            st = f.stat()
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
            if _VERIFIED.get(str(f)) == sig:
                continue
            if oid.endswith(".dir"):
                try:
                    raw = json.loads(f.read_bytes())
                    ok = tree_digest([Entry(p, h, bool(x)) for p, h, x in raw]) == oid[:-4]
                except ValueError:
                    ok = False
            else:
                ok = hash_file(str(f)) == oid
            if not ok:
                bad.append(oid)
            else:
                _VERIFIED[str(f)] = sig
    return bad


def temps(root: Path, *others: Path) -> list[str]:
    """Temporary files anywhere in the repository (its .mlmake/ included) or the remote."""
    found = []
    for top in (root, *others):
        for d, dirs, files in os.walk(top):
            if ".git" in dirs:
                dirs.remove(".git")
            for f in files:
                if TEMP_MARK in f or f.endswith(".tmp") or ".mlmake-" in f:
                    found.append(os.path.join(d, f))
    return found


@dataclass
class Tally:
    """Figures of a chaos run."""

    trials: int = 0
    killed: int = 0  # SIGKILL arrived before the command ended
    mid_write: int = 0  # ... and left the project stale or temp files behind
    wrong: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.trials} trials ({', '.join(f'{k} {v}' for k, v in sorted(self.by_op.items()))}): "
                f"{self.killed} killed mid-command, {self.mid_write} killed mid-write, "
                f"{self.wrong} wrong, {self.seconds:.0f} s")


class Chaos:
    """A project with two committed param sets (A, B), a directory remote, and the clean
    build bytes of each, made in a fresh clone."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "repo"
        self.remote = base / "remote"
        self.root.mkdir(parents=True)
        git(self.root, "init", "-q", "-b", "main")
        for k, v in (("user.email", "t@example.com"), ("user.name", "T"),
                     ("commit.gpgsign", "false")):
            git(self.root, "config", k, v)
        for rel, text in SCRIPTS.items():
            p = self.root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
        (self.root / "Mlfile").write_text(mlfile(str(self.remote)))
        self.revs: dict[str, str] = {}
        self.ref: dict[str, dict[str, str]] = {}
        self.durations: dict[str, float] = {}
        for name, n in (("A", 1), ("B", 2)):
            (self.root / "params.toml").write_text(f"[gen]\nn = {n}\n")
            t0 = time.monotonic()
            r = run(self.root, "--no-remote")
            self.durations["build"] = time.monotonic() - t0
            assert r.returncode == 0, r.stdout + r.stderr
            assert run(self.root, "push").returncode == 0
            git(self.root, "add", "-A")
            git(self.root, "commit", "-q", "-m", f"params {name}")
            self.revs[name] = git(self.root, "rev-parse", "HEAD").strip()
        for name, rev in self.revs.items():
            clean = base / f"clean-{name}"
            git(base, "clone", "-q", str(self.root), str(clean))
            git(clean, "checkout", "-q", rev)
            r = run(clean, "--no-remote")
            assert r.returncode == 0, r.stdout + r.stderr
            self.ref[name] = outs_digest(clean)
            shutil.rmtree(clean)
        assert self.ref["A"] != self.ref["B"]
        for op in ("checkout", "pull", "push", "gc", "commit"):
            self._prepare(op, "A", random.Random(0))
            t0 = time.monotonic()
            r = run(self.root, *self._args(op, random.Random(0)))
            self.durations[op] = time.monotonic() - t0
            self._converge("A")
        self.calibrated = dict(self.durations)

    # -- one trial ------------------------------------------------------------------------
    def _prepare(self, op: str, rev: str, rng: random.Random) -> None:
        git(self.root, "checkout", "-q", "-f", self.revs[rev])
        state = self.root / ".mlmake"
        if op == "build" and rng.random() < 0.5:
            for sub in ("cache", "runcache"):
                shutil.rmtree(state / sub, ignore_errors=True)
        elif op == "pull":
            shutil.rmtree(state / "cache", ignore_errors=True)
            for out in OUTS:
                p = self.root / out
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        elif op == "push":
            shutil.rmtree(self.remote, ignore_errors=True)
        elif op == "commit":
            (self.root / "Mlfile").write_text(mlfile(str(self.remote), spaced=True))

    def _args(self, op: str, rng: random.Random) -> list[str]:
        if op == "build":
            return rng.choice([["-B", "--no-remote"], ["--no-remote"], [], ["-j", "1", "-B"]])
        return {"checkout": ["checkout"], "pull": ["pull"], "push": ["push"],
                "gc": ["gc"], "commit": ["commit"]}[op]

    def _converge(self, rev: str) -> list[str]:
        """Bring the clone back to `rev` built; returns what was wrong on the way."""
        problems = []
        r = run(self.root, *ALL)
        if r.returncode != 0:
            problems.append(f"rerun exit {r.returncode}: {(r.stdout + r.stderr)[-600:]}")
        if "Traceback" in r.stderr:
            problems.append(f"rerun traceback: {r.stderr[-600:]}")
        if (self.root / "Mlfile").read_text() == mlfile(str(self.remote)):
            return problems
        git(self.root, "checkout", "-q", "-f", self.revs[rev])  # a commit trial's Mlfile
        r = run(self.root, *ALL)
        if r.returncode != 0:
            problems.append(f"second rerun exit {r.returncode}: {(r.stdout + r.stderr)[-600:]}")
        return problems

    def trial(self, seed: int, tally: Tally) -> None:
        rng = random.Random(seed)
        op = rng.choice(OPS)
        rev = rng.choice("AB")
        self._prepare(op, rev, rng)
        args = self._args(op, rng)
        delay = rng.uniform(0.0, self.durations[op] * 1.05)
        env = dict(os.environ)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        p = subprocess.Popen([*MLMAKE, *args], cwd=self.root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(delay)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = p.wait()
        problems: list[str] = []
        tally.trials += 1
        tally.by_op[op] = tally.by_op.get(op, 0) + 1
        killed = code == -signal.SIGKILL
        # follow the machine's load: the window of instants shrinks while commands finish
        # before the kill, and grows back while they are killed mid-way
        self.durations[op] = max(0.3, min(self.calibrated[op] * 2,
                                          self.durations[op] * (1.05 if killed else 0.85)))
        tally.killed += killed
        left = temps(self.root, self.remote)
        st = run(self.root, "status")
        if st.returncode not in (0, 1) or "Traceback" in st.stderr:
            problems.append(f"status after kill: exit {st.returncode}: {st.stderr[-600:]}")
        if killed and (left or st.returncode == 1):
            tally.mid_write += 1
        problems += self._converge(rev)
        st = run(self.root, "status")
        if st.returncode != 0:
            problems.append(f"status after rerun: exit {st.returncode}: {st.stdout[-600:]}")
        got = outs_digest(self.root)
        if got != self.ref[rev]:
            diff = sorted(k for k in set(got) | set(self.ref[rev])
                          if got.get(k) != self.ref[rev].get(k))
            problems.append(f"{len(diff)} files differ from a clean build: {diff[:5]}")
        if op == "push":  # the next push (the next use of the remote) cleans up after it;
            problems += self._check_remote(rev)  # then the remote serves `rev` complete
        bad = bad_objects(self.root / ".mlmake" / "cache") + [
            f"remote:{o}" for o in bad_objects(self.remote / "objects")]
        if bad:
            problems.append(f"corrupt cache objects: {bad[:5]}")
        left = temps(self.root, self.remote)
        if left:
            problems.append(f"temporary files left: {left[:5]}")
        if problems:
            tally.wrong += 1
            tally.failures.append(f"seed {seed} op {op} {' '.join(args)} rev {rev} "
                                  f"delay {delay:.2f}s exit {code}: " + " | ".join(problems))

    def _check_remote(self, rev: str) -> list[str]:
        r = run(self.root, "push")
        if r.returncode != 0:
            return [f"push after rerun: exit {r.returncode}: {r.stderr[-400:]}"]
        other = self.base / "fetch"
        shutil.rmtree(other, ignore_errors=True)
        git(self.base, "clone", "-q", str(self.root), str(other))
        git(other, "checkout", "-q", self.revs[rev])
        r = run(other, "pull")
        out = []
        if r.returncode != 0:
            out.append(f"pull in a fresh clone: exit {r.returncode}: {r.stderr[-400:]}")
        elif outs_digest(other) != self.ref[rev]:
            out.append("a fresh clone's pull differs from a clean build")
        shutil.rmtree(other, ignore_errors=True)
        return out


def main(argv: list[str]) -> int:
    import tempfile

    n = int(argv[1]) if len(argv) > 1 else 500
    first = int(argv[2]) if len(argv) > 2 else 1000
    base = Path(tempfile.mkdtemp(prefix="mlmake-chaos-"))
    t0 = time.monotonic()
    chaos = Chaos(base)
    tally = Tally()
    print(f"setup {time.monotonic() - t0:.1f}s durations "
          + " ".join(f"{k}={v:.2f}" for k, v in chaos.durations.items()), flush=True)
    for seed in range(first, first + n):
        chaos.trial(seed, tally)
        tally.seconds = time.monotonic() - t0
        if tally.trials % 10 == 0 or tally.failures:
            print(tally.line(), flush=True)
        while tally.failures:
            print("WRONG", tally.failures.pop(0), flush=True)
    print("FINAL", tally.line(), flush=True)
    shutil.rmtree(base, ignore_errors=True)
    return 1 if tally.wrong else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
