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


@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_without_a_shared_filesystem_data_travels_through_the_remote(tmp_path, cluster, kind,
                                                                     request):
    if kind == "dir":
        toml = f'url = "{tmp_path / "team-cache"}"\n'
    else:
        s3 = request.getfixturevalue("s3")
        toml = (f'url = "s3://{s3["bucket"]}/ray"\n'
                f'options = {{ endpoint_url = "{s3["endpoint"]}" }}\n')
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
