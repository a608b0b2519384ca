"""Shared fixtures: a real temporary Git repository driven through the real mlmake CLI."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

MLMAKE = [sys.executable, "-m", "mlmake"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        return json.loads(self.out)


class Repo:
    """A temporary Git repository with helpers that read like usage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "test@example.com")
        self.git("config", "user.name", "Test")
        self.git("config", "commit.gpgsign", "false")

    def write(self, files: dict[str, str | bytes]) -> None:
        """Write files (text is dedented) relative to the repository root."""
        for rel, content in files.items():
            p = self.path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(textwrap.dedent(content))

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def git(self, *args: str, check: bool = True) -> str:
        r = subprocess.run(["git", *args], cwd=self.path, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def commit(self, msg: str = "commit") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", msg)
        return self.git("rev-parse", "HEAD").strip()

    def mlmake(self, *args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> Result:
        full_env = dict(os.environ)
        full_env.pop("CUDA_VISIBLE_DEVICES", None)
        full_env.update(env or {})
        r = subprocess.run([*MLMAKE, *args], cwd=self.path, capture_output=True, text=True,
                           env=full_env, timeout=timeout)
        return Result(r.returncode, r.stdout, r.stderr)

    def runs(self) -> list[dict[str, Any]]:
        r = self.mlmake("runs", "--json", "-n", "1000")
        assert r.code == 0, r.text
        return r.json()

    def executed(self) -> list[str]:
        """Targets whose command ran, according to the run records."""
        return [r["target"] for r in self.runs() if r["outcome"] == "ran"]


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_DIR", raising=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-trials", type=int, default=0, metavar="N",
                     help="run N seeded kill trials in tests/chaos (default: a fixed set)")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    config.addinivalue_line("markers", "needs(module, reason): the test needs an optional part "
                            "that `module` provides (skipped with the reason when it is absent)")


# -- optional parts ------------------------------------------------------------------------------
# s3fs, moto, Ray, Playwright, Chromium, Docker and scikit-learn are optional: a test that needs
# one says so with @pytest.mark.needs(module, reason) or calls need()/missing(), and skips with
# the reason when the part is absent (not pytest.importorskip, which CI cannot tell apart).
# .ci/run installs every part and sets MLMAKE_REQUIRE_ALL=1: there such a test fails instead,
# and a run with any skipped test fails, since a skip in CI hides a missing install step.
REQUIRE_ALL = os.environ.get("MLMAKE_REQUIRE_ALL") == "1"


def missing(reason: str) -> NoReturn:
    """Skip the test because an optional part is absent (fail it under MLMAKE_REQUIRE_ALL=1)."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (MLMAKE_REQUIRE_ALL=1: every optional part must be installed)",
                    pytrace=False)
    pytest.skip(reason)


def need(module: str, reason: str) -> Any:
    """The optional part's module, imported; `missing(reason)` when it cannot be."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = str(exc)
    missing(f"{reason} ({why})")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        need(*mark.args)


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_ALL and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REQUIRE_ALL and _skipped:
        terminalreporter.write_line(
            f"error: {len(_skipped)} test(s) skipped under MLMAKE_REQUIRE_ALL=1 (the reasons are "
            "above); every optional part and tool must be installed here, so the run fails",
            red=True, bold=True)

# -- a real S3 API (moto's server on loopback), for remote-cache tests -------------------------
S3_SECRET = "fake-secret-123"  # the fake credential tests look for in files, logs and errors
_BUCKETS = iter(range(1_000_000))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Any:
    """moto's S3 API on 127.0.0.1, started once per test session; yields its endpoint URL."""
    import logging

    server_mod = need("moto.server", "the S3 tests need moto's server (pip install -e '.[test]')")
    need("s3fs", "S3 remotes need s3fs (pip install 'mlmake[s3]')")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh bucket, and fake credentials in the environment (never in any file):
    {"endpoint", "bucket", "client"} (a boto3 client)."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a refused connection fails at once
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    bucket = f"team-cache-{next(_BUCKETS)}"
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=bucket)
    return {"endpoint": s3_server, "bucket": bucket, "client": client}
