"""Parsing and validating Mlfiles: matrix expansion, interpolation, and messages for bad input."""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path

import pytest

from mlmake import mlfile, params
from mlmake.errors import MlfileError
from mlmake.model import Pipeline, Resources

PARAMS_TOML = """\
[prepare]
split = 0.2

[train]
lr = 0.1
n = 10
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def parse(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Pipeline:
    """Parse an Mlfile rooted at tmp_path, after writing the given side files there."""
    for rel, content in (files or {}).items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(dedent(content))
    return mlfile.parse(dedent(text), str(tmp_path / "Mlfile"))


# -- valid Mlfiles ------------------------------------------------------------------------------

def test_matrix_expands_to_named_variants(tmp_path: Path):
    p = parse(tmp_path, """
        [target.train]
        matrix = { model = ["rf", "gbt"], seed = [0, 1] }
        cmd = "python train.py --model ${model} --seed ${seed}"
        outs = ["models/${model}-${seed}.pkl"]
    """)
    names = ("train@rf-0", "train@rf-1", "train@gbt-0", "train@gbt-1")
    assert p.variants["train"] == names
    assert list(p.targets) == list(names)
    t = p.targets["train@gbt-1"]
    assert t.base == "train"
    assert t.cmd == "python train.py --model gbt --seed 1"
    assert t.outs == ("models/gbt-1.pkl",)
    assert t.matrix == (("model", "gbt"), ("seed", "1"))


def test_target_without_matrix_is_its_own_only_variant(tmp_path: Path):
    p = parse(tmp_path, """
        [target.prepare]
        cmd = "true"
    """)
    assert p.variants == {"prepare": ("prepare",)}
    assert p.targets["prepare"].base == "prepare"
    assert p.targets["prepare"].matrix == ()


def test_boolean_matrix_values_are_named_in_lowercase(tmp_path: Path):
    p = parse(tmp_path, """
        [target.t]
        matrix = { flag = [true, false] }
        cmd = "run --flag ${flag}"
    """)
    assert p.variants["t"] == ("t@true", "t@false")
    assert p.targets["t@true"].cmd == "run --flag true"


def test_interpolates_matrix_vars_and_dotted_params(tmp_path: Path):
    p = parse(tmp_path, """
        [target.train]
        matrix = { model = ["rf"] }
        cmd = "python train.py --model ${model} --lr ${train.lr} --n ${ train.n }"
        deps = ["data/${prepare.split}.csv"]
        desc = "train ${model}"
    """, {"params.toml": PARAMS_TOML})
    t = p.targets["train@rf"]
    assert t.cmd == "python train.py --model rf --lr 0.1 --n 10"
    assert t.deps == ("data/0.2.csv",)
    assert t.desc == "train rf"
    # params used through ${} are part of what the target reads (and of its key)
    assert set(t.params) == {"train.lr", "train.n", "prepare.split"}


@pytest.mark.parametrize("value", ["a b", "it's", 'say "hi"', "$(rm -rf /)", "x;y"])
def test_param_values_are_shell_quoted_in_cmd_and_raw_in_outs(tmp_path: Path, value: str):
    (tmp_path / "params.json").write_text(json.dumps({"name": value}))
    p = parse(tmp_path, """
        [target.t]
        cmd = "python run.py --name ${name} --flag"
        outs = ["out/${name}.txt"]
    """)
    t = p.targets["t"]
    assert shlex.split(t.cmd) == ["python", "run.py", "--name", value, "--flag"]
    assert t.outs == (f"out/{value}.txt",)


def test_matrix_values_are_shell_quoted_in_cmd_and_raw_in_outs(tmp_path: Path):
    p = parse(tmp_path, """
        [target.t]
        matrix = { name = ["a b", "it's"] }
        cmd = "echo ${name}"
        outs = ["out/${name}.txt"]
    """)
    assert p.variants["t"] == ("t@a b", "t@it's")
    assert shlex.split(p.targets["t@a b"].cmd) == ["echo", "a b"]
    assert shlex.split(p.targets["t@it's"].cmd) == ["echo", "it's"]
    assert p.targets["t@it's"].outs == ("out/it's.txt",)


def test_double_dollar_escapes_to_a_literal_placeholder(tmp_path: Path):
    p = parse(tmp_path, """
        [target.t]
        cmd = "echo $${HOME} ${train.lr} $$HOME"
    """, {"params.toml": PARAMS_TOML})
    t = p.targets["t"]
    assert t.cmd == "echo ${HOME} 0.1 $$HOME"
    assert t.params == ("train.lr",)


def test_params_table_key_covers_its_children(tmp_path: Path):
    p = parse(tmp_path, """
        [target.train]
        cmd = "python train.py"
        params = ["train"]
    """, {"params.toml": PARAMS_TOML})
    t = p.targets["train"]
    assert t.params == ("train",)
    assert params.select(p.params, t.params) == {"train.lr": 0.1, "train.n": 10}


@pytest.mark.parametrize("name, content", [
    ("params.yaml", "train:\n  lr: 0.1\n  n: 10\n"),
    ("params.yml", "train:\n  lr: 0.1\n  n: 10\n"),
    ("params.json", '{"train": {"lr": 0.1, "n": 10}}'),
    ("params.toml", "[train]\nlr = 0.1\nn = 10\n"),
])
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "default"])
def test_params_files_in_toml_yaml_and_json(tmp_path: Path, name: str, content: str,
                                            declared: bool):
    (tmp_path / name).write_text(content)
    project = f'[project]\nparams = ["{name}"]\n' if declared else ""
    p = parse(tmp_path, project + """
[target.train]
cmd = "python train.py --lr ${train.lr}"
params = ["train"]
""")
    assert p.params_files == (name,)
    assert p.targets["train"].cmd == "python train.py --lr 0.1"
    assert params.select(p.params, ("train",)) == {"train.lr": 0.1, "train.n": 10}


def test_later_params_files_override_earlier_ones(tmp_path: Path):
    (tmp_path / "base.toml").write_text("[train]\nlr = 0.1\nn = 10\n")
    (tmp_path / "local.yaml").write_text("train:\n  lr: 0.5\n")
    p = parse(tmp_path, """
        [project]
        params = ["base.toml", "local.yaml"]
        [target.train]
        cmd = "python train.py"
        params = ["train"]
    """)
    assert params.select(p.params, ("train",)) == {"train.lr": 0.5, "train.n": 10}


def test_after_on_a_matrix_base_means_all_its_variants(tmp_path: Path):
    p = parse(tmp_path, """
        [target.train]
        matrix = { model = ["rf", "gbt"] }
        cmd = "train ${model}"
        [target.evaluate]
        cmd = "evaluate"
        after = ["train"]
        [target.report]
        cmd = "report"
        after = ["train@gbt", "evaluate"]
    """)
    assert p.targets["evaluate"].after == ("train@rf", "train@gbt")
    assert p.targets["report"].after == ("train@gbt", "evaluate")


@pytest.mark.parametrize("memory, expected", [
    ('"8GiB"', 8 * 2**30),
    ('"512MiB"', 512 * 2**20),
    ('"1.5GiB"', 3 * 2**29),
    ('"2GB"', 2 * 10**9),
    ('"4 gib"', 4 * 2**30),
    ('"100"', 100),
    ("1048576", 2**20),
])
def test_resources_memory_sizes(tmp_path: Path, memory: str, expected: int):
    p = parse(tmp_path, f"""
        [target.t]
        cmd = "true"
        resources = {{ cpus = 2, gpus = 1, memory = {memory}, tpu = 4 }}
    """)
    assert p.targets["t"].resources == Resources(cpus=2.0, gpus=1.0, memory=expected,
                                                  custom=(("tpu", 4.0),))


def test_default_resources_are_one_cpu(tmp_path: Path):
    p = parse(tmp_path, '[target.t]\ncmd = "true"\n')
    assert p.targets["t"].resources == Resources()


@pytest.mark.parametrize("argv, cmd", [
    ('["echo", "hi"]', "echo hi"),
    ('["python", "run.py", "--lr", "${train.lr}"]', "python run.py --lr 0.1"),
    ('["echo", "a b", "$HOME", "x;y", "*"]', "echo 'a b' '$HOME' 'x;y' '*'"),
    ('["echo", "--title=${train.title} run"]', "echo '--title=it'\"'\"'s run'"),
])
def test_cmd_given_as_a_list_is_an_argv_that_no_shell_reads(tmp_path: Path, argv: str,
                                                             cmd: str):
    p = parse(tmp_path, f"""
        [target.t]
        cmd = {argv}
    """, {"params.toml": PARAMS_TOML + 'title = "it\'s"\n'})
    assert p.targets["t"].cmd == cmd
    assert shlex.split(cmd) == [w.replace("${train.lr}", "0.1")
                                .replace("${train.title}", "it's") for w in json.loads(argv)]


def test_paths_are_normalized(tmp_path: Path):
    p = parse(tmp_path, """
        [target.t]
        cmd = "true"
        deps = ["./src/a.py", "data/prepared/", "src/../lib/b.py"]
        outs = ["models/"]
    """)
    t = p.targets["t"]
    assert t.deps == ("src/a.py", "data/prepared", "lib/b.py")
    assert t.outs == ("models",)


def test_target_records_flags_and_its_line(tmp_path: Path):
    p = parse(tmp_path, """
        [project]
        jobs = 3

        [target.a]
        cmd = "true"

        [target.b]
        cmd = "true"
        cache = false
        always = true
        persist = true
        wdir = "sub/"
        metrics = ["m.json"]
        plots = ["p.csv"]
        outs = ["o"]
    """)
    a, b = p.targets["a"], p.targets["b"]
    assert (a.line, b.line) == (4, 7)
    assert (a.cache, a.always, a.persist, a.wdir) == (True, False, False, ".")
    assert (b.cache, b.always, b.persist, b.wdir) == (False, True, True, "sub")
    assert b.all_outs == ("o", "m.json", "p.csv")
    assert b.cached_outs == ("o", "p.csv")
    assert p.jobs == 3


def test_project_remote_env_endpoint_and_schedule_tables_are_parsed(tmp_path: Path):
    p = parse(tmp_path, """
        [project]
        default = ["train"]
        executor = "ray"
        remote = "team"

        [remote.team]
        url = "s3://bucket/cache"
        options = { endpoint_url = "http://127.0.0.1:9000" }

        [env.sk]
        requirements = "envs/sk.txt"

        [target.train]
        cmd = "true"
        env = "sk"

        [endpoint.retrain]
        targets = ["train"]
        rev = "main"
        params = ["train.lr"]

        [schedule.nightly]
        endpoint = "retrain"
        cron = "0 3 * * *"

        [schedule.often]
        endpoint = "retrain"
        every = "10m"
        [schedule.watcher]
        endpoint = "retrain"
        watch = ["data/raw/"]
        poll = "2s"
    """, {"params.toml": PARAMS_TOML, "envs/sk.txt": "scikit-learn\n"})
    assert p.default == ("train",)
    assert p.executor == "ray"
    assert p.remotes["team"].url == "s3://bucket/cache"
    assert dict(p.remotes["team"].options) == {"endpoint_url": "http://127.0.0.1:9000"}
    assert p.envs["sk"].kind == "venv" and p.envs["sk"].requirements == "envs/sk.txt"
    assert p.targets["train"].env == "sk"
    assert p.endpoints["retrain"].targets == ("train",)
    assert p.endpoints["retrain"].params == ("train.lr",)
    assert p.schedules["nightly"].cron == "0 3 * * *"
    assert p.schedules["often"].every == 600.0
    assert p.schedules["watcher"].watch == ("data/raw",)
    assert p.schedules["watcher"].poll == 2.0


# -- bad Mlfiles: each message names the culprit and the line ---------------------------------

PARAMS = {"params.toml": PARAMS_TOML}
BAD = [
    ("invalid-toml", """
        [target.a]
        cmd = "unterminated
     """, {}, ["invalid TOML"], 2),
    ("unknown-top-level-key", """
        colour = "blue"
        [target.a]
        cmd = "true"
     """, {}, ["unknown key 'colour'", "Allowed keys"], 1),
    ("unknown-project-key", """
        [project]
        job = 2
        [target.a]
        cmd = "true"
     """, {}, ["unknown key 'job'", "[project]", "Did you mean 'jobs'?"], 2),
    ("unknown-target-key", """
        [target.a]
        cmd = "true"
        dpes = ["x"]
     """, {}, ["unknown key 'dpes'", "[target.a]", "Did you mean 'deps'?"], 3),
    ("empty-cmd", """
        [target.a]
        desc = "nothing"
        cmd = "   "
     """, {}, ["target 'a'", "empty `cmd`"], 3),
    ("missing-cmd", """
        [target.b]
        cmd = "true"

        [target.a]
        deps = ["x"]
     """, {}, ["target 'a'", "no `cmd`"], 4),
    ("no-targets", """
        [project]
        jobs = 2
     """, {}, ["no targets", "[target.NAME]"], None),
    ("bad-target-name", """
        [target."a@b"]
        cmd = "true"
     """, {}, ["target name 'a@b'"], 1),
    ("matrix-empty-list", """
        [target.a]
        cmd = "run ${model}"
        matrix = { model = [] }
     """, {}, ["target 'a'", "matrix variable 'model' has no values"], 3),
    ("unknown-var", """
        [target.a]
        matrix = { model = ["rf"] }
        cmd = "run ${modle}"
     """, {}, ["target 'a'", "unknown variable '${modle}'", "Did you mean 'model'?"], 3),
    ("unknown-var-in-outs", """
        [target.a]
        cmd = "true"
        outs = ["models/${seed}.pkl"]
     """, {}, ["unknown variable '${seed}' in outs"], 3),
    ("table-var", """
        [target.a]
        cmd = "run ${train}"
     """, PARAMS, ["'${train}' in cmd is a table"], 2),
    ("unknown-param", """
        [target.a]
        cmd = "true"
        params = ["train.lr", "trian"]
     """, PARAMS, ["target 'a'", "unknown param 'trian'", "Did you mean 'train'?"], 3),
    ("unknown-dotted-param", """
        [target.a]
        cmd = "true"
        params = ["train.lrr"]
     """, PARAMS, ["unknown param 'train.lrr'", "Did you mean 'train.lr'?"], 3),
    ("absolute-dep", """
        [target.a]
        cmd = "true"
        deps = ["/etc/passwd"]
     """, {}, ["target 'a'", "'/etc/passwd' is an absolute path"], 3),
    ("home-dep", """
        [target.a]
        cmd = "true"
        deps = ["~/data.csv"]
     """, {}, ["'~/data.csv' is an absolute path"], 3),
    ("dotdot-out", """
        [target.a]
        cmd = "true"
        outs = ["models/../../elsewhere"]
     """, {}, ["target 'a'", "'models/../../elsewhere' leaves the project"], 3),
    ("dotdot-via-param", """
        [target.a]
        cmd = "true"
        deps = ["${where}/x"]
     """, {"params.toml": 'where = ".."\n'}, ["leaves the project"], 3),
    ("out-is-project-root", """
        [target.a]
        cmd = "true"
        outs = ["."]
     """, {}, ["outs entry '.'"], 3),
    ("glob-out", """
        [target.a]
        cmd = "true"
        outs = ["models/*.pkl"]
     """, {}, ["outs entry 'models/*.pkl'", "no globs"], 3),
    ("two-targets-one-out", """
        [target.a]
        cmd = "true"
        outs = ["model.pkl"]

        [target.b]
        cmd = "true"
        outs = ["other.pkl", "model.pkl"]
     """, {}, ["targets 'a' and 'b' both write 'model.pkl'"], 7),
    ("matrix-variants-one-out", """
        [target.train]
        matrix = { seed = [0, 1] }
        cmd = "train ${seed}"
        outs = ["model.pkl"]
     """, {}, ["'train@0' and 'train@1' both write 'model.pkl'"], 4),
    ("metric-and-out-collide", """
        [target.a]
        cmd = "true"
        outs = ["m.json"]
        [target.b]
        cmd = "true"
        metrics = ["m.json"]
     """, {}, ["targets 'a' and 'b' both write 'm.json'"], 4),
    ("nested-out", """
        [target.a]
        cmd = "true"
        outs = ["data"]

        [target.b]
        cmd = "true"
        outs = ["data/sub/x.csv"]
     """, {}, ["target 'b' writes 'data/sub/x.csv', inside 'data'", "target 'a'"], 7),
    ("unknown-env", """
        [env.sk]
        requirements = "req.txt"

        [target.a]
        cmd = "true"
        env = "skl"
     """, {"req.txt": "numpy\n"}, ["env 'skl'", "[env.skl]", "Did you mean 'sk'?"], 6),
    ("env-file-missing", """
        [env.sk]
        requirements = "req.txt"
        [target.a]
        cmd = "true"
     """, {}, ["[env.sk] requirements 'req.txt' does not exist"], 2),
    ("unknown-after", """
        [target.train]
        cmd = "true"
        [target.evaluate]
        cmd = "true"
        after = ["trian"]
     """, {}, ["target 'evaluate'", "unknown target 'trian'", "Did you mean 'train'?"], 5),
    ("bad-memory", """
        [target.a]
        cmd = "true"
        resources = { cpus = 1, memory = "lots" }
     """, {}, ["target 'a'", "memory 'lots' is not a size"], 3),
    ("bad-memory-unit", """
        [target.a]
        cmd = "true"
        resources = { memory = "8XB" }
     """, {}, ["memory '8XB' is not a size"], 3),
    ("negative-resource", """
        [target.a]
        cmd = "true"
        resources = { gpus = -1 }
     """, {}, ["resources.gpus must be a number"], 3),
    ("zero-cpus", """
        [target.a]
        cmd = "true"
        resources = { cpus = 0 }
     """, {}, ["resources.cpus must be > 0"], 3),
    ("bad-executor", """
        [project]
        executor = "slurm"
        [target.a]
        cmd = "true"
     """, {}, ["executor must be one of local, ray", "'slurm'"], 2),
    ("bad-jobs", """
        [project]
        jobs = 0
        [target.a]
        cmd = "true"
     """, {}, ["jobs must be at least 1"], 2),
    ("wrong-type", """
        [target.a]
        cmd = "true"
        always = "yes"
     """, {}, ["always must be true or false", "str"], 3),
    ("unknown-default", """
        [project]
        default = ["evalute"]
        [target.evaluate]
        cmd = "true"
     """, {}, ["default names unknown target 'evalute'", "Did you mean 'evaluate'?"], 2),
    ("unknown-remote-scheme", """
        [remote.team]
        url = "foo://x"
        [target.a]
        cmd = "true"
     """, {}, ["[remote.team]", "unsupported scheme 'foo'"], 2),
    ("remote-without-url", """
        [remote.team]
        options = {}
        [target.a]
        cmd = "true"
     """, {}, ["[remote.team] needs a `url`"], 1),
    ("undefined-default-remote", """
        [project]
        remote = "team"
        [target.a]
        cmd = "true"
     """, {}, ["remote = 'team'", "[remote.team]"], 2),
    ("schedule-two-kinds", """
        [target.a]
        cmd = "true"
        [endpoint.e]
        targets = ["a"]
        [schedule.nightly]
        endpoint = "e"
        every = "1h"
        cron = "0 3 * * *"
     """, {}, ["[schedule.nightly]", "exactly one of"], 5),
    ("schedule-no-kind", """
        [target.a]
        cmd = "true"
        [endpoint.e]
        targets = ["a"]
        [schedule.nightly]
        endpoint = "e"
     """, {}, ["[schedule.nightly]", "exactly one of"], 5),
    ("schedule-bad-cron", """
        [target.a]
        cmd = "true"
        [endpoint.e]
        targets = ["a"]
        [schedule.nightly]
        endpoint = "e"
        cron = "0 3 * *"
     """, {}, ["[schedule.nightly]", "cron '0 3 * *' is not a valid 5-field"], 7),
    ("schedule-bad-every", """
        [target.a]
        cmd = "true"
        [endpoint.e]
        targets = ["a"]
        [schedule.s]
        endpoint = "e"
        every = "soon"
     """, {}, ["[schedule.s] every 'soon' is not a duration"], 7),
    ("schedule-unknown-endpoint", """
        [target.a]
        cmd = "true"
        [endpoint.retrain]
        targets = ["a"]
        [schedule.s]
        endpoint = "retrian"
        every = "1h"
     """, {}, ["endpoint 'retrian' is not defined", "Did you mean 'retrain'?"], 6),
    ("endpoint-unknown-target", """
        [target.evaluate]
        cmd = "true"
        [endpoint.e]
        targets = ["evalute"]
     """, {}, ["[endpoint.e]", "unknown target 'evalute'", "Did you mean 'evaluate'?"], 4),
    ("endpoint-unknown-param", """
        [target.a]
        cmd = "true"
        [endpoint.e]
        targets = ["a"]
        params = ["train.rl"]
     """, PARAMS, ["[endpoint.e]", "unknown param 'train.rl'", "Did you mean 'train.lr'?"], 5),
    ("outs-a-string", """
        [target.a]
        cmd = "true"
        outs = "model.pkl"
     """, {}, ["target 'a': outs must be a list of strings, not a string",
               'Write outs = ["model.pkl"]'], 3),
    ("deps-a-string", """
        [target.a]
        cmd = "true"

        deps = "src/a.py"
     """, {}, ["target 'a': deps must be a list of strings", 'deps = ["src/a.py"]'], 4),
    ("metrics-a-string", """
        [target.a]
        cmd = "true"
        metrics = "m.json"
     """, {}, ['metrics must be a list of strings', 'metrics = ["m.json"]'], 3),
    ("after-a-string", """
        [target.a]
        cmd = "true"
        [target.b]
        cmd = "true"
        after = "a"
     """, {}, ['after must be a list of strings', 'after = ["a"]'], 5),
    ("params-a-string", """
        [target.a]
        cmd = "true"
        params = "train"
     """, PARAMS, ['params must be a list of strings', 'params = ["train"]'], 3),
    ("project-default-a-string", """
        [project]
        default = "a"
        [target.a]
        cmd = "true"
     """, {}, ['[project] default must be a list of strings', 'default = ["a"]'], 2),
    ("endpoint-targets-a-string", """
        [target.a]
        cmd = "true"
        [endpoint.e]
        targets = "a"
     """, {}, ['[endpoint.e] targets must be a list of strings', 'targets = ["a"]'], 4),
    ("outs-a-number-list", """
        [target.a]
        cmd = "true"
        outs = [1, 2]
     """, {}, ["outs must be a list of strings, not a list with other values"], 3),
    ("cmd-list-of-shell-lines", """
        [target.a]
        cmd = ["mkdir -p out", "touch out/x"]
     """, {}, ["cmd = [...] is the exec form", '"mkdir -p out" is not a program name',
               'cmd = "mkdir -p out && touch out/x"'], 2),
    ("cmd-list-with-a-number", """
        [target.a]
        cmd = ["sleep", 1]
     """, {}, ["cmd is a list, so each item is one argument and must be a string"], 2),
    ("cmd-empty-list", """
        [target.a]
        cmd = []
     """, {}, ["target 'a' has an empty `cmd`"], 2),
    ("cmd-a-number", """
        [target.a]
        cmd = 3
     """, {}, ["target 'a': cmd must be a string, not int"], 2),
    ("missing-params-file", """
        [project]
        params = ["nope.yaml"]
        [target.a]
        cmd = "true"
     """, {}, ["params file 'nope.yaml' does not exist"], 2),
]


@pytest.mark.parametrize("text, files, needles, line", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_mlfile_message_names_the_problem_and_line(tmp_path: Path, text: str,
                                                      files: dict[str, str],
                                                      needles: list[str], line: int | None):
    with pytest.raises(MlfileError) as info:
        parse(tmp_path, text, files)
    err = info.value
    for needle in needles:
        assert needle in str(err)
    assert err.line == line, str(err)
    if line is not None:
        assert str(err).startswith(f"Mlfile:{line}")


def test_invalid_toml_gives_line_and_column(tmp_path: Path):
    with pytest.raises(MlfileError) as info:
        parse(tmp_path, '[target.a]\ncmd = "true"\ndeps = [\n  "a",,\n]\n')
    err = info.value
    assert (err.file, err.line) == ("Mlfile", 4)
    assert err.column is not None
    assert str(err).startswith(f"Mlfile:4:{err.column}: invalid TOML")


@pytest.mark.parametrize("name, content, line", [
    ("params.json", '{\n  "train": {"lr": 0.1,}\n}', 2),
    ("params.yaml", "train:\n  lr: [0.1\n", 3),
    ("params.toml", "[train]\nlr = \n", 2),
])
def test_invalid_params_file_names_the_file_and_line(tmp_path: Path, name: str, content: str,
                                                     line: int):
    (tmp_path / name).write_text(content)
    with pytest.raises(MlfileError) as info:
        parse(tmp_path, '[target.a]\ncmd = "true"\n')
    assert info.value.file == name
    assert info.value.line == line


def test_message_names_the_mlfile_by_its_own_name(tmp_path: Path):
    with pytest.raises(MlfileError) as info:
        mlfile.parse('[target.a]\ncmd = ""\n', str(tmp_path / "pipeline.toml"))
    assert str(info.value).startswith("pipeline.toml:2: ")


def test_unknown_top_level_table_reports_its_line(tmp_path: Path):
    with pytest.raises(MlfileError) as info:
        parse(tmp_path, """
            [target.a]
            cmd = "true"

            [targte.b]
            cmd = "true"
        """)
    assert "unknown key 'targte'" in str(info.value)
    assert info.value.line == 4


def test_unknown_top_level_dotted_key_reports_its_line(tmp_path: Path):
    with pytest.raises(MlfileError) as info:
        parse(tmp_path, """
            # a comment
            targte.b.cmd = "true"
            [target.a]
            cmd = "true"
        """)
    assert "unknown key 'targte'" in str(info.value)
    assert info.value.line == 2


def test_unknown_top_level_array_of_tables_reports_its_line(tmp_path: Path):
    with pytest.raises(MlfileError) as info:
        parse(tmp_path, """
            [target.a]
            cmd = "true"
            [[targets]]
            cmd = "true"
        """)
    assert "unknown key 'targets'" in str(info.value)
    assert info.value.line == 3


@pytest.mark.parametrize("cron", ["61 * * * *", "0 25 * * *", "0 3 32 * *", "0 3 * 13 *",
                                  "0 3 0 * *", "0 3 * 0 *", "0 3 * * 8", "*/0 * * * *",
                                  "0 3 * * jan", "0 3 * foo *", "x * * * *", "0 3 * * 1-8"])
def test_cron_fields_out_of_range_are_rejected(tmp_path: Path, cron: str):
    with pytest.raises(MlfileError, match="not a valid 5-field cron"):
        parse(tmp_path, f"""
            [target.a]
            cmd = "true"
            [endpoint.e]
            targets = ["a"]
            [schedule.s]
            endpoint = "e"
            cron = "{cron}"
        """)


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 * * * *", "0-59/5 0-23 1-31 1-12 0-7",
                                  "0 9 1,15 * mon-fri", "0 0 * JAN-mar SUN", "30 2 * * 7",
                                  "5/15 * * * *"])
def test_cron_fields_in_range_are_accepted(tmp_path: Path, cron: str):
    p = parse(tmp_path, f"""
        [target.a]
        cmd = "true"
        [endpoint.e]
        targets = ["a"]
        [schedule.s]
        endpoint = "e"
        cron = "{cron}"
    """)
    assert p.schedules["s"].cron == cron


def test_missing_params_file_error_names_the_mlfile_in_use(tmp_path: Path):
    with pytest.raises(MlfileError) as info:
        mlfile.parse('[project]\nparams = ["nope.toml"]\n[target.a]\ncmd = "true"\n',
                     str(tmp_path / "pipeline.toml"))
    assert info.value.file == "pipeline.toml"


def test_params_file_with_a_bad_extension_names_the_mlfile_and_line(tmp_path: Path):
    (tmp_path / "params.ini").write_text("[x]\n")
    with pytest.raises(MlfileError) as info:
        mlfile.parse('[target.a]\ncmd = "true"\n[project]\nparams = ["params.ini"]\n',
                     str(tmp_path / "pipeline.toml"))
    assert (info.value.file, info.value.line) == ("pipeline.toml", 4)
    assert "must end in .toml, .yaml, .yml or .json" in str(info.value)
