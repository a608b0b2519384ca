"""The hook scripts, install/uninstall on disk, and which actions each hook runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlmake import hooks, mlfile
from mlmake.errors import MlfileError, UsageError
from mlmake.model import HooksSpec, Pipeline, RemoteSpec


def pipeline(hooks_table: dict | None = None, remote: str | None = None) -> Pipeline:
    remotes = {remote: RemoteSpec(remote, "/tmp/x")} if remote else {}
    actions = tuple((name, (acts,) if isinstance(acts, str) else tuple(acts))
                    for name, acts in (hooks_table or {}).items())
    return Pipeline(path="/p/Mlfile", root="/p", targets={}, remote=remote, remotes=remotes,
                    hooks=HooksSpec(actions))


@pytest.fixture
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest.mark.parametrize("name", hooks.HOOK_NAMES)
def test_every_script_is_valid_sh(name: str):
    text = hooks.script(name, "my project", "Mlfile", "/opt/py thon/bin/python")
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
    assert text.startswith("#!/bin/sh\n" + hooks.BEGIN) and text.endswith(hooks.END + "\n")
    assert "-C 'my project' hooks run " + name in text
    assert ("mlmake_in=$(cat" in text) == (name in hooks.STDIN_HOOKS)
    assert ('[ "$mlmake_rc" -eq 0 ] || exit' in text) == name.startswith("pre-")


def test_the_script_names_a_non_default_mlfile_and_omits_the_root_directory():
    text = hooks.script("post-merge", ".", "ml.toml", "/usr/bin/python3")
    assert "/usr/bin/python3 -m mlmake -f ml.toml hooks run post-merge" in text
    assert " -C " not in text


@pytest.mark.parametrize("table, remote, expected", [
    ({}, None, {"post-checkout": ("checkout",), "post-merge": ("checkout",),
                "post-rewrite": ("checkout",), "pre-push": (), "post-commit": ()}),
    ({}, "team", {"pre-push": ("push",)}),
    ({"post-merge": "run"}, None, {"post-merge": ("run",), "post-checkout": ("checkout",)}),
    ({"post-commit": ["run:train,evaluate", "status"]}, None,
     {"post-commit": ("run:train,evaluate", "status")}),
    ({"pre-push": []}, "team", {"pre-push": ()}),
])
def test_actions_default_per_hook(table, remote, expected):
    p = pipeline(table, remote)
    for name, acts in expected.items():
        assert hooks.actions(p, name) == acts


def test_installed_hooks_are_the_defaults_plus_configured_ones():
    assert hooks.wanted(pipeline()) == hooks.ALWAYS_INSTALLED
    assert hooks.wanted(pipeline({"post-commit": "run", "post-merge": []})) == (
        "post-checkout", "post-rewrite", "post-commit", "pre-push")


def test_pushed_commits_come_from_the_pre_push_stdin():
    a, b = "a" * 40, "b" * 40
    stdin = (f"refs/heads/main {a} refs/heads/main {'0' * 40}\n"
             f"refs/heads/gone {'0' * 40} refs/heads/gone {b}\n"
             f"refs/tags/v1 {a} refs/tags/v1 {'0' * 40}\n")
    assert hooks.pushed_commits(stdin) == [a]


def test_a_symlinked_hook_is_moved_aside_and_back(git_repo: Path):
    hooks_dir = git_repo / ".git" / "hooks"
    (git_repo / "tools").mkdir()
    (git_repo / "tools" / "check.sh").write_text("#!/bin/sh\n")
    link = hooks_dir / "pre-push"
    link.symlink_to("../../tools/check.sh")
    changes = hooks.install(str(git_repo))
    assert {c.name: c.change for c in changes}["pre-push"] == "installed"
    assert os.readlink(hooks_dir / "pre-push.mlmake-orig") == "../../tools/check.sh"
    hooks.uninstall(str(git_repo))
    assert os.readlink(link) == "../../tools/check.sh"
    assert not (hooks_dir / "post-checkout").exists()


def test_lines_added_around_the_block_survive_uninstall(git_repo: Path):
    hooks.install(str(git_repo), names=("post-merge",))
    path = git_repo / ".git" / "hooks" / "post-merge"
    path.write_text(path.read_text() + "echo mine\n")
    assert [c.change for c in hooks.uninstall(str(git_repo))] == ["removed"]
    assert path.read_text() == "#!/bin/sh\necho mine\n"


def test_a_hook_that_is_no_longer_wanted_is_taken_out(git_repo: Path):
    hooks.install(str(git_repo), names=("post-merge", "post-commit"))
    changes = hooks.install(str(git_repo), names=("post-merge",))
    assert [(c.name, c.change) for c in changes] == [("post-merge", "unchanged"),
                                                     ("post-commit", "removed")]
    assert not (git_repo / ".git" / "hooks" / "post-commit").exists()


def test_a_leftover_original_is_never_overwritten(git_repo: Path):
    hooks_dir = git_repo / ".git" / "hooks"
    (hooks_dir / "post-merge").write_text("#!/bin/sh\necho first\n")
    hooks.install(str(git_repo), names=("post-merge",))
    (hooks_dir / "post-merge").write_text("#!/bin/sh\necho another tool\n")  # replaced ours
    with pytest.raises(UsageError, match="left from an earlier `mlmake hooks install`"):
        hooks.install(str(git_repo), names=("post-merge",))
    assert (hooks_dir / "post-merge.mlmake-orig").read_text() == "#!/bin/sh\necho first\n"


def test_a_changed_interpreter_shows_as_outdated_and_install_updates_it(git_repo: Path):
    hooks.install(str(git_repo), names=("post-merge",), python="/old/python")
    states = {s.name: s for s in hooks.status(str(git_repo), pipeline())}
    assert states["post-merge"].state == "outdated"
    assert states["post-checkout"].state == "absent" and states["post-checkout"].wanted
    changes = hooks.install(str(git_repo), names=("post-merge",))
    assert [c.change for c in changes] == ["updated"]


# -- the [hooks] table ------------------------------------------------------------------------

MLFILE_HEAD = """\
[target.train]
cmd = "echo > model.bin"
outs = ["model.bin"]

[target.evaluate]
matrix = { split = ["a", "b"] }
cmd = "echo"

[hooks]
"""


def parse_hooks(tmp_path: Path, body: str) -> dict:
    """The parsed [hooks] table written back in its TOML shape (one action: a string)."""
    spec = mlfile.parse(MLFILE_HEAD + body, str(tmp_path / "Mlfile")).hooks
    table: dict = {name: acts[0] if len(acts) == 1 else list(acts)
                   for name, acts in spec.actions}
    return {**table, "strict": True} if spec.strict else table


def test_valid_hooks_tables_parse(tmp_path: Path):
    body = ('post-merge = ["checkout", "run:train,evaluate@a"]\npost-commit = "run"\n'
            'pre-push = []\npre-commit = "status"\nstrict = true\n')
    assert parse_hooks(tmp_path, body) == {
        "post-merge": ["checkout", "run:train,evaluate@a"], "post-commit": "run",
        "pre-push": [], "pre-commit": "status", "strict": True}


@pytest.mark.parametrize("body, message", [
    ('post-merge = "rerun"\n',
     ("Mlfile:10: [hooks] post-merge: unknown action 'rerun'; use checkout, run, "
      "run:TARGET,..., push or status. Did you mean 'run'?")),
    ('post-commit = "run:trian"\n',
     ("Mlfile:10: [hooks] post-commit: 'run:trian' names unknown target 'trian'. "
      "Did you mean 'train'?")),
    ('post-commit = "run:"\n',
     ("Mlfile:10: [hooks] post-commit: 'run:' needs target names after 'run:', e.g. "
      "\"run:train,evaluate\".")),
    ('post-checkout = 1\n',
     "Mlfile:10: [hooks] post-checkout must be a string or a list of strings"),
    ('strict = "yes"\n', "Mlfile:10: [hooks] strict must be true or false, not str"),
    ('post-merge = "checkout"\npre-rebase = "checkout"\n',
     "Mlfile:11: unknown key 'pre-rebase' in [hooks]."),
])
def test_bad_hooks_tables_name_the_key_and_line(tmp_path: Path, body: str, message: str):
    with pytest.raises(MlfileError) as info:
        parse_hooks(tmp_path, body)
    assert str(info.value).startswith(message)
