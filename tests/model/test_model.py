"""Model-based test: random pipelines, random sequences of what users do, and an oracle.

Each sequence draws a pipeline (file and directory outs, a glob, a matrix, params, commands
whose output ignores some input changes so early cutoff happens) and a list of operations
(edit, revert, touch, delete an out, edit an out by hand, change or revert a param, commit,
`git checkout` an older commit, a fresh clone that builds from the remote, a build of one
target). After every operation mlmake builds, and the oracle checks that every out of the
closure holds exactly the bytes a clean build would write (computed by a Python model of the
commands), that exactly the targets whose inputs were never built before executed, and that
`status` is then clean. A failure prints the seed; `--model-seed N` replays it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlmake import Project
from mlmake.events import NullReporter

CI_SEEDS = list(range(1, 25))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" not in metafunc.fixturenames:
        return
    config = metafunc.config
    seeds = config.getoption("--model-seed")
    count = config.getoption("--model-sequences")
    if not seeds and count:
        rng = random.SystemRandom()
        seeds = [rng.randrange(1 << 32) for _ in range(count)]
    metafunc.parametrize("seed", seeds or CI_SEEDS)


# -- the pipeline and its Python model ----------------------------------------------------------
FILTERS = {
    "cat": lambda b: b,
    "tr -d x": lambda b: b.replace(b"x", b""),
    "head -n 1": lambda b: b[: b.index(b"\n") + 1] if b"\n" in b else b,
}


@dataclass
class Tgt:
    name: str
    kind: str  # file | dir
    deps: list[str]
    params: list[str]  # listed params
    shown: list[str]  # params echoed into the output (a subset of `params`)
    filt: str
    matrix: list[str] = field(default_factory=list)

    def variants(self) -> list[tuple[str, str | None]]:
        return [(f"{self.name}@{v}", v) for v in self.matrix] or [(self.name, None)]

    def out(self, v: str | None) -> str:
        base = f"out/{self.name}" + (f"-{v}" if v is not None else "")
        return base + ("/" if self.kind == "dir" else ".txt")


class World:
    """The pipeline drawn for a seed, the files of the work tree, and the model's answers."""

    def __init__(self, rng: random.Random, remote: str) -> None:
        self.rng = rng
        self.remote = remote
        self.sources = {f"src/s{i}.txt": self.text() for i in range(rng.randint(2, 3))}
        self.params = {f"k{i}": rng.randint(0, 3) for i in range(rng.randint(1, 3))}
        self.targets: list[Tgt] = []
        for i in range(rng.randint(3, 6)):
            self.targets.append(self.draw(i))

    def text(self) -> str:
        return "".join(self.rng.choice(["a\n", "b\n", "x\n", "ab\n", "xa\n"])
                       for _ in range(self.rng.randint(1, 4)))

    def draw(self, i: int) -> Tgt:
        rng = self.rng
        choices: list[str] = list(self.sources) + ["src/s*.txt"]
        for t in self.targets:
            for _, v in t.variants():
                o = t.out(v)
                choices.append(o.rstrip("/"))
                if t.kind == "dir":
                    choices.append(o + "a.txt")
        deps = sorted(set(rng.sample(choices, k=min(len(choices), rng.randint(1, 2)))))
        keys = list(self.params)
        params = sorted(set(rng.sample(keys, k=rng.randint(0, min(2, len(keys))))))
        shown = [p for p in params if rng.random() < 0.6]
        matrix = ["1", "2"] if rng.random() < 0.25 else []
        return Tgt(f"t{i}", rng.choice(["file", "file", "dir"]), deps, params, shown,
                   rng.choice(list(FILTERS)), matrix)

    # the Mlfile, in TOML
    def mlfile(self) -> str:
        lines = ["[project]", 'remote = "r"', "push = true", "",
                 "[remote.r]", f'url = "{self.remote}"', ""]
        for t in self.targets:
            out = t.out("${v}" if t.matrix else None)
            lines += [f"[target.{t.name}]"]
            if t.matrix:
                lines.append('matrix = { v = ["1", "2"] }')
            lines += [f"cmd = '''{self.cmd(t, out)}'''",
                      f"deps = {_toml_list(t.deps)}",
                      f"params = {_toml_list(['p.' + p for p in t.params])}",
                      f"outs = {_toml_list([out])}", ""]
        return "\n".join(lines)

    def cmd(self, t: Tgt, out: str) -> str:
        reads = []
        for d in t.deps:
            if d.endswith("*.txt"):
                reads.append(f"cat {d}")
            else:
                reads.append(f"if [ -d {d} ]; then cat $(find {d} -type f | sort); "
                             f"else cat {d}; fi")
        shows = [f"echo {p}=${{p.{p}}}" for p in t.shown]
        if t.matrix:
            shows.append("echo v=${v}")
        body = "; ".join(reads + shows)
        if t.kind == "dir":
            return (f"export LC_ALL=C; mkdir -p {out} && {{ {body}; }} | {t.filt} > {out}a.txt "
                    f"&& echo fixed > {out}b.txt")
        return f"export LC_ALL=C; mkdir -p out && {{ {body}; }} | {t.filt} > {out}"

    def params_toml(self) -> str:
        return "[p]\n" + "".join(f"{k} = {v}\n" for k, v in self.params.items())

    def write(self, root: Path) -> None:
        (root / "Mlfile").write_text(self.mlfile())
        (root / "params.toml").write_text(self.params_toml())
        for rel, text in self.sources.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists() or p.read_text() != text:
                p.write_text(text)

    # the model of a clean build
    def expected(self) -> tuple[dict[str, bytes], dict[str, Any]]:
        """Out file → bytes, and variant → fingerprint of what its command reads."""
        files: dict[str, bytes] = {}
        prints: dict[str, Any] = {}
        for t in self.targets:
            for name, v in t.variants():
                data = b"".join(self.read(d, files) for d in t.deps)
                data += b"".join(f"{p}={self.params[p]}\n".encode() for p in t.shown)
                if v is not None:
                    data += f"v={v}\n".encode()
                result = FILTERS[t.filt](data)
                out = t.out(v)
                if t.kind == "dir":
                    files[out + "a.txt"] = result
                    files[out + "b.txt"] = b"fixed\n"
                else:
                    files[out] = result
                prints[name] = (tuple(self.read(d, files) for d in t.deps),
                                tuple(self.params[p] for p in t.params))
        return files, prints

    def read(self, dep: str, files: dict[str, bytes]) -> bytes:
        if dep.endswith("*.txt"):
            return b"".join(self.sources[s].encode() for s in sorted(self.sources))
        if dep in self.sources:
            return self.sources[dep].encode()
        if dep in files:
            return files[dep]
        inside = sorted(k for k in files if k.startswith(dep + "/"))
        return b"".join(files[k] for k in inside)

    def closure(self, name: str) -> set[str]:
        """Variant names of `name` and everything upstream of it."""
        producers = {}
        for t in self.targets:
            for n, v in t.variants():
                producers[n] = (t, v)
        want = {n for n in producers if n == name or n.split("@")[0] == name}
        todo = list(want)
        while todo:
            t, v = producers[todo.pop()]
            for d in t.deps:
                for n, (u, uv) in producers.items():
                    o = u.out(uv).rstrip("/")
                    if n not in want and (d == o or d.startswith(o + "/")):
                        want.add(n)
                        todo.append(n)
        return want

    def out_files(self, names: set[str]) -> set[str]:
        files: set[str] = set()
        for t in self.targets:
            for n, v in t.variants():
                if n in names:
                    o = t.out(v)
                    files |= {o + "a.txt", o + "b.txt"} if t.kind == "dir" else {o}
        return files


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


# -- driving it ---------------------------------------------------------------------------------
def git(root: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, f"git {' '.join(args)}: {r.stderr}"
    return r.stdout


class Sequence:
    def __init__(self, seed: int, base: Path) -> None:
        self.rng = random.Random(seed)
        self.base = base
        self.remote = base / "remote"
        self.remote.mkdir()
        self.world = World(self.rng, str(self.remote))
        self.root = base / "w0"
        self.clones = 0
        self.root.mkdir()
        git(self.root, "init", "-q", "-b", "main")
        for k, v in (("user.email", "m@example.com"), ("user.name", "M"),
                     ("commit.gpgsign", "false")):
            git(self.root, "config", k, v)
        self.world.write(self.root)
        self.built: set[tuple[str, Any]] = set()
        self.history: list[tuple[dict[str, str], dict[str, int]]] = []
        self.commits: list[tuple[str, dict[str, str], dict[str, int]]] = []
        self.log: list[str] = []

    # one build and the oracle's verdict on it
    def build(self, target: str | None = None) -> None:
        w = self.world
        files, prints = w.expected()
        names = w.closure(target) if target else set(prints)
        expect_ran = {n for n in names if (n, prints[n]) not in self.built}
        result = Project(str(self.root)).run([target] if target else [],
                                             reporter=NullReporter())
        ran = {n for n, o in result.outcomes.items() if o.status == "ran"}
        assert result.ok, self.why(f"build failed: {result.outcomes}")
        assert ran == expect_ran, self.why(f"executed {sorted(ran)}, expected "
                                           f"{sorted(expect_ran)}")
        for rel in sorted(w.out_files(names)):
            p = self.root / rel
            assert p.exists(), self.why(f"{rel} is missing after the build")
            assert p.read_bytes() == files[rel], self.why(
                f"{rel} holds {p.read_bytes()!r}, a clean build writes {files[rel]!r}")
        self.built |= {(n, prints[n]) for n in names}
        plan = Project(str(self.root)).status([target] if target else [])
        assert not plan.stale, self.why(f"status after the build: {plan.stale} stale: " + str(
            {n: [r.describe() for r in plan.states[n].reasons] for n in plan.stale}))

    def why(self, msg: str) -> str:
        return msg + "\n  steps: " + " | ".join(self.log) + "\n  Mlfile:\n" + \
            self.world.mlfile()

    # what users do
    def step(self) -> None:
        w, rng = self.world, self.rng
        op = rng.choice(["edit", "edit", "cutoff", "revert", "touch", "delete", "hand-edit",
                         "param", "param-revert", "commit", "checkout", "clone", "one"])
        self.history.append((dict(w.sources), dict(w.params)))
        target: str | None = None
        if op == "edit":
            rel = rng.choice(sorted(w.sources))
            w.sources[rel] = w.text()
            self.log.append(f"edit {rel}")
        elif op == "cutoff":  # a change that `tr -d x` or `head -n 1` may not see
            rel = rng.choice(sorted(w.sources))
            w.sources[rel] += "x\n"
            self.log.append(f"append x to {rel}")
        elif op == "revert" and len(self.history) > 1:
            w.sources = dict(rng.choice(self.history[:-1])[0])
            self.log.append("revert sources")
        elif op == "touch":
            rel = rng.choice(sorted(w.sources))
            os.utime(self.root / rel)
            self.log.append(f"touch {rel}")
        elif op in ("delete", "hand-edit"):
            t = rng.choice(w.targets)
            name, v = rng.choice(t.variants())
            out = self.root / t.out(v).rstrip("/")
            if out.exists():
                if op == "delete":
                    shutil.rmtree(out) if out.is_dir() else out.unlink()
                else:
                    victim = out / "a.txt" if out.is_dir() else out
                    os.chmod(victim.parent, 0o755)
                    victim.unlink()
                    victim.write_bytes(b"edited by hand\n")
            self.log.append(f"{op} out of {name}")
        elif op == "param":
            k = rng.choice(sorted(w.params))
            w.params[k] = rng.randint(0, 3)
            self.log.append(f"param {k}={w.params[k]}")
        elif op == "param-revert" and len(self.history) > 1:
            w.params = dict(rng.choice(self.history[:-1])[1])
            self.log.append("revert params")
        elif op == "commit":
            self.commit()
        elif op == "checkout" and self.commits:
            self.commit()
            sha, sources, params = rng.choice(self.commits)
            git(self.root, "checkout", "-q", sha)
            w.sources, w.params = dict(sources), dict(params)
            self.log.append(f"git checkout {sha[:8]}")
            self.build()
            git(self.root, "checkout", "-q", "main")
            w.sources, w.params = dict(self.commits[-1][1]), dict(self.commits[-1][2])
            self.log.append("git checkout main")
        elif op == "clone":
            self.commit()
            self.clones += 1
            fresh = self.base / f"w{self.clones}"
            git(self.base, "clone", "-q", str(self.root), str(fresh))
            for k, v in (("user.email", "m@example.com"), ("user.name", "M")):
                git(fresh, "config", k, v)
            self.root = fresh
            self.log.append("fresh clone")
        elif op == "one":
            target = rng.choice(w.targets).name
            self.log.append(f"build {target}")
        else:
            self.log.append(f"{op} (nothing to do)")
        w.write(self.root)
        self.build(target)

    def commit(self) -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", "step")
        sha = git(self.root, "rev-parse", "HEAD").strip()
        self.commits.append((sha, dict(self.world.sources), dict(self.world.params)))
        self.log.append("commit")


def test_random_sequences_leave_the_work_tree_as_a_clean_build_would(seed, tmp_path):
    seq = Sequence(seed, tmp_path)
    try:
        seq.log.append("first build")
        seq.build()
        for _ in range(8):
            seq.step()
    except AssertionError as exc:
        raise AssertionError(f"model sequence failed (replay: --model-seed {seed}): {exc}") \
            from None
