"""The page's data versions, in a real browser: a served project whose builds read tracked data
sources (`mlmake add`) in two versions, and one build that read none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import Repo
from test_page import (  # noqa: F401 (browser: a fixture)
    Served,
    View,
    _env,
    _need_a_browser,
    _serving,
    _viewing,
    browser,
    expect,
    texts,
)

HELLO = """
    [target.hello]
    cmd = "echo hello > hello.txt"
    outs = ["hello.txt"]
"""
COUNT = """
    [target.count]
    desc = "count the labelled rows"
    cmd = "cat data/raw.csv data/labels/*.txt | wc -l > count.txt"
    deps = ["data/raw.csv", "data/labels/"]
    outs = ["count.txt"]
"""


@dataclass
class DataBuilds:
    """The served data project and its three builds, oldest first, with the data versions
    (source path -> content hash) the lock held when each was made."""

    served: Served
    builds: list[str]
    versions: list[dict[str, str]]


def _sources(repo: Repo) -> dict[str, str]:
    lock = json.loads(repo.read("Mlfile.lock"))
    return {path: rec["hash"] for path, rec in lock.get("sources", {}).items()}


def _build(repo: Repo, env: dict[str, str], msg: str) -> str:
    """Build the work tree, commit, and return the new build's id."""
    before = {r["build"] for r in repo.runs()}
    r = repo.mlmake(env=env)
    assert r.code == 0, r.text
    repo.commit(msg)
    [build] = {r["build"] for r in repo.runs() if r["outcome"] == "ran"} - before
    return str(build)


@pytest.fixture(scope="module")
def served_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataBuilds]:
    """A project that builds once with no data source, then reads two tracked sources (a file
    and a directory) in two versions of the file: add, build, edit, add again, build."""
    _need_a_browser()
    base = tmp_path_factory.mktemp("page-data")
    env = _env(base)
    repo = Repo(base / "repo")
    repo.write({"Mlfile": HELLO})
    builds = [_build(repo, env, "hello, no data yet")]
    versions = [_sources(repo)]
    repo.write({"Mlfile": HELLO + COUNT, "data/raw.csv": "id,label\n1,cat\n2,dog\n",
                "data/labels/cat.txt": "cat\n", "data/labels/dog.txt": "dog\n"})
    r = repo.mlmake("add", "data/raw.csv", "data/labels", env=env)
    assert r.code == 0, r.text
    builds.append(_build(repo, env, "count the data, v1"))
    versions.append(_sources(repo))
    (repo.path / "data/raw.csv").unlink()  # a read-only link into the store: replace it
    repo.write({"data/raw.csv": "id,label\n1,cat\n2,dog\n3,cat\n"})
    r = repo.mlmake("add", "data/raw.csv", env=env)
    assert r.code == 0 and "updated data/raw.csv" in r.out, r.text
    builds.append(_build(repo, env, "more rows, v2"))
    versions.append(_sources(repo))
    with _serving(base, repo, env) as s:
        yield DataBuilds(s, builds, versions)


@pytest.fixture
def data_view(browser: Any, served_data: DataBuilds) -> Iterator[View]:  # noqa: F811
    with _viewing(browser, served_data.served) as v:
        yield v


def test_a_run_whose_record_names_its_data_versions_shows_them(data_view: View,
                                                              served_data: DataBuilds) -> None:
    builds, versions = served_data.builds, served_data.versions
    none, v1, v2 = versions
    assert none == {} and set(v1) == set(v2) == {"data/raw.csv", "data/labels"}
    assert v1["data/raw.csv"] != v2["data/raw.csv"] and v1["data/labels"] == v2["data/labels"]
    # each build recorded the versions its lock held, as `runs --json` and the API tell
    recorded = {r["build"]: r["data"] for r in served_data.served.repo.runs()}
    assert [recorded[b] for b in builds] == versions
    api = {r["id"]: r["data"] for r in served_data.served.api("/api/runs")}
    assert [api[b] for b in builds] == versions

    def shown(data: dict[str, str]) -> list[str]:
        return [f"{path}@{digest[:8]}" for path, digest in sorted(data.items())]

    view = data_view
    view.open()
    for build, data in zip(builds[1:], versions[1:]):
        row = view.page.locator(f'#runs tbody tr[data-run-id="{build}"]')
        row.locator(".data-versions").wait_for()
        assert texts(view, f'#runs tbody tr[data-run-id="{build}"] .data-versions .dv') == \
            shown(data)
    without = builds[0]
    assert view.page.locator(f'#runs tbody tr[data-run-id="{without}"] .data-versions'
                             ).count() == 0
    view.page.locator(f'#runs tbody tr[data-run-id="{builds[2]}"]').click()
    expect(view.page.locator("#run-meta")).to_contain_text("data " + ", ".join(shown(v2)))
    view.page.locator(f'#runs tbody tr[data-run-id="{without}"]').click()
    expect(view.page.locator(f'#run-targets[data-run="{without}"]')).to_have_count(1)
    assert "data " not in view.page.locator("#run-meta").text_content()
    view.assert_clean()
