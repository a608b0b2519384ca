"""Environment digests, requirements references, Dockerfile bases and container settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlmake import envs
from mlmake.envs import docker as docker_env
from mlmake.executors.base import Job
from mlmake.hashing import Hasher
from mlmake.model import EnvSpec, Resources, Target

# a change here changes the key of every target that runs in a named image
PINNED_IMAGE_DIGEST = "1abe7914b54778f32e99cdc645123047"


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def test_image_env_digest_is_pinned(tmp_path: Path):
    spec = EnvSpec("bb", "image", image="busybox:1.36")
    assert envs.spec_digest(spec, Hasher(str(tmp_path))) == PINNED_IMAGE_DIGEST
    other = EnvSpec("bb", "image", image="busybox:1.36", network="host")
    assert envs.spec_digest(other, Hasher(str(tmp_path))) != PINNED_IMAGE_DIGEST


def test_the_env_name_is_not_part_of_the_digest(tmp_path: Path):
    h = Hasher(str(tmp_path))
    assert envs.spec_digest(EnvSpec("a", "image", image="x:1"), h) == \
        envs.spec_digest(EnvSpec("b", "image", image="x:1"), h)


def test_requirements_refs_follow_includes_and_local_packages(tmp_path: Path):
    write(tmp_path, {
        "envs/req.txt": "numpy==1.26  # from the index\n-r base.txt\n--constraint=c.txt\n"
                        "./wheels/pkg-1-py3-none-any.whl\n-e ./src/mypkg[extra]\n"
                        "https://example.invalid/x.whl\n-r https://example.invalid/r.txt\n",
        "envs/base.txt": "../tools/tool.whl\n",
        "envs/c.txt": "numpy<2\n",
        "envs/wheels/pkg-1-py3-none-any.whl": b"wheel",
        "envs/src/mypkg/pyproject.toml": "[project]\nname = 'mypkg'\n",
        "tools/tool.whl": b"tool",
    })
    refs = dict((p, d) for p, d in envs.requirement_refs("envs/req.txt", Hasher(str(tmp_path))))
    assert set(refs) == {"envs/base.txt", "envs/c.txt", "envs/wheels/pkg-1-py3-none-any.whl",
                         "envs/src/mypkg", "tools/tool.whl"}
    assert all(refs.values())


def test_build_leftovers_in_a_local_package_do_not_change_the_digest(tmp_path: Path):
    write(tmp_path, {"req.txt": "./pkg\n", "pkg/pyproject.toml": "[project]\nname='p'\n",
                     "pkg/p/__init__.py": "X = 1\n"})
    spec = EnvSpec("e", "venv", requirements="req.txt")
    before = envs.spec_digest(spec, Hasher(str(tmp_path)))
    write(tmp_path, {"pkg/build/lib/p/__init__.py": "X = 1\n", "pkg/p.egg-info/PKG-INFO": "",
                     "pkg/p/__pycache__/__init__.cpython-311.pyc": b"\0"})
    assert envs.spec_digest(spec, Hasher(str(tmp_path))) == before
    write(tmp_path, {"pkg/p/__init__.py": "X = 2\n"})
    assert envs.spec_digest(spec, Hasher(str(tmp_path))) != before


def test_a_plain_requirements_file_keeps_its_digest_format(tmp_path: Path):
    write(tmp_path, {"req.txt": "numpy==1.26\n"})
    h = Hasher(str(tmp_path))
    assert envs.requirement_refs("req.txt", h) == []


@pytest.mark.parametrize("text,want", [
    ("# only a comment\n\n", False),
    ("  \n# c\n", False),
    ("numpy\n", True),
    ("--index-url https://x.invalid/simple\n", True),
])
def test_has_requirements(tmp_path: Path, text: str, want: bool):
    write(tmp_path, {"r.txt": text})
    assert envs.has_requirements(str(tmp_path / "r.txt")) is want


def test_base_images_of_a_dockerfile():
    text = """
        ARG PY=3.11
        ARG BASE
        # FROM commented:out
        FROM --platform=linux/amd64 python:${PY}-slim AS build
        RUN pip wheel .
        FROM build AS test
        FROM scratch
        FROM \\
          busybox:1.36
        COPY --from=build /w /w
        FROM python:${PY}-slim
    """
    assert docker_env.base_images(text) == ["python:3.11-slim", "busybox:1.36"]


@pytest.mark.parametrize("name,repo", [("sk", "mlmake-env/sk"),
                                       ("My_Env.2", "mlmake-env/my-env-2"),
                                       ("__", "mlmake-env/env")])
def test_image_repositories_are_valid_docker_names(name: str, repo: str):
    assert docker_env.image_repo(name) == repo


def test_image_tag_follows_the_digest_and_the_base_ids():
    spec = EnvSpec("sk", "docker", dockerfile="Dockerfile", context=".")
    a = docker_env.image_tag(spec, "d1", ["sha256:aaa"])
    assert a.startswith("mlmake-env/sk:") and len(a.split(":")[1]) == 16
    assert a == docker_env.image_tag(spec, "d1", ["sha256:aaa"])
    assert a != docker_env.image_tag(spec, "d2", ["sha256:aaa"])
    assert a != docker_env.image_tag(spec, "d1", ["sha256:bbb"])


def test_the_context_leaves_out_mlmake_state_and_dockerignored_files(tmp_path: Path):
    write(tmp_path, {"Dockerfile": "FROM x\n", "src/a.py": "", ".mlmake/cache/o": "",
                     ".git/HEAD": "", "data/big.bin": b"\0"})
    spec = EnvSpec("e", "docker", dockerfile="Dockerfile", context=".")
    assert docker_env.context_files(spec, str(tmp_path)) == ["Dockerfile", "data/big.bin",
                                                             "src/a.py"]
    write(tmp_path, {".dockerignore": "data\n"})
    assert docker_env.context_files(spec, str(tmp_path)) == [".dockerignore", "Dockerfile",
                                                             "src/a.py"]


def _job(tmp_path: Path, pinned: tuple[str, ...] = (), **res: float) -> Job:
    t = Target(name="train@rf-0", base="train", cmd="python train.py", wdir="src",
               resources=Resources(cpus=res.get("cpus", 1.0), gpus=res.get("gpus", 0.0),
                                   memory=int(res.get("memory", 0))))
    return Job(target=t, root=str(tmp_path), log_path=str(tmp_path / "log"), gpus=pinned,
               env={"MLMAKE_TARGET": t.name})


def test_container_settings_for_a_job(tmp_path: Path):
    rt = envs.Runtime("sk", "docker", "d", image="mlmake-env/sk:0123", network="none")
    cfg = docker_env.container_config(_job(tmp_path, cpus=2, memory=2**30), rt, 1234, 567)
    assert cfg["image"] == "mlmake-env/sk:0123"
    assert cfg["command"] == ["sh", "-c", "python train.py"]
    assert cfg["user"] == "1234:567"
    assert cfg["working_dir"] == str(tmp_path / "src")
    assert cfg["volumes"] == {str(tmp_path): {"bind": str(tmp_path), "mode": "rw"}}
    assert cfg["network_mode"] == "none"
    assert cfg["nano_cpus"] == 2_000_000_000 and cfg["mem_limit"] == 2**30
    assert cfg["environment"]["MLMAKE_TARGET"] == "train@rf-0"
    assert "CUDA_VISIBLE_DEVICES" not in cfg["environment"]
    assert "device_requests" not in cfg
    assert cfg["labels"]["mlmake.target"] == "train@rf-0"
    assert "@" not in cfg["name"]


def test_containers_get_the_gpus_the_scheduler_pinned(tmp_path: Path):
    rt = envs.Runtime("cuda", "docker", "d", image="img", network="host")
    cfg = docker_env.container_config(_job(tmp_path, ("2", "5"), gpus=2), rt)
    [req] = cfg["device_requests"]
    assert req["DeviceIDs"] == ["2", "5"] and req["Capabilities"] == [["gpu"]]
    assert cfg["network_mode"] == "host"
    cfg = docker_env.container_config(_job(tmp_path, (), gpus=1.5), rt)
    assert cfg["device_requests"][0]["Count"] == 2


def test_a_venv_runtime_puts_its_bin_first_and_unsets_pythonhome():
    rt = envs.Runtime("sk", "venv", "d", prefix="/p/.mlmake/envs/.real/sk-1")
    env = rt.environ({"PATH": "/usr/bin", "PYTHONHOME": "/x", "KEEP": "1"})
    assert env["PATH"] == f"/p/.mlmake/envs/.real/sk-1/bin{os.pathsep}/usr/bin"
    assert env["VIRTUAL_ENV"] == "/p/.mlmake/envs/.real/sk-1"
    assert "PYTHONHOME" not in env and env["KEEP"] == "1"
