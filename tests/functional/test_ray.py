"""The Ray executor on a real two-node Ray cluster on this machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import MLMAKE, Repo

pytestmark = [pytest.mark.ray,
              pytest.mark.needs("ray", "Ray is not installed (pip install 'mlmake[ray]')")]


@pytest.fixture(scope="module")
def cluster():
    """A head node (CPU only) and a node declaring one GPU and a custom `bigmem` resource."""
    from ray.cluster_utils import Cluster

    # Ray workers take their environment from the cluster's start: give them the fake S3
    # credentials the `s3` fixture uses, as a real node would have its own.
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "fake-key-id",
                       "AWS_SECRET_ACCESS_KEY": "fake-secret-for-ray-nodes",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"})
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "object_store_memory": 80 * 2**20,
        "include_dashboard": False})
    gpu_node = c.add_node(num_cpus=2, num_gpus=1, resources={"bigmem": 1},
                          object_store_memory=80 * 2**20)
    c.wait_for_nodes()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    yield {"address": c.address, "head": c.head_node.node_id, "gpu": gpu_node.node_id}
    c.shutdown()


def ray_mlmake(repo: Repo, cluster, *args: str):
    return repo.mlmake("--executor", "ray", "--address", cluster["address"], *args,
                       timeout=180)


PIPELINE = {
    "params.toml": "[train]\nseed = 3\n",
    "data/raw.txt": "a\nb\nc\n",
    "Mlfile": """
        [target.prepare]
        cmd = "mkdir -p prep && sort -r data/raw.txt > prep/sorted.txt && echo prepared"
        deps = ["data/raw.txt"]
        outs = ["prep/"]

        [target.train]
        matrix = { model = ["a", "b"] }
        cmd = "mkdir -p models && (cat prep/sorted.txt; echo ${model} ${train.seed}) > models/${model}.txt"
        deps = ["prep/"]
        params = ["train"]
        outs = ["models/${model}.txt"]

        [target.report]
        cmd = "cat models/*.txt | wc -l > report.txt"
        deps = ["models/"]
        outs = ["report.txt"]
    """,
}


def test_same_outs_and_lock_under_local_and_ray(tmp_path, cluster):
    local, remote = Repo(tmp_path / "local"), Repo(tmp_path / "ray")
    for r in (local, remote):
        r.write(PIPELINE)
    assert local.mlmake().code == 0
    res = ray_mlmake(remote, cluster)
    assert res.code == 0, res.text
    assert "[prepare] prepared" in res.out  # output streamed back with its prefix
    assert "ran 4" in res.out
    assert local.read("Mlfile.lock") == remote.read("Mlfile.lock")
    for f in ("prep/sorted.txt", "models/a.txt", "models/b.txt", "report.txt"):
        assert local.read(f) == remote.read(f)
    runs = remote.runs()
    assert {r["executor"] for r in runs} == {"ray"}
    assert ray_mlmake(remote, cluster).out.count("✓") == 0  # then up to date


def test_resources_place_targets_on_the_right_node(repo, cluster):
    repo.write({"Mlfile": """
        [target.gpu]
        cmd = "echo $MLMAKE_RAY_NODE $CUDA_VISIBLE_DEVICES > gpu.txt"
        outs = ["gpu.txt"]
        resources = { gpus = 1 }

        [target.big]
        cmd = "echo $MLMAKE_RAY_NODE > big.txt"
        outs = ["big.txt"]
        resources = { bigmem = 1 }
    """})
    r = ray_mlmake(repo, cluster)
    assert r.code == 0, r.text
    node, cuda = repo.read("gpu.txt").split()
    assert node == cluster["gpu"] and cuda == "0"
    assert repo.read("big.txt").strip() == cluster["gpu"]
    hosts = {x["target"]: x["host"] for x in repo.runs()}
    assert hosts["gpu"] == cluster["gpu"]


def test_a_resource_no_node_has_fails_fast_naming_it(repo, cluster):
    repo.write({"Mlfile": """
        [target.tpu]
        cmd = "echo never > tpu.txt"
        outs = ["tpu.txt"]
        resources = { tpu = 1 }
    """})
    t0 = time.monotonic()
    r = ray_mlmake(repo, cluster)
    assert r.code == 1
    assert "no node of the Ray cluster has tpu=1" in r.err
    assert "GPU=1" in r.err and "bigmem=1" in r.err  # the nodes' capacities
    assert time.monotonic() - t0 < 60
    assert not repo.exists("tpu.txt")


def test_failure_carries_the_exit_code(repo, cluster):
    repo.write({"Mlfile": '[target.bad]\ncmd = "echo oops; exit 7"\nouts = ["x"]\n'})
    r = ray_mlmake(repo, cluster)
    assert r.code == 1 and "exit code 7" in r.err and "[bad] oops" in r.out
    assert repo.mlmake("log", "bad").out == "oops\n"


def test_ctrl_c_during_a_ray_run_leaves_no_task_process(repo, cluster):
    repo.write({"Mlfile": """
        [target.slow]
        cmd = "sh -c 'echo $$ > slow.pid; exec sleep 120'; echo done > slow.txt"
        outs = ["slow.txt"]
    """})
    proc = subprocess.Popen([*MLMAKE, "--executor", "ray", "--address", cluster["address"]],
                            cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 90
    while not (repo.exists("slow.pid") and repo.read("slow.pid").strip()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    child = int(repo.read("slow.pid"))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 15
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)
    assert "slow" not in json.loads(repo.read("Mlfile.lock") if repo.exists("Mlfile.lock")
                                    else '{"targets": {}}')["targets"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_without_ray_installed_the_executor_exits_2_with_the_hint(repo, tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    repo.write({"Mlfile": '[target.a]\ncmd = "echo a > a.txt"\nouts = ["a.txt"]\n'})
    r = repo.mlmake("--executor", "ray",
                    env={"PYTHONPATH": f"{tmp_path / 'noray'}{os.pathsep}"
                                       f"{os.environ.get('PYTHONPATH', '')}"})
    assert r.code == 2 and "pip install 'mlmake[ray]'" in r.err
    assert not repo.exists("a.txt")


def no_shared_fs(repo: Repo, remote_toml: str) -> None:
    mlfile = PIPELINE["Mlfile"].replace(
        'cmd = "cat models/*.txt | wc -l > report.txt"',
        'cmd = "cat models/*.txt | wc -l > report.txt && pwd > where.txt"').replace(
        'outs = ["report.txt"]', 'outs = ["report.txt", "where.txt"]')
    repo.write({**PIPELINE, "Mlfile": '[project]\nray_data = "remote"\nremote = "team"\n\n'
                "[remote.team]\n" + remote_toml + mlfile})


def team_remote(kind: str, tmp_path, request) -> str:
    """The [remote.team] settings of a directory remote or of the moto S3 server's bucket."""
    if kind == "dir":
        return f'url = "{tmp_path / "team-cache"}"\n'
    s3 = request.getfixturevalue("s3")
    return (f'url = "s3://{s3["bucket"]}/ray"\n'
            f'options = {{ endpoint_url = "{s3["endpoint"]}" }}\n')


@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_without_a_shared_filesystem_data_travels_through_the_remote(tmp_path, cluster, kind,
                                                                     request):
    toml = team_remote(kind, tmp_path, request)
    local, remote = Repo(tmp_path / "local"), Repo(tmp_path / "ray")
    no_shared_fs(local, toml)
    no_shared_fs(remote, toml)
    assert local.mlmake("--no-remote").code == 0
    r = ray_mlmake(remote, cluster, "--no-remote")
    assert r.code == 0, r.text
    where = remote.read("where.txt").strip()
    assert not where.startswith(str(remote.path))  # ran in a scratch directory
    assert "mlmake-scratch-" in where
    for f in ("prep/sorted.txt", "models/a.txt", "models/b.txt", "report.txt"):
        assert local.read(f) == remote.read(f)
    lock_l = json.loads(local.read("Mlfile.lock"))["targets"]
    lock_r = json.loads(remote.read("Mlfile.lock"))["targets"]
    for t in ("prepare", "train@a", "train@b"):
        assert lock_l[t] == lock_r[t]
    assert remote.mlmake("status").code == 0


def test_a_ray_task_runs_in_the_targets_virtualenv(repo, cluster):
    repo.write({"envs/tools.txt": "# nothing to install\n", "Mlfile": """
        [env.tools]
        requirements = "envs/tools.txt"

        [target.where]
        cmd = "echo $VIRTUAL_ENV > venv.txt && command -v python >> venv.txt"
        env = "tools"
        outs = ["venv.txt"]
    """})
    r = ray_mlmake(repo, cluster)
    assert r.code == 0, r.text
    venv, python = repo.read("venv.txt").split()
    assert "/.mlmake/envs/" in venv and "tools-" in venv and python.startswith(venv)


# -- experiments on Ray -------------------------------------------------------------------------
EXP_PROJECT = {
    "params.toml": "[train]\nseed = 0\n",
    "data/raw.txt": "b\na\nc\n",
    "Mlfile": """
        [target.prepare]
        cmd = "mkdir -p prep && sort data/raw.txt > prep/sorted.txt"
        deps = ["data/raw.txt"]
        outs = ["prep/"]

        [target.train]
        cmd = '''mkdir -p metrics && (cat prep/sorted.txt; echo seed ${train.seed}) > model.txt && printf '{"seed": %s}\\n' ${train.seed} > metrics/train.json && echo $MLMAKE_RAY_NODE > node.txt'''
        deps = ["prep/"]
        params = ["train"]
        outs = ["model.txt", "node.txt"]
        metrics = ["metrics/train.json"]
    """,
}


def fingerprint(repo: Repo) -> dict[str, bytes]:
    """Every file of the work tree outside .git and .mlmake, and the index, byte for byte."""
    return {p.relative_to(repo.path).as_posix(): p.read_bytes()
            for p in sorted(repo.path.rglob("*"))
            if p.is_file() and (not p.relative_to(repo.path).as_posix().startswith(
                (".git/", ".mlmake/")) or p.relative_to(repo.path).as_posix() == ".git/index")}


def experiments(repo: Repo) -> dict[str, dict]:
    r = repo.mlmake("exp", "show", "--json")
    assert r.code == 0, r.text
    return {row["name"]: row for row in r.json() if row["kind"] == "experiment"}


def exp_out(repo: Repo, rev: str, path: str, tmp_path) -> str:
    dest = tmp_path / f"{rev[:12]}-{path.replace('/', '_')}"
    r = repo.mlmake("get", rev, path, "-o", str(dest))
    assert r.code == 0, r.text
    return dest.read_text()


def test_a_grid_of_experiments_runs_side_by_side_on_ray(repo, cluster, tmp_path):
    repo.write(EXP_PROJECT)
    assert repo.mlmake("-q").code == 0
    repo.commit("baseline")
    before = fingerprint(repo)
    r = repo.mlmake("exp", "run", "-S", "train.seed=1,2", "--name", "seed", "-j", "2",
                    "--executor", "ray", "--address", cluster["address"], timeout=240)
    assert r.code == 0, r.text
    assert "experiment seed-1" in r.out and "experiment seed-2" in r.out
    assert "Error" not in r.text and "Traceback" not in r.text  # Ray stayed up for both
    assert fingerprint(repo) == before  # the work tree, Mlfile.lock and index untouched
    assert repo.git("worktree", "list").count("\n") == 1

    exps = experiments(repo)
    nodes = {cluster["head"], cluster["gpu"]}
    for seed in (1, 2):
        e = exps[f"seed-{seed}"]
        assert e["status"] == "succeeded" and e["overrides"] == {"train.seed": seed}
        assert e["metrics"] == {"metrics/train.json": {"seed": seed}}
        assert exp_out(repo, e["rev"], "model.txt", tmp_path) == f"a\nb\nc\nseed {seed}\n"
        assert exp_out(repo, e["rev"], "node.txt", tmp_path).strip() in nodes
    builds = {json.loads(repo.git("log", "-1", "--format=%b", e["rev"]))["run_id"]
              for e in exps.values()}
    ran = [x for x in repo.runs() if x["build"] in builds and x["outcome"] == "ran"]
    assert sorted(x["target"] for x in ran) == ["train", "train"]  # prepare reused
    assert {x["executor"] for x in ran} == {"ray"}


def test_queued_experiments_start_on_the_cluster_by_their_resources(repo, cluster, tmp_path):
    project = dict(EXP_PROJECT)
    project["Mlfile"] = EXP_PROJECT["Mlfile"].replace(
        'metrics = ["metrics/train.json"]',
        'metrics = ["metrics/train.json"]\n        resources = { gpus = 1 }').replace(
        "echo $MLMAKE_RAY_NODE > node.txt",
        "echo $MLMAKE_RAY_NODE $CUDA_VISIBLE_DEVICES > node.txt")
    repo.write(project)
    repo.commit("baseline")
    lock_before = repo.exists("Mlfile.lock")
    r = repo.mlmake("exp", "run", "--queue", "-S", "train.seed=3,4", "--name", "gpu")
    assert r.code == 0, r.text
    r = repo.mlmake("exp", "start", "-j", "2", "--executor", "ray", "--address",
                    cluster["address"], timeout=240)
    assert r.code == 0, r.text
    assert "Error" not in r.text and "Traceback" not in r.text
    assert repo.exists("Mlfile.lock") == lock_before and not repo.exists("node.txt")
    exps = experiments(repo)
    for seed in (3, 4):
        e = exps[f"gpu-{seed - 2}"]
        assert e["status"] == "succeeded"
        assert e["metrics"] == {"metrics/train.json": {"seed": seed}}
        node, cuda = exp_out(repo, e["rev"], "node.txt", tmp_path).split()
        assert node == cluster["gpu"] and cuda == "0"  # Ray placed it on the GPU node


def _ray_processes_under(path) -> list[str]:
    """The command lines of running processes that mention `path` (a Ray instance started
    with RAY_TMPDIR there keeps its sessions and logs under it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if str(path) in cmd:
            found.append(cmd)
    return found


def test_without_an_address_builds_and_experiments_join_the_running_cluster(repo, cluster,
                                                                             tmp_path):
    # Ray finds a running local cluster through its address file (here a private one, through
    # RAY_TMPDIR, so that other Ray instances on this machine don't interfere) and, with a
    # token at hand, turns token authentication on for it; the fixture's cluster does not use
    # tokens, so joining it as Ray would leaves its calls back refused and the output queue dead.
    ray_tmp = tmp_path / "raytmp"
    (ray_tmp / "ray").mkdir(parents=True)
    (ray_tmp / "ray" / "ray_current_cluster").write_text(cluster["address"])
    env = {"RAY_TMPDIR": str(ray_tmp), "RAY_ADDRESS": "",
           "RAY_AUTH_TOKEN": "mlmake-test-token-the-cluster-does-not-use"}
    repo.write(EXP_PROJECT)
    r = repo.mlmake("--executor", "ray", env=env, timeout=180)
    assert r.code == 0, r.text
    assert "ran 2" in r.out and "Traceback" not in r.text
    nodes = {cluster["head"], cluster["gpu"]}
    assert repo.read("node.txt").strip() in nodes  # ran on the running cluster, not a new one
    assert {x["host"] for x in repo.runs()} <= nodes

    repo.commit("baseline")
    r = repo.mlmake("exp", "run", "-S", "train.seed=1,2", "--name", "here", "-j", "2",
                    "--executor", "ray", env=env, timeout=240)
    assert r.code == 0, r.text
    assert "Error" not in r.text and "Traceback" not in r.text
    exps = experiments(repo)
    for seed in (1, 2):
        e = exps[f"here-{seed}"]
        assert e["status"] == "succeeded" and e["metrics"] == {"metrics/train.json":
                                                               {"seed": seed}}
        assert exp_out(repo, e["rev"], "node.txt", tmp_path).strip() in nodes
    assert _ray_processes_under(ray_tmp) == []  # no second Ray instance left behind


# -- data sources without a shared filesystem ---------------------------------------------------
SOURCED = {
    "data/raw/a.txt": "row a\n",
    "data/raw/sub/b.txt": "row b\n",
    "data/labels.csv": "id,label\n1,x\n",
    "Mlfile": """
        [target.join]
        cmd = "mkdir -p out && cat data/raw/a.txt data/raw/sub/b.txt data/labels.csv > out/all.txt && pwd > where.txt"
        deps = ["data/raw/", "data/labels.csv"]
        outs = ["out/", "where.txt"]

        [target.count]
        cmd = "wc -l < out/all.txt > count.txt && ls data/raw > listing.txt"
        deps = ["out/", "data/raw/"]
        outs = ["count.txt", "listing.txt"]
    """,
}


@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_tracked_data_sources_travel_to_ray_tasks_through_the_remote(tmp_path, cluster, kind,
                                                                      request):
    toml = team_remote(kind, tmp_path, request)
    local, remote = Repo(tmp_path / "local"), Repo(tmp_path / "ray")
    for r in (local, remote):
        r.write({**SOURCED, "Mlfile": '[project]\nray_data = "remote"\nremote = "team"\n\n'
                 "[remote.team]\n" + toml + SOURCED["Mlfile"]})
        for path in ("data/raw/", "data/labels.csv"):
            added = r.mlmake("add", path)
            assert added.code == 0, added.text
    assert local.mlmake("--no-remote").code == 0
    res = ray_mlmake(remote, cluster, "--no-remote")
    assert res.code == 0, res.text
    assert "mlmake-scratch-" in remote.read("where.txt")  # ran away from the project
    for f in ("out/all.txt", "count.txt", "listing.txt"):
        assert local.read(f) == remote.read(f)
    assert remote.read("out/all.txt") == "row a\nrow b\nid,label\n1,x\n"
    lock_l = json.loads(local.read("Mlfile.lock"))
    lock_r = json.loads(remote.read("Mlfile.lock"))
    assert lock_l["sources"] == lock_r["sources"]
    assert lock_l["targets"]["count"] == lock_r["targets"]["count"]
    assert remote.mlmake("status").code == 0


def test_experiments_on_ray_without_a_shared_filesystem_read_the_tracked_data(tmp_path,
                                                                             cluster):
    repo = Repo(tmp_path / "repo")
    mlfile = SOURCED["Mlfile"].replace(
        "ls data/raw > listing.txt", "ls data/raw > listing.txt && echo ${p.x} >> count.txt"
    ).replace('outs = ["count.txt", "listing.txt"]',
              'outs = ["count.txt", "listing.txt"]\n        params = ["p"]')
    repo.write({**SOURCED, "params.toml": "[p]\nx = 1\n", ".gitignore": "data/\n",
                "Mlfile": '[project]\nray_data = "remote"\nremote = "team"\n\n[remote.team]\n'
                          f'url = "{tmp_path / "team-cache"}"\n' + mlfile})
    for path in ("data/raw/", "data/labels.csv"):
        assert repo.mlmake("add", path).code == 0
    repo.commit("baseline")
    r = repo.mlmake("exp", "run", "-S", "p.x=5,6", "--name", "x", "-j", "2", "--executor",
                    "ray", "--address", cluster["address"], timeout=240)
    assert r.code == 0, r.text
    exps = experiments(repo)
    for name, x in (("x-1", 5), ("x-2", 6)):
        rev = exps[name]["rev"]
        assert exp_out(repo, rev, "out/all.txt", tmp_path) == "row a\nrow b\nid,label\n1,x\n"
        assert exp_out(repo, rev, "count.txt", tmp_path) == f"4\n{x}\n"
        assert "mlmake-scratch-" in exp_out(repo, rev, "where.txt", tmp_path)
