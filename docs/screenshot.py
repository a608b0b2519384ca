"""Regenerate docs/page.png and docs/experiments.png: the page of `mlmake serve` on a small demo
project, at 1400x900: page.png its pipeline view above its Experiments view, experiments.png the
Experiments view alone.

    python docs/screenshot.py [--keep DIR]

Needs Chromium (Debian: apt-get install chromium) and Playwright for Python (pip install
playwright; its own browser download is not used). The demo is a temporary Git repository with
four commits of metrics, a few experiments (a grid over the learning rate and one with more
trees), a few runs from the CLI and the API (one of them failing), an uncommitted param edit (so
some targets are stale) and a run in progress when the pictures are taken.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("MLMAKE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "demo-token"

MLFILE = """
[project]
params = ["params.toml"]
default = ["evaluate", "report"]

[target.prepare]
desc = "split the raw transactions"
cmd = "python src/step.py prepare data/prepared.csv"
deps = ["src/step.py"]
params = ["prepare"]
outs = ["data/prepared.csv"]

[target.featurize]
desc = "bucket amounts, encode merchants"
cmd = "python src/step.py featurize data/features.csv"
deps = ["src/step.py", "data/prepared.csv"]
params = ["featurize"]
outs = ["data/features.csv"]

[target.train]
desc = "fit one model per variant"
matrix = { model = ["logreg", "forest"], seed = [0, 1] }
cmd = "python src/train.py ${model} ${seed} ${train.lr} ${train.wait}"
deps = ["src/train.py", "data/features.csv"]
params = ["train"]
outs = ["models/${model}-${seed}.txt"]

[target.evaluate]
desc = "score the models on the held-out month"
cmd = "python src/evaluate.py ${evaluate.expected} ${train.lr} ${train.trees}"
deps = ["src/evaluate.py", "models/"]
metrics = ["metrics/eval.json"]

[target.report]
desc = "write the model card"
cmd = "python src/step.py report report.md"
deps = ["src/step.py"]
after = ["evaluate"]
outs = ["report.md"]

[endpoint.retrain]
targets = ["evaluate"]
params = ["train.lr"]

[endpoint.tune-forest]
targets = ["train@forest-0", "train@forest-1"]
params = ["train.wait"]
"""

STEP = """
import os, sys
name, out = sys.argv[1], sys.argv[2]
print(f"{name}: reading inputs")
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    f.write(f"{name}\\n")
print(f"{name}: wrote {out}")
"""

TRAIN = """
import os, sys, time
model, seed, lr, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"training {model} (seed {seed}) with learning rate {lr}")
for epoch in range(1, 4):
    print(f"  epoch {epoch}: loss {0.9 / (epoch + seed + lr * 10):.4f}")
time.sleep(wait if model == "forest" else 0)
os.makedirs("models", exist_ok=True)
open(f"models/{model}-{seed}.txt", "w").write(f"{model} {seed} {lr}\\n")
print(f"saved models/{model}-{seed}.txt")
"""

EVALUATE = """
import json, math, os, sys
expected, lr, trees = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"scoring 4 models on 2024-03 (learning rate {lr}, {trees} trees)")
if lr > 0.5:
    print(f"error: the models diverged at learning rate {lr}: every score is nan", file=sys.stderr)
    sys.exit(1)
acc = round(expected - 3 * (lr - 0.05) ** 2 + 0.02 * math.log10(trees / 400), 4)
print(f"accuracy {acc}")
os.makedirs("metrics", exist_ok=True)
json.dump({"accuracy": acc, "auc": round(0.5 + acc / 2, 4), "loss": round(1.1 - acc, 4)},
          open("metrics/eval.json", "w"))
"""

HISTORY = [  # (expected accuracy, lr, trees, commit subject)
    (0.78, 0.1, 100, "baseline models"),
    (0.83, 0.1, 200, "more trees"),
    (0.86, 0.05, 200, "lower the learning rate"),
    (0.91, 0.05, 400, "amount buckets by merchant"),
]


def params(acc: float, lr: float, trees: int, bins: int = 10) -> str:
    return (f"[prepare]\nsplit = 0.2\n\n[featurize]\nbins = {bins}\n\n"
            f"[train]\nlr = {lr}\ntrees = {trees}\nwait = 0\n\n[evaluate]\nexpected = {acc}\n")


def sh(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def build_demo(root: Path, env: dict[str, str]) -> None:
    """The demo project: four commits with metrics, each built by the CLI."""
    root.mkdir(parents=True)
    for rel, text in {"Mlfile": MLFILE, "src/step.py": STEP, "src/train.py": TRAIN,
                      "src/evaluate.py": EVALUATE}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "config", "user.email", "demo@example.com")
    sh(root, "git", "config", "user.name", "Demo")
    for acc, lr, trees, subject in HISTORY:
        (root / "params.toml").write_text(params(acc, lr, trees))
        sh(root, sys.executable, "-m", "mlmake", "-j", "4", env=env)
        sh(root, "git", "add", "-A")
        sh(root, "git", "commit", "-q", "-m", subject)
    # An edit not built yet: featurize and everything after it are stale.
    acc, lr, trees, _ = HISTORY[-1]
    (root / "params.toml").write_text(params(acc, lr, trees, bins=20))
    # Experiments on that edit: a grid over the learning rate, and more trees.
    sh(root, sys.executable, "-m", "mlmake", "exp", "run", "-j", "2", "--name", "lr",
       "-S", "train.lr=0.01,0.03,0.1,0.2", env=env)
    sh(root, sys.executable, "-m", "mlmake", "exp", "run", "--name", "more-trees",
       "-S", "train.trees=800", env=env)


def api(url: str, path: str, body: object = None) -> object:
    req = urllib.request.Request(url + path, method="GET" if body is None else "POST",
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def wait_run(url: str, run_id: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if api(url, f"/api/runs/{run_id}")["status"] in ("succeeded", "failed"):  # type: ignore[index]
            return
        time.sleep(0.2)
    raise SystemExit(f"run {run_id} did not finish")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "page.png"))
    ap.add_argument("--exps-out", default=str(HERE / "experiments.png"))
    ap.add_argument("--keep", help="build the demo project here and keep it")
    opts = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    tmp = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="mlmake-page-"))
    root = tmp / "fraud-model"
    env = {**os.environ, "MLMAKE_SERVE_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    build_demo(root, env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mlmake", "serve", "--port", str(port),
                             "--jobs", "2"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                api(url, "/api/graph")
                break
            except OSError:
                time.sleep(0.1)
        wait_run(url, api(url, "/api/endpoints/retrain/runs", {})["id"])  # type: ignore[index]
        failed = api(url, "/api/endpoints/retrain/runs", {"params": {"train.lr": 0.8}})
        wait_run(url, failed["id"])  # type: ignore[index]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/#token={TOKEN}")
            page.wait_for_selector("#charts canvas")
            # A slow run in progress: its targets show as running on the graph.
            slow = api(url, "/api/endpoints/tune-forest/runs", {"params": {"train.wait": 30}})
            page.click(f'#runs tbody tr[data-run-id="{failed["id"]}"]')  # type: ignore[index]
            page.click('#run-targets tbody tr[data-outcome="failed"]')
            expect(page.locator("#log")).to_contain_text("diverged")
            page.wait_for_selector('#dag g.node[data-state="running"]', timeout=20_000)
            running = f'#runs tbody tr[data-run-id="{slow["id"]}"][data-status="running"]'  # type: ignore[index]
            page.wait_for_selector(running)
            time.sleep(1.8)  # let the new-row highlight fade
            page.mouse.move(0, 0)
            pipeline = page.screenshot()
            # The Experiments view: sorted by accuracy, best first, lr against accuracy.
            page.click("#tab-experiments")
            page.wait_for_selector('#exp-chart g.point[data-kind="experiment"]')
            head = page.locator('#exps thead th[data-key="accuracy"] button')
            head.click()
            head.click()
            page.select_option("#exp-x", "train.lr")
            page.click('#exps tbody tr[data-name="lr-2"]')
            expect(page.locator('#exp-chart g.point.selected')).to_have_count(1)
            page.mouse.move(0, 0)
            experiments = page.screenshot(path=opts.exps_out)
            # page.png: both views of the page, one above the other
            both = browser.new_page(viewport={"width": 1400, "height": 900})
            both.set_content("<body style='margin:0;background:#0f172a'>" + "".join(
                f"<img style='display:block;margin-bottom:8px' src='data:image/png;base64,"
                f"{base64.b64encode(shot).decode()}'>" for shot in (pipeline, experiments))
                + "</body>")
            both.screenshot(path=opts.out, full_page=True)
            browser.close()
        print(f"wrote {opts.out} and {opts.exps_out}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
