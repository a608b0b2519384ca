"""Bad input: one clear message naming the problem, exit 2, nothing run, nothing written."""

from __future__ import annotations

import pytest

GOOD = """
[target.ok]
cmd = "echo ran > ran.txt"
outs = ["ran.txt"]
"""

CASES = [
    ("invalid-toml", {"Mlfile": GOOD + '\n[target.bad\ncmd = "x"\n'},
     ["Mlfile:6:", "invalid TOML"]),
    ("unknown-key", {"Mlfile": GOOD + '\n[target.b]\ncmd = "x"\ndpes = ["a"]\n'},
     ["Mlfile:8:", "unknown key 'dpes'", "Did you mean 'deps'?"]),
    ("unknown-top-level", {"Mlfile": GOOD + '\n[targets.b]\ncmd = "x"\n'},
     ["unknown key 'targets'", "Did you mean 'target'?"]),
    ("cycle", {"Mlfile": """
        [target.a]
        cmd = "cp b.txt a.txt"
        deps = ["b.txt"]
        outs = ["a.txt"]
        [target.b]
        cmd = "cp a.txt b.txt"
        deps = ["a.txt"]
        outs = ["b.txt"]
     """}, ["dependency cycle", "→", "a → b → a" if False else "→ a"]),
    ("two-producers", {"Mlfile": GOOD + '\n[target.b]\ncmd = "x"\nouts = ["ran.txt"]\n'},
     ["targets 'ok' and 'b' both write 'ran.txt'"]),
    ("nested-outs", {"Mlfile": GOOD.replace('"ran.txt"]', '"data"]') +
                     '\n[target.b]\ncmd = "x"\nouts = ["data/inner.txt"]\n'},
     ["'data/inner.txt'", "inside 'data'", "must not nest"]),
    ("absolute-path", {"Mlfile": '[target.a]\ncmd = "x"\ndeps = ["/etc/passwd"]\n'},
     ["Mlfile:3:", "'/etc/passwd' is an absolute path"]),
    ("dotdot-path", {"Mlfile": '[target.a]\ncmd = "x"\nouts = ["../escape.txt"]\n'},
     ["Mlfile:3:", "leaves the project"]),
    ("missing-dep", {"Mlfile": GOOD + '\n[target.train]\ncmd = "x"\ndeps = ["data/raw.csv"]\n'},
     ["Mlfile:6:", "target 'train' needs 'data/raw.csv'", "no target produces it"]),
    ("unknown-variable", {"Mlfile": '[target.a]\ncmd = "echo ${modle}"\nmatrix = {model = ["x"]}\n'},
     ["unknown variable '${modle}'", "Did you mean 'model'?"]),
    ("empty-cmd", {"Mlfile": '[target.a]\ncmd = "  "\n'}, ["Mlfile:2:", "empty `cmd`"]),
    ("outs-a-string", {"Mlfile": '[target.a]\ncmd = "x"\nouts = "ran.txt"\n'},
     ["Mlfile:3:", "outs must be a list of strings", 'Write outs = ["ran.txt"]']),
    ("cmd-list-of-lines", {"Mlfile": '[target.a]\ncmd = ["echo hi", "echo there"]\n'},
     ["Mlfile:2:", "exec form", 'cmd = "echo hi && echo there"']),
    ("no-cmd", {"Mlfile": '[target.a]\ndeps = []\n'}, ["target 'a' has no `cmd`"]),
    ("empty-matrix", {"Mlfile": '[target.a]\ncmd = "x"\nmatrix = {seed = []}\n'},
     ["matrix variable 'seed' has no values"]),
    ("unknown-param", {"params.toml": "[train]\nlr = 1\n",
                       "Mlfile": '[target.a]\ncmd = "x"\nparams = ["trian"]\n'},
     ["unknown param 'trian'", "Did you mean 'train'?"]),
    ("too-many-cpus", {"Mlfile": '[target.big]\ncmd = "x"\nresources = {cpus = 4096}\n'},
     ["target 'big' asks for 4096 CPUs", "--executor ray"]),
    ("too-many-gpus", {"Mlfile": '[target.gpu]\ncmd = "x"\nresources = {gpus = 64}\n'},
     ["target 'gpu' asks for 64 GPUs", "--executor ray"]),
    ("too-much-memory", {"Mlfile": '[target.m]\ncmd = "x"\nresources = {memory = "64TiB"}\n'},
     ["target 'm' asks for", "GiB of memory", "--executor ray"]),
    ("unknown-env", {"Mlfile": '[target.a]\ncmd = "x"\nenv = "sk"\n'},
     ["uses env 'sk', but no [env.sk] table defines it"]),
    ("missing-requirements", {"Mlfile": '[env.sk]\nrequirements = "envs/sk.txt"\n' + GOOD},
     ["[env.sk] requirements 'envs/sk.txt' does not exist"]),
    ("unsupported-remote", {"Mlfile": '[remote.team]\nurl = "nosuch://bucket"\n' + GOOD},
     ["[remote.team]", "unsupported scheme 'nosuch'"]),
    ("bad-memory", {"Mlfile": '[target.a]\ncmd = "x"\nresources = {memory = "lots"}\n'},
     ["resources.memory 'lots' is not a size"]),
    ("unknown-after", {"Mlfile": GOOD + '\n[target.b]\ncmd = "x"\nafter = ["okk"]\n'},
     ["after names unknown target 'okk'", "Did you mean 'ok'?"]),
]


@pytest.mark.parametrize("files,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_a_clear_message_and_runs_nothing(repo, files, expected):
    repo.write(files)
    r = repo.mlmake()
    assert r.code == 2, r.text
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    for fragment in expected:
        assert fragment in r.err, (fragment, r.err)
    assert "Traceback" not in r.text
    assert not repo.exists("ran.txt")
    assert not repo.exists("Mlfile.lock")
    assert repo.mlmake("status").code == 2  # status and -n refuse what run refuses


def test_cycle_message_names_every_target_of_the_cycle(repo):
    repo.write({"Mlfile": """
        [target.a]
        cmd = "x"
        deps = ["c.txt"]
        outs = ["a.txt"]
        [target.b]
        cmd = "x"
        deps = ["a.txt"]
        outs = ["b.txt"]
        [target.c]
        cmd = "x"
        deps = ["b.txt"]
        outs = ["c.txt"]
    """})
    r = repo.mlmake("status")
    assert r.code == 2
    cycle = r.err.split("dependency cycle: ")[1].split(".")[0]
    names = cycle.split(" → ")
    assert names[0] == names[-1] and set(names) == {"a", "b", "c"}


def test_unknown_target_on_the_command_line_exits_2(repo):
    repo.write({"Mlfile": GOOD})
    r = repo.mlmake("okay")
    assert r.code == 2
    assert "no target named 'okay'" in r.err and "Did you mean 'ok'?" in r.err
    assert not repo.exists("ran.txt")


def test_no_mlfile_says_how_to_create_one(repo):
    r = repo.mlmake("status")
    assert r.code == 2 and "mlmake init" in r.err


def test_bad_params_file_names_file_and_line(repo):
    repo.write({"params.yaml": "train:\n  lr: [1, 2\n", "Mlfile": GOOD})
    r = repo.mlmake()
    assert r.code == 2 and "params.yaml:" in r.err and "invalid YAML" in r.err
    assert not repo.exists("ran.txt")


def test_unknown_option_is_a_usage_error(repo):
    repo.write({"Mlfile": GOOD})
    r = repo.mlmake("--no-such-flag")
    assert r.code == 2
    assert not repo.exists("ran.txt")
