"""The page `mlmake serve` serves at `/`, in a real browser: Debian's Chromium driven by Playwright.

One served project (a pipeline with a matrix target, an order-only edge, an endpoint, three commits
with metrics, two experiments and a few runs) is shared by the module; each test opens its own page
and checks that no request left the service and the console stayed free of errors. The data
versions of runs are checked in test_page_data.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Repo, missing, need

CHROMIUM = os.environ.get("MLMAKE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TOKEN = "page+test/tok=en-0123456789=="   # "+", "/" and "=" as a token may carry them

MLFILE = """
    [project]
    params = ["params.toml"]
    default = ["evaluate", "report"]

    [target.prepare]
    desc = "split the raw data"
    cmd = "python src/step.py prepare data/prepared.txt"
    deps = ["src/step.py"]
    outs = ["data/prepared.txt"]

    [target.train]
    desc = "fit one model per variant"
    matrix = { model = ["tree", "linear"] }
    cmd = "python src/step.py train-${model} models/${model}.txt ${train.lr}"
    deps = ["src/step.py", "data/prepared.txt"]
    params = ["train"]
    outs = ["models/${model}.txt"]

    [target.evaluate]
    cmd = "python src/evaluate.py ${train.acc}"
    deps = ["src/evaluate.py", "models/"]
    params = ["train.acc"]
    metrics = ["metrics/eval.json"]

    [target.report]
    cmd = "python src/step.py report report.txt ${report.wait}"
    deps = ["src/step.py"]
    after = ["evaluate"]
    outs = ["report.txt"]

    [endpoint.retrain]
    targets = ["evaluate"]
    params = ["train.lr"]

    [endpoint.publish]
    targets = ["report"]
    params = ["report.wait"]
"""

STEP = """
    import os, sys, time
    name, out = sys.argv[1], sys.argv[2]
    print(f"step {name}: writing {out} with {sys.argv[3:]}")
    if name == "report":
        time.sleep(float(sys.argv[3]))
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write(f"{name} {sys.argv[3:]}\\n")
"""

EVALUATE = """
    import json, os, sys
    acc = float(sys.argv[1])
    print(f"evaluating models: accuracy {acc}")
    os.makedirs("metrics", exist_ok=True)
    json.dump({"accuracy": acc, "loss": round(1 - acc, 3)}, open("metrics/eval.json", "w"))
"""


def params(acc: float, lr: float) -> str:
    return f"[train]\nacc = {acc}\nlr = {lr}\n\n[report]\nwait = 0\ntitle = \"weekly\"\n"


# -- the served project ------------------------------------------------------------------------
@dataclass
class Served:
    """A running `mlmake serve` and a small HTTP client for its API."""

    url: str
    repo: Repo
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, body: Any = None, token: str | None = TOKEN) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method="GET" if body is None else "POST")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def trigger(self, endpoint: str = "retrain", **body: Any) -> str:
        return str(self.api(f"/api/endpoints/{endpoint}/runs", body)["id"])

    def wait_run(self, run_id: str, timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self.api(f"/api/runs/{run_id}")
            if r["status"] in ("succeeded", "failed"):
                return dict(r)
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not finish in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(base: Path) -> dict[str, str]:
    """The environment of a served project's commands: its own HOME and the token."""
    home = base / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "MLMAKE_SERVE_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    env.pop("GIT_DIR", None)
    return env


@contextmanager
def _serving(base: Path, repo: Repo, env: dict[str, str]) -> Iterator[Served]:
    """`mlmake serve` on a free port in `repo`, once its API answers; stopped on the way out."""
    port = _free_port()
    log = base / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlmake", "serve", "--port", str(port)],
                                cwd=repo.path, env=env, stdout=out, stderr=subprocess.STDOUT)
    s = Served(f"http://127.0.0.1:{port}", repo, proc, log)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                s.api("/api/graph")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > end:
                    raise AssertionError(f"mlmake serve did not start:\n{s.output()}") from None
                time.sleep(0.1)
        yield s
    finally:
        _stop(proc)


def _need_a_browser() -> None:
    if not os.path.exists(CHROMIUM):
        missing(f"Chromium not found at {CHROMIUM}: install Debian's package "
                "(apt-get install chromium) or set MLMAKE_CHROMIUM")
    need("playwright", "Playwright for Python is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _need_a_browser()
    base = tmp_path_factory.mktemp("page")
    env = _env(base)
    repo = Repo(base / "repo")
    repo.write({"Mlfile": MLFILE, "src/step.py": STEP, "src/evaluate.py": EVALUATE})
    for acc, lr, msg in ((0.81, 0.1, "first model"), (0.86, 0.1, "more data"),
                         (0.9, 0.05, "tune the lr")):
        repo.write({"params.toml": params(acc, lr)})
        r = repo.mlmake(env=env)
        assert r.code == 0, r.text
        repo.commit(msg)
    # An edit not yet built: train (both variants) and evaluate are stale in the work tree.
    repo.write({"params.toml": params(0.9, 0.02)})
    # Two experiments on that edit (acc-1 scores 0.95, acc-2 0.7); the work tree stays as it is.
    r = repo.mlmake("exp", "run", "-S", "train.acc=0.95,0.7", "--name", "acc", env=env)
    assert r.code == 0, r.text
    with _serving(base, repo, env) as s:
        # A run through the API that reruns train with another lr (and so has train logs).
        s.wait_run(s.trigger(params={"train.lr": 0.2}))
        yield s


# -- the browser -------------------------------------------------------------------------------
def expect(locator: Any) -> Any:
    """Playwright's auto-waiting assertions (they need no eval, which the page's CSP forbids)."""
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=10_000)
    return _expect(locator)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_a_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class View:
    """A page of a fresh browser context, with every request and console message recorded."""

    page: Any
    served: Served
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, token: str | None = TOKEN) -> None:
        self.page.goto(self.served.url + "/" + (f"#token={token}" if token else ""))

    def assert_clean(self) -> None:
        """No request went anywhere but the service, and the console showed no error."""
        origin = urlsplit(self.served.url)
        foreign = [u for u in self.requests if not u.startswith(("data:", "blob:"))
                   and (urlsplit(u).scheme, urlsplit(u).netloc) != (origin.scheme, origin.netloc)]
        assert foreign == [], f"requests that left the service: {foreign}"
        assert self.errors == [], f"console errors: {self.errors}"


@contextmanager
def _viewing(browser: Any, served: Served) -> Iterator[View]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    v = View(page, served)
    page.on("request", lambda r: v.requests.append(r.url))
    page.on("console", lambda m: v.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: v.errors.append(f"uncaught: {e}"))
    try:
        yield v
    finally:
        context.close()


@pytest.fixture
def view(browser: Any, served: Served) -> Iterator[View]:
    with _viewing(browser, served) as v:
        yield v


def texts(view: View, selector: str) -> list[str]:
    return [t.strip() for t in view.page.locator(selector).all_text_contents()]


# -- tests -------------------------------------------------------------------------------------
def test_the_dag_names_every_target_with_its_state_in_words(view: View) -> None:
    view.open()
    view.page.wait_for_selector("#dag svg g.node")
    names = texts(view, "#dag svg g.node text.name")
    assert sorted(names) == ["evaluate", "prepare", "report", "train"]
    # matrix variants are grouped under their target
    chips = view.page.locator('#dag svg g.node[data-target="train"] g[data-target^="train@"]')
    assert sorted(c.get_attribute("data-target") for c in chips.all()) == ["train@linear",
                                                                           "train@tree"]
    # each state is told in words and a symbol, not by colour alone
    states = texts(view, "#dag svg g.node text.state")
    assert all(any(w in s for w in ("up to date", "stale", "running", "failed")) for s in states)
    # the work tree changed train.lr: train and evaluate are stale, with the reason on hover
    train = view.page.locator('#dag svg g.node[data-target="train"]')
    assert train.get_attribute("data-state") == "stale"
    assert "train.lr" in train.locator("title").first.text_content()
    assert view.page.locator('#dag svg g.node[data-target="prepare"]').get_attribute(
        "data-state") == "uptodate"
    view.assert_clean()


def test_the_dag_shows_a_target_running_while_a_run_builds_it(view: View, served: Served) -> None:
    view.open()
    report = '#dag svg g.node[data-target="report"]'
    view.page.wait_for_selector(report)
    run_id = served.trigger("publish", params={"report.wait": 2})
    running = view.page.locator(f'{report}[data-state="running"]')
    expect(running).to_have_count(1)
    assert "▶ running" in running.locator("text.state").text_content()
    served.wait_run(run_id)
    expect(running).to_have_count(0)
    view.assert_clean()


def test_run_history_shows_every_run_and_a_new_one_appears_without_a_reload(
        view: View, served: Served) -> None:
    view.open()
    view.page.wait_for_selector("#runs tbody tr")
    runs = served.api("/api/runs")
    shown = [tr.get_attribute("data-run-id") for tr in view.page.locator("#runs tbody tr").all()]
    assert shown == [r["id"] for r in runs]          # newest first, CLI and API runs alike
    assert len(shown) >= 4
    triggers = texts(view, "#runs tbody tr td.trigger span.trig")
    assert "cli" in triggers and "api" in triggers
    view.page.evaluate("window.__same_page = true")
    run_id = served.trigger()
    started = time.monotonic()
    view.page.wait_for_selector(f'#runs tbody tr[data-run-id="{run_id}"]', timeout=5_000)
    assert time.monotonic() - started < 5
    assert view.page.evaluate("window.__same_page") is True
    served.wait_run(run_id)
    view.page.wait_for_selector(f'#runs tbody tr[data-run-id="{run_id}"][data-status="succeeded"]',
                                timeout=5_000)
    view.assert_clean()


def test_clicking_a_run_then_a_target_shows_its_log(view: View, served: Served) -> None:
    api_run = next(r for r in served.api("/api/runs")
                   if r["trigger"] == "api" and r["params"].get("train.lr") == 0.2)
    view.open()
    view.page.click(f'#runs tbody tr[data-run-id="{api_run["id"]}"]')
    row = view.page.locator(f'#run-targets[data-run="{api_run["id"]}"] '
                            'tbody tr[data-target="train@tree"]')
    row.wait_for()
    assert "ran" in row.text_content()
    row.click()
    expect(view.page.locator("#log")).to_contain_text("step train-tree")
    assert "0.2" in view.page.locator("#log").text_content()
    assert "train@tree" in view.page.locator("#log-h").text_content()
    view.assert_clean()


def test_a_chart_per_metric_is_drawn_with_its_name_as_text(view: View) -> None:
    view.open()
    chart = view.page.locator('#charts .chart[data-metric="accuracy"]')
    chart.wait_for()
    assert chart.locator("canvas").count() >= 1
    assert chart.locator("h3").text_content() == "accuracy"
    assert "loss" in texts(view, "#charts .chart h3")
    # one column per commit, params as rows, the lr change marked
    assert len(view.page.locator("#params thead th[data-commit]").all()) == 3
    lr = view.page.locator('#params tbody tr[data-param="train.lr"] td')
    assert [c.strip(" Δ") for c in lr.all_text_contents()] == ["0.1", "0.1", "0.05"]
    view.assert_clean()


def test_the_token_moves_from_the_address_bar_to_session_storage(view: View) -> None:
    view.open()
    view.page.wait_for_selector("#dag svg")
    assert "token" not in view.page.url
    assert view.page.evaluate("sessionStorage.getItem('mlmake.token')") == TOKEN
    view.page.reload()
    view.page.wait_for_selector("#dag svg")
    assert view.page.locator("#login").is_hidden()
    view.assert_clean()


def test_without_a_token_the_page_asks_for_one_and_shows_no_data(view: View) -> None:
    view.open(token=None)
    view.page.wait_for_selector("#login-form")
    assert view.page.locator("#token-input").is_visible()
    assert view.page.locator("#app").is_hidden()
    time.sleep(0.3)
    assert not [u for u in view.requests if "/api/" in u]
    assert view.page.locator("#dag svg").count() == 0
    assert view.page.locator("#runs tbody tr").count() == 0
    view.assert_clean()


def test_a_wrong_token_gets_the_prompt_and_the_right_one_the_data(view: View) -> None:
    view.open(token=None)
    view.page.fill("#token-input", "not-the-token")
    view.page.click("#login-form button[type=submit]")
    expect(view.page.locator("#login-error")).to_contain_text("refused")
    assert view.page.locator("#app").is_hidden()
    assert view.page.locator("#dag svg").count() == 0
    view.page.fill("#token-input", TOKEN)
    view.page.click("#login-form button[type=submit]")
    view.page.wait_for_selector("#dag svg g.node")
    # the 401 the wrong token got is the only error the console may show
    view.errors = [e for e in view.errors if "401" not in e]
    view.assert_clean()


def test_the_params_table_opens_at_its_first_column(view: View) -> None:
    view.page.set_viewport_size({"width": 520, "height": 900})  # narrow: the table overflows
    view.open()
    view.page.wait_for_selector("#params thead th[data-commit]")
    box = view.page.locator(".params-scroll")
    time.sleep(0.3)  # let the layout settle after the charts are drawn
    left, width, client = box.evaluate("e => [e.scrollLeft, e.scrollWidth, e.clientWidth]")
    assert width > client, "the table must be wider than its box for this test to mean much"
    assert left == 0
    first = view.page.locator("#params thead th[data-commit]").first.bounding_box()
    shown = box.bounding_box()
    assert shown["x"] <= first["x"] and first["x"] + first["width"] <= shown["x"] + shown["width"]
    view.assert_clean()


def test_chart_legends_show_no_dash_until_a_point_is_hovered(view: View) -> None:
    view.open()
    chart = view.page.locator('#charts .chart[data-metric="accuracy"]')
    chart.locator(".u-legend").wait_for()
    legend = chart.locator(".u-legend")
    assert "—" not in legend.text_content()
    assert "accuracy" in legend.text_content()
    over = chart.locator(".u-over").bounding_box()
    view.page.mouse.move(over["x"] + over["width"] - 3, over["y"] + over["height"] / 2)
    expect(legend).to_contain_text("0.9 at")
    assert "—" not in legend.text_content()
    view.assert_clean()


def test_a_run_id_shows_in_full_on_hover_and_copies_in_full(view: View, served: Served) -> None:
    view.page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                        origin=served.url)
    view.open()
    view.page.wait_for_selector("#runs tbody tr")
    run_id = served.api("/api/runs")[-1]["id"]  # not the run the page opens with
    td = view.page.locator(f'#runs tbody tr[data-run-id="{run_id}"] td[data-id]')
    assert td.get_attribute("title") == run_id
    assert len(td.locator(".id-short").text_content()) < len(run_id)
    td.locator("button.copy").click()
    expect(td.locator("button.copy[data-copied]")).to_have_text("✓")
    assert view.page.evaluate("navigator.clipboard.readText()") == run_id
    assert view.page.locator(f'#run-targets[data-run="{run_id}"]').count() == 0  # not a pick
    view.assert_clean()


def test_a_run_triggered_with_overrides_shows_them(view: View, served: Served) -> None:
    api_run = next(r for r in served.api("/api/runs")
                   if r["trigger"] == "api" and r["params"].get("train.lr") == 0.2)
    view.open()
    row = view.page.locator(f'#runs tbody tr[data-run-id="{api_run["id"]}"]')
    expect(row.locator("td.trigger .overrides")).to_have_text("train.lr=0.2")
    assert "params train.lr=0.2" in row.locator("td.trigger").get_attribute("title")
    row.click()
    expect(view.page.locator("#run-meta")).to_contain_text("params train.lr=0.2")
    # a run without overrides shows none
    cli_run = next(r for r in served.api("/api/runs") if r["trigger"] == "cli")
    plain = view.page.locator(f'#runs tbody tr[data-run-id="{cli_run["id"]}"]')
    assert plain.locator(".overrides").count() == 0
    view.assert_clean()


def test_a_run_made_on_a_dirty_work_tree_shows_its_commit_with_a_plus(view: View,
                                                                       served: Served) -> None:
    runs = served.api("/api/runs")
    # the fixture's CLI builds ran on edited params before each commit; API runs build a
    # clean worktree of a commit
    dirty = [r for r in runs if r["dirty"]]
    clean = [r for r in runs if not r["dirty"] and r["commit"]]
    assert dirty and all(r["trigger"] == "cli" for r in dirty)
    assert any(r["trigger"] == "api" for r in clean)
    view.open()
    view.page.wait_for_selector("#runs tbody tr")
    for r in dirty + clean:
        td = view.page.locator(f'#runs tbody tr[data-run-id="{r["id"]}"] td.commit')
        assert td.text_content() == r["commit"][:7] + ("+" if r["dirty"] else "")
        assert ("uncommitted changes" in td.get_attribute("title")) == r["dirty"]
    view.assert_clean()


# -- experiments -------------------------------------------------------------------------------
ACCURACY = "m:metrics/eval.json:accuracy"


def experiments(served: Served) -> list[dict[str, Any]]:
    """The experiment rows of /api/experiments (the work tree and base commit left out)."""
    return [r for r in served.api("/api/experiments")["rows"] if r["kind"] == "experiment"]


def open_experiments(view: View) -> None:
    view.open()
    view.page.click("#tab-experiments")
    view.page.wait_for_selector('#exps tbody tr[data-kind="experiment"]')


def shown_rows(view: View) -> list[str]:
    return [tr.get_attribute("data-name") for tr in view.page.locator("#exps tbody tr").all()]


def test_the_experiments_view_lists_experiments_with_the_columns_that_differ(
        view: View, served: Served) -> None:
    open_experiments(view)
    assert view.page.locator("#tab-experiments").get_attribute("aria-selected") == "true"
    assert view.page.locator("#view-pipeline").is_hidden()
    names = [e["name"] for e in experiments(served)]
    assert {"acc-1", "acc-2"} <= set(names)
    rows = shown_rows(view)
    assert rows[:2] == ["workspace", "baseline"] and sorted(rows[2:]) == sorted(names)
    acc1 = view.page.locator('#exps tbody tr[data-name="acc-1"]')
    assert acc1.locator(f'td[data-col="{ACCURACY}"]').text_content() == "0.95"
    assert "succeeded" in acc1.locator('td[data-col="status"]').text_content()
    # the param it set with -S is marked, one it did not set is not
    assert "override" in acc1.locator('td[data-col="p:train.acc"]').get_attribute("class")
    assert "override" not in acc1.locator('td[data-col="p:train.lr"]').get_attribute("class")
    # changed columns only: report.title is the same in every row; "all columns" shows it
    table = served.api("/api/experiments")
    params = view.page.locator('#exps thead th[data-group="param"]')
    keys = [th.get_attribute("data-key") for th in params.all()]
    assert keys == table["changed"]["params"]
    assert "train.acc" in keys and "train.lr" in keys and "report.title" not in keys
    assert "accuracy" in texts(view, '#exps thead th[data-group="metric"]')
    view.page.check("#exp-all")
    expect(view.page.locator('#exps thead th[data-key="report.title"]')).to_have_count(1)
    assert [th.get_attribute("data-key") for th in params.all()] == table["params"]
    view.page.uncheck("#exp-all")
    expect(view.page.locator('#exps thead th[data-key="report.title"]')).to_have_count(0)
    # the view is in the address, so a reload comes back to it
    assert "view=experiments" in view.page.url and "token" not in view.page.url
    view.page.reload()
    view.page.wait_for_selector('#exps tbody tr[data-kind="experiment"]')
    assert view.page.locator("#view-experiments").is_visible()
    view.assert_clean()


def test_sorting_the_experiments_by_a_metric_reorders_them(view: View, served: Served) -> None:
    open_experiments(view)
    by_acc = sorted(experiments(served),
                    key=lambda e: e["metrics"]["metrics/eval.json"]["accuracy"])
    ascending = ["workspace", "baseline", *(e["name"] for e in by_acc)]
    assert shown_rows(view) != ascending  # the default order is not already sorted
    head = view.page.locator('#exps thead th[data-key="accuracy"]')
    head.locator("button").click()
    expect(head).to_have_attribute("aria-sort", "ascending")
    assert shown_rows(view) == ascending
    head.locator("button").click()
    expect(head).to_have_attribute("aria-sort", "descending")
    # the work tree and base commit stay on top, as in `mlmake exp show --sort-by`
    by_acc = sorted(experiments(served),
                    key=lambda e: -e["metrics"]["metrics/eval.json"]["accuracy"])
    assert shown_rows(view) == ["workspace", "baseline", *(e["name"] for e in by_acc)]
    # a param column sorts too, by number
    acc = view.page.locator('#exps thead th[data-key="train.acc"]')
    acc.locator("button").click()
    expect(acc).to_have_attribute("aria-sort", "ascending")
    by_param = sorted(experiments(served), key=lambda e: e["params"]["train.acc"])
    assert shown_rows(view)[2:] == [e["name"] for e in by_param]
    view.assert_clean()


def test_the_experiments_chart_draws_one_labelled_point_per_experiment(
        view: View, served: Served) -> None:
    open_experiments(view)
    view.page.select_option("#exp-x", "train.acc")
    view.page.select_option("#exp-y", ACCURACY)
    names = sorted(e["name"] for e in experiments(served))
    points = view.page.locator('#exp-chart g.point[data-kind="experiment"]')
    expect(points).to_have_count(len(names))
    assert sorted(p.get_attribute("data-name") for p in points.all()) == names
    assert sorted(texts(view, '#exp-chart g.point[data-kind="experiment"] text.label')) == names
    # the work tree and HEAD are points too, told apart from the experiments
    assert view.page.locator('#exp-chart g.point[data-kind="baseline"]').count() == 1
    # the axes are named in text
    assert view.page.locator("#exp-chart text.x-label").text_content() == "train.acc"
    assert view.page.locator("#exp-chart text.y-label").text_content() == "accuracy"
    # acc-1 (train.acc 0.95, accuracy 0.95) lies right of and above acc-2 (0.7, 0.7)
    hi = view.page.locator('#exp-chart g.point[data-name="acc-1"] .mark').bounding_box()
    lo = view.page.locator('#exp-chart g.point[data-name="acc-2"] .mark').bounding_box()
    assert hi["x"] > lo["x"] and hi["y"] < lo["y"]
    # a point picks its row
    view.page.locator('#exp-chart g.point[data-name="acc-2"] .mark').click()
    expect(view.page.locator("#exps tbody tr.selected")).to_have_attribute("data-name", "acc-2")
    expect(view.page.locator("#exp-detail")).to_contain_text("train.acc=0.7")
    view.assert_clean()


def test_the_experiments_view_shows_a_new_experiment_when_its_run_finishes(
        view: View, served: Served) -> None:
    open_experiments(view)
    rows = view.page.locator('#exps tbody tr[data-kind="experiment"]')
    before = rows.count()
    run_id = served.trigger(params={"train.lr": 0.3})  # overrides: recorded as an experiment
    served.wait_run(run_id)
    expect(rows).to_have_count(before + 1)
    expect(view.page.locator(f'#exps tbody tr[data-name="retrain-{run_id}"]')).to_have_count(1)
    expect(view.page.locator("#exp-count")).to_have_text(f"({before + 1})")
    view.assert_clean()
