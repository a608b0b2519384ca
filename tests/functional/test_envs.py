"""Environments: venvs from requirements files and Docker images, built once per digest.

The venv tests need no network: the requirements name a wheel that lives in the project.
The container tests use a real Docker engine (see tests/docker_engine.py) and skip, with
the reason, where none can be started.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import MLMAKE, missing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import docker_engine


def wheel(value: int, name: str = "tinypkg", version: str = "0.1") -> bytes:
    """A pure-Python wheel whose module holds VALUE = value (installs offline)."""
    files = {f"{name}/__init__.py": f"VALUE = {value}\n",
             f"{name}-{version}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{name}-{version}.dist-info/WHEEL":
                 "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                 "Tag: py3-none-any\n"}
    record = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
            record.append(f"{path},sha256={digest.rstrip(b'=').decode()},{len(text)}")
        record.append(f"{name}-{version}.dist-info/RECORD,,")
        z.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return buf.getvalue()


WHEEL = "tinypkg-0.1-py3-none-any.whl"

VENV_PROJECT = {
    "envs/sk.txt": f"# the project's own package, as a wheel beside this file\n./{WHEEL}\n",
    f"envs/{WHEEL}": wheel(1),
    "envs/other.txt": "# nothing to install\n",
    "show.py": """
        import json, os, shutil, sys
        try:
            import tinypkg
            value = tinypkg.VALUE
        except ImportError:
            value = None
        print(json.dumps({"virtual_env": os.environ.get("VIRTUAL_ENV"), "prefix": sys.prefix,
                          "python": shutil.which("python"), "value": value,
                          "pythonhome": os.environ.get("PYTHONHOME")}))
    """,
    "Mlfile": """
        [env.sk]
        requirements = "envs/sk.txt"

        [env.other]
        requirements = "envs/other.txt"

        [target.a]
        cmd = "python show.py > a.json"
        deps = ["show.py"]
        env = "sk"
        outs = ["a.json"]

        [target.b]
        cmd = "python show.py > b.json"
        deps = ["show.py"]
        env = "sk"
        outs = ["b.json"]

        [target.c]
        cmd = "python show.py > c.json"
        deps = ["show.py"]
        env = "other"
        outs = ["c.json"]

        [target.host]
        cmd = "python show.py > host.json"
        deps = ["show.py"]
        outs = ["host.json"]
    """,
}


def env_links(repo, name: str) -> list[str]:
    d = repo.path / ".mlmake" / "envs"
    return sorted(p.name for p in d.iterdir() if p.name.startswith(name + "-")) \
        if d.is_dir() else []


def real_dirs(repo) -> list[str]:
    d = repo.path / ".mlmake" / "envs" / ".real"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_command_runs_in_the_venv_of_its_env(repo):
    repo.write(VENV_PROJECT)
    r = repo.mlmake("-j", "4", env={"PYTHONHOME": ""})
    assert r.code == 0, r.text
    [link] = env_links(repo, "sk")
    venv = os.path.realpath(repo.path / ".mlmake" / "envs" / link)
    a = json.loads(repo.read("a.json"))
    assert a["virtual_env"] == venv and os.path.realpath(a["prefix"]) == venv
    assert a["python"] == os.path.join(venv, "bin", "python")
    assert a["value"] == 1 and a["pythonhome"] is None
    assert json.loads(repo.read("c.json"))["value"] is None  # its own env, without tinypkg
    host = json.loads(repo.read("host.json"))
    assert host["value"] is None and os.path.realpath(host["prefix"]) != venv
    # one build per env although a and b started together
    assert r.out.count("building environment 'sk'") == 1
    assert r.out.count("building environment 'other'") == 1


def test_a_second_run_recreates_nothing_and_runs_nothing(repo):
    repo.write(VENV_PROJECT)
    assert repo.mlmake().code == 0
    [link] = env_links(repo, "sk")
    path = repo.path / ".mlmake" / "envs" / link
    inode = os.stat(path).st_ino
    r = repo.mlmake()
    assert r.code == 0 and "ran 0" in r.out, r.text
    assert "building environment" not in r.out
    assert os.stat(path).st_ino == inode and env_links(repo, "sk") == [link]
    assert repo.mlmake("status").code == 0


def test_changing_requirements_reruns_exactly_the_targets_using_that_env(repo):
    repo.write(VENV_PROJECT)
    assert repo.mlmake().code == 0
    before = repo.executed()
    repo.write({"envs/sk.txt": f"./{WHEEL}  # same package, edited file\n"})
    st = repo.mlmake("status")
    assert st.code == 1
    assert st.out.count("environment 'sk' changed") == 2, st.out
    assert "stale: c" not in st.out and "stale: host" not in st.out
    r = repo.mlmake()
    assert r.code == 0, r.text
    assert sorted(repo.executed()[:len(repo.executed()) - len(before)]) == ["a", "b"]
    assert len(env_links(repo, "sk")) == 2  # the old env stays until `envs prune`


def test_a_new_local_package_changes_the_env(repo):
    repo.write(VENV_PROJECT)
    assert repo.mlmake("a").code == 0
    repo.write({f"envs/{WHEEL}": wheel(2)})
    st = repo.mlmake("status", "a")
    assert st.code == 1 and "environment 'sk' changed" in st.out
    assert repo.mlmake("a").code == 0
    assert json.loads(repo.read("a.json"))["value"] == 2


def test_a_failed_install_fails_the_target_with_pips_output_and_leaves_no_env(repo):
    repo.write(VENV_PROJECT)
    repo.write({"envs/sk.txt": "./missing-0.1-py3-none-any.whl\n"})
    r = repo.mlmake("-k", "-j", "4")
    assert r.code == 1
    assert "environment 'sk' could not be built" in r.err
    assert "✓ c" in r.out and "✓ host" in r.out  # other envs and the host are unaffected
    assert r.out.count("building environment 'sk'") == 1  # tried once, not per target
    log = repo.mlmake("log", "a")
    # the installer's own output: uv's when it is on PATH (it is then used), else pip's
    said = "error: Distribution not found" if "with uv)" in log.out else "ERROR"
    assert "missing-0.1-py3-none-any.whl" in log.out and said in log.out, log.out
    assert "could not be built" in log.out
    assert env_links(repo, "sk") == []
    assert all(not d.startswith("sk-") for d in real_dirs(repo))
    lock = json.loads(repo.read("Mlfile.lock"))
    assert "a" not in lock["targets"] and "b" not in lock["targets"]


def test_two_processes_build_one_env_once(repo):
    repo.write(VENV_PROJECT)
    procs = [subprocess.Popen([*MLMAKE, "envs", "build", "sk"], cwd=repo.path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    text = "".join(o + e for o, e in outs)
    assert text.count("building environment 'sk'") == 1
    assert len(env_links(repo, "sk")) == 1 and len(real_dirs(repo)) == 1


def test_envs_list_build_and_prune(repo):
    repo.write(VENV_PROJECT)
    repo.write({"Mlfile": VENV_PROJECT["Mlfile"] + """
        [env.spare]
        requirements = "envs/other.txt"
    """})
    ls = repo.mlmake("envs", "list", "--json")
    assert ls.code == 0, ls.text
    data = {e["name"]: e for e in ls.json()["envs"]}
    assert data["sk"]["state"] == "missing" and data["sk"]["targets"] == ["a", "b"]
    assert data["spare"]["targets"] == []
    b = repo.mlmake("envs", "build", "sk", "spare")
    assert b.code == 0, b.text
    assert "✓ sk: .mlmake/envs/sk-" in b.out
    assert repo.mlmake("envs", "build", "nope").code == 2
    text = repo.mlmake("envs", "list").out
    assert "sk" in text and "built" in text and "used by a, b" in text
    # a requirements change leaves the old venv unused; `spare` is used by no target
    repo.write({"envs/sk.txt": f"./{WHEEL}\n"})
    assert repo.mlmake("a").code == 0
    unused = [u["location"] for u in repo.mlmake("envs", "list", "--json").json()["unused"]]
    assert len(unused) == 2 and all(u.startswith(".mlmake/envs/") for u in unused)
    dry = repo.mlmake("envs", "prune", "-n")
    assert dry.code == 0 and "would remove 2 environments" in dry.out
    assert len(env_links(repo, "sk")) == 2
    pr = repo.mlmake("envs", "prune")
    assert pr.code == 0 and "removed 2 environments" in pr.out, pr.text
    assert len(env_links(repo, "sk")) == 1 and env_links(repo, "spare") == []
    assert len(real_dirs(repo)) == 1
    assert repo.mlmake("envs", "list", "--json").json()["unused"] == []
    r = repo.mlmake("a")  # the env in use survived
    assert r.code == 0 and "building environment" not in r.out


# -- bad input: exit 2, a message naming the env, nothing run --------------------------------
GOOD_TARGET = """
    [target.t]
    cmd = "echo ran > t.txt"
    outs = ["t.txt"]
    env = "e"
"""


@pytest.mark.parametrize("name,files,env,expect", [
    ("unknown-env", {"Mlfile": GOOD_TARGET}, {},
     ["target 't' uses env 'e', but no [env.e] table defines it"]),
    ("missing-requirements", {"Mlfile": '[env.e]\nrequirements = "req.txt"\n' + GOOD_TARGET},
     {}, ["[env.e] requirements 'req.txt' does not exist"]),
    ("missing-dockerfile", {"Mlfile": '[env.e]\ndockerfile = "Dockerfile"\n' + GOOD_TARGET},
     {}, ["[env.e] dockerfile 'Dockerfile' does not exist"]),
    ("missing-context", {"Mlfile": '[env.e]\ndockerfile = "Dockerfile"\ncontext = "ctx"\n'
                         + GOOD_TARGET, "Dockerfile": "FROM scratch\n"},
     {}, ["[env.e] context 'ctx' is not a directory"]),
    ("no-interpreter", {"Mlfile": '[env.e]\nrequirements = "req.txt"\npython = "2.1"\n'
                        + GOOD_TARGET, "req.txt": "\n"},
     {}, ["[env.e] python = '2.1'", "target 't'", "python2.1"]),
    ("no-docker-engine", {"Mlfile": '[env.e]\ndockerfile = "Dockerfile"\n' + GOOD_TARGET,
                          "Dockerfile": "FROM scratch\n"},
     {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
     ["environment 'e'", "target 't'", "unix:///nonexistent/docker.sock (from DOCKER_HOST)"]),
    ("no-engine-for-an-image", {"Mlfile": '[env.e]\nimage = "busybox:1"\n' + GOOD_TARGET},
     {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
     ["environment 'e'", "the Docker image 'busybox:1'", "DOCKER_HOST"]),
])
def test_bad_env_input_exits_2_naming_the_env(repo, name, files, env, expect):
    repo.write(files)
    r = repo.mlmake(env=env)
    assert r.code == 2, r.text
    for e in expect:
        assert e in r.err, r.err
    assert r.err.count("error:") == 1 and "Traceback" not in r.err
    assert not repo.exists("t.txt") and not repo.exists("Mlfile.lock")


def test_no_engine_at_the_default_socket_says_where_it_looked(repo, monkeypatch):
    if os.path.exists("/var/run/docker.sock"):
        pytest.skip("an engine may answer at the default socket on this machine")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    repo.write({"Mlfile": '[env.e]\nimage = "busybox:1"\n' + GOOD_TARGET})
    r = repo.mlmake()
    assert r.code == 2
    assert "unix:///var/run/docker.sock (the default socket; DOCKER_HOST is not set)" in r.err


def test_an_up_to_date_container_target_needs_no_engine(repo, engine):
    repo.write({"Mlfile": f'[env.e]\nimage = "{engine.base_image}"\n' + GOOD_TARGET})
    assert repo.mlmake(env={"DOCKER_HOST": engine.host}).code == 0
    r = repo.mlmake(env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.code == 0 and "up to date 1" in r.out, r.text


# -- containers ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def engine():
    got = docker_engine.start()
    if isinstance(got, str):
        missing(got)
    yield got
    got.stop()


def images(engine, repo_name: str) -> dict[str, str]:
    c = engine.client()
    try:
        return {t: img.id for img in c.images.list(name=repo_name) for t in img.tags}
    finally:
        c.close()


def box_project(engine, tmp_path) -> dict[str, str]:
    # the test's own path in the Dockerfile: no image from another test has this tag
    return {
        "envs/box.Dockerfile": f"""
            FROM {engine.base_image}
            # {tmp_path}
            RUN echo built > /built.txt
        """,
        "envs/note.txt": "part of the build context\n",
        "Mlfile": """
            [env.box]
            dockerfile = "envs/box.Dockerfile"
            context = "envs"

            [target.inbox]
            cmd = "mkdir -p out && { cat /built.txt; id -u; id -g; pwd; } > out/box.txt"
            env = "box"
            outs = ["out/box.txt"]

            [target.plain]
            cmd = "echo plain > plain.txt"
            outs = ["plain.txt"]
        """,
    }


def test_a_dockerfile_env_is_built_once_and_runs_as_the_caller(repo, engine, tmp_path):
    repo.write(box_project(engine, tmp_path))
    env = {"DOCKER_HOST": engine.host}
    r = repo.mlmake(env=env)
    assert r.code == 0, r.text
    assert r.out.count("building image mlmake-env/box:") == 1
    built, uid, gid, cwd = repo.read("out/box.txt").split()
    assert built == "built" and cwd == str(repo.path)
    assert (int(uid), int(gid)) == (os.getuid(), os.getgid())  # ran with --user uid:gid
    assert os.stat(repo.path / "out" / "box.txt").st_uid == os.getuid()
    tags = images(engine, "mlmake-env/box")
    assert len(tags) == 1

    again = repo.mlmake(env=env)
    assert again.code == 0 and "ran 0" in again.out and "building image" not in again.out
    assert images(engine, "mlmake-env/box") == tags

    repo.write({"envs/box.Dockerfile": repo.read("envs/box.Dockerfile") + "RUN true\n"})
    st = repo.mlmake("status", env=env)
    assert st.code == 1 and "environment 'box' changed" in st.out and "plain" not in st.out
    before = len(repo.executed())
    r = repo.mlmake(env=env)
    assert r.code == 0 and "building image mlmake-env/box:" in r.out, r.text
    assert repo.executed()[:len(repo.executed()) - before] == ["inbox"]
    assert len(images(engine, "mlmake-env/box")) == 2

    # the old image is unused now: list shows it, prune removes it and keeps the new one
    ls = repo.mlmake("envs", "list", "--json", env=env).json()
    [box] = ls["envs"]
    assert box["state"] == "built" and box["location"].startswith("mlmake-env/box:")
    assert [u["kind"] for u in ls["unused"]] == ["image"]
    pr = repo.mlmake("envs", "prune", env=env)
    assert pr.code == 0 and "removed 1 environments" in pr.out, pr.text
    assert list(images(engine, "mlmake-env/box")) == [box["location"]]


def test_editing_the_context_changes_the_env_but_ignored_files_do_not(repo, engine,
                                                                      tmp_path):
    repo.write(box_project(engine, tmp_path))
    repo.write({"envs/.dockerignore": "scratch/\n"})
    env = {"DOCKER_HOST": engine.host}
    assert repo.mlmake(env=env).code == 0
    repo.write({"envs/scratch/junk.txt": "ignored by docker\n"})
    assert repo.mlmake("status", env=env).code == 0
    repo.write({"envs/note.txt": "changed\n"})
    st = repo.mlmake("status", env=env)
    assert st.code == 1 and "environment 'box' changed" in st.out


def test_a_failed_image_build_fails_the_target_with_the_build_output(repo, engine, tmp_path):
    files = box_project(engine, tmp_path)
    files["envs/box.Dockerfile"] += "RUN echo about to fail && exit 3\n"
    repo.write(files)
    before = images(engine, "mlmake-env/box")
    r = repo.mlmake("-k", env={"DOCKER_HOST": engine.host})
    assert r.code == 1 and "✓ plain" in r.out
    assert "environment 'box' could not be built" in r.err
    log = repo.mlmake("log", "inbox").out
    assert "about to fail" in log and "non-zero code: 3" in log
    assert images(engine, "mlmake-env/box") == before  # nothing tagged


def test_a_named_image_is_used_as_it_is(repo, engine):
    repo.write({"Mlfile": f"""
        [env.bb]
        image = "{engine.base_image}"

        [target.t]
        cmd = "ls /bin/busybox > t.txt; echo to-stderr >&2"
        env = "bb"
        outs = ["t.txt"]
    """})
    r = repo.mlmake(env={"DOCKER_HOST": engine.host})
    assert r.code == 0, r.text
    assert repo.read("t.txt") == "/bin/busybox\n"
    assert "[t] to-stderr" in r.out and "to-stderr" in repo.mlmake("log", "t").out
    assert "building image" not in r.out


def test_ctrl_c_stops_and_removes_the_container(repo, engine):
    repo.write({"Mlfile": f"""
        [env.bb]
        image = "{engine.base_image}"

        [target.slow]
        cmd = "echo started; sleep 60; echo done > slow.txt"
        env = "bb"
        outs = ["slow.txt"]
        resources = {{ cpus = 0.5, memory = "64MiB" }}
    """})
    env = dict(os.environ, DOCKER_HOST=engine.host)
    proc = subprocess.Popen([*MLMAKE, "slow"], cwd=repo.path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    c = engine.client()
    try:
        label = {"label": f"mlmake.project={repo.path}"}
        deadline = time.monotonic() + 30
        while not c.containers.list(filters=label) and time.monotonic() < deadline:
            time.sleep(0.1)
        [ct] = c.containers.list(filters=label)
        host = ct.attrs["HostConfig"]
        assert ct.attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
        assert ct.attrs["Config"]["WorkingDir"] == str(repo.path)
        assert host["NetworkMode"] == "none"
        assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 2**20
        assert f"{repo.path}:{repo.path}:rw" in host["Binds"]
        assert ct.attrs["Config"]["Labels"]["mlmake.target"] == "slow"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert c.containers.list(all=True, filters=label) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        c.close()
    assert not repo.exists("slow.txt")
