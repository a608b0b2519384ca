"""Ray executor: each runnable target is a Ray task placed by its resources (the only module
that imports Ray).

A task runs the command in its own process group on the node Ray chose and streams output
back in small batches through a Ray queue; cancelling a task kills its process group.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue as queue_mod
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mlmake.errors import ExecutorError, ExecutorSetupError, MlmakeError
from mlmake.executors.base import Capacity, Job, JobResult, OnLine
from mlmake.hashing import hash_bytes
from mlmake.model import OutRecord

try:
    import ray
    from ray.util.queue import Empty, Queue
except ImportError as exc:  # pragma: no cover - exercised where Ray is absent
    raise ExecutorSetupError("the Ray executor needs Ray: pip install 'mlmake[ray]'") \
        from exc

# What Ray's calls raise once the cluster, the queue actor or the task is gone (at shutdown,
# after a crash): its own errors (RaySystemError when disconnected, RayActorError, RpcError),
# ValueError for an object or handle it no longer knows, OSError from its core worker's I/O.
_RAY_GONE: tuple[type[BaseException], ...] = (ray.exceptions.RayError, ValueError, OSError)

_GRACE = 3.0
_BATCH_SECONDS = 0.1


def _set_pdeathsig() -> None:
    """Let the kernel kill the command if the Ray worker that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


NOT_SHARED = -1000  # a task's answer when its node cannot see the project directory


def _run_command(target: str, cmd: str, cwd: str, env: dict[str, str], lines: Any,
                 marker: str | None, job: Job | None = None) -> tuple[int, str, str, int]:
    """The body of a Ray task: run `cmd`, send output to `lines`, return (code, node, cwd, n).

    With `marker`, first check that this node sees the project (the driver wrote that file);
    if not, answer NOT_SHARED without running anything."""
    import subprocess

    node = ray.get_runtime_context().get_node_id()
    if marker is not None and not os.path.exists(marker):
        return NOT_SHARED, node, "", 0
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["MLMAKE_RAY_NODE"] = node
    if job is not None and job.env_spec is not None:  # the target's environment, on this node
        from mlmake import envs

        send = lambda line: lines.put((target, "lines", [line]))  # noqa: E731
        runtime = envs.prepare(job.env_spec, job.env_digest or "", job.root, job.state_dir,
                               log=send)
        if runtime.kind == "docker":
            return _run_container(target, job, runtime, lines, node)
        full_env = runtime.environ(full_env)
    os.makedirs(cwd, exist_ok=True)
    proc = subprocess.Popen(["sh", "-c", cmd], cwd=cwd, env=full_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_set_pdeathsig)
    lines.put((target, "pid", (node, proc.pid)))
    sent = 0
    try:
        assert proc.stdout is not None
        batch: list[str] = []
        last = time.monotonic()
        for raw in iter(proc.stdout.readline, b""):
            batch.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if len(batch) >= 200 or time.monotonic() - last > _BATCH_SECONDS:
                lines.put((target, "lines", batch))
                sent += len(batch)
                batch, last = [], time.monotonic()
        if batch:
            lines.put((target, "lines", batch))
            sent += len(batch)
        code = proc.wait()
    except BaseException:
        _kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(_GRACE)
        except subprocess.TimeoutExpired:
            pass
        _kill(proc.pid, signal.SIGKILL)
        raise
    _kill(proc.pid, signal.SIGKILL)  # strays left in the group
    return code, node, cwd, sent


def _run_container(target: str, job: Job, runtime: Any, lines: Any, node: str
                   ) -> tuple[int, str, str, int]:
    """Run a target's command in its container on this node, streaming its output."""
    from mlmake.envs.docker import ContainerRun

    run = ContainerRun(job, runtime)
    run.start()
    sent = 0
    try:
        for raw in run.lines():
            lines.put((target, "lines", [raw.decode("utf-8", "replace").rstrip("\r\n")]))
            sent += 1
        code = run.wait()
    finally:
        run.close()
    return code, node, job.root, sent


def _kill(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group_now(pgid: int) -> bool:
    """Ray task body: SIGTERM a command's process group, SIGKILL it after a grace."""
    _kill(pgid, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.05)
    _kill(pgid, signal.SIGKILL)
    return True


def _run_in_scratch(target: str, cmd: str, wdir: str, env: dict[str, str], lines: Any,
                    inputs: list[tuple[str, OutRecord]], outs: tuple[str, ...],
                    remote_args: tuple[Any, ...], cache_dir: str
                    ) -> tuple[int, str, str, int, dict[str, OutRecord], list[str]]:
    """The body of a Ray task on a node without the project: inputs come by hash from the
    remote into a scratch directory, the command runs there, outs go back to the remote."""
    from mlmake import scratch
    from mlmake.remote import Remote

    remote = Remote(*remote_args)
    where = scratch.materialize(inputs, outs, remote, cache_dir)
    try:
        env = dict(env, MLMAKE_ROOT=where)
        code, node, cwd, sent = _run_command(target, cmd, os.path.join(where, wdir), env,
                                             lines, None)
        records, missing = scratch.collect(where, outs, remote, cache_dir) if code == 0 \
            else ({}, [])
        return code, node, cwd, sent, records, missing
    finally:
        scratch.discard(where)
        remote.close()


_remote_run = ray.remote(max_retries=0)(_run_command)
_remote_scratch = ray.remote(max_retries=0)(_run_in_scratch)
_remote_kill = ray.remote(num_cpus=0, max_retries=0)(_kill_group_now)


class _Session:
    """This process's one connection to Ray, shared by every RayExecutor alive in it.

    Ray allows one connection per process, and experiments build side by side in threads,
    each with its own executor: the first `join` connects (under the lock, so two threads
    never both call `ray.init`), and the last `leave` disconnects, shutting down the local
    instance that `join` started. A connection that something else opened is used and left
    as it was."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._owned = False  # whether `join` called ray.init, so `leave` calls ray.shutdown
        self._address: str | None = None

    def join(self, address: str | None) -> None:
        """Count one more user, connecting first when it is the only one."""
        with self._lock:
            if self._users and address and address != self._address:
                raise ExecutorError(f"this process is connected to the Ray cluster at "
                                    f"'{self._address or 'local'}' for another build, and "
                                    f"Ray allows one cluster per process: build on "
                                    f"'{address}' after it, or on the same cluster.")
            if not ray.is_initialized():
                _init(address)
                self._owned, self._address = True, address
            elif not self._users:
                self._owned, self._address = False, address
            self._users += 1

    def leave(self) -> None:
        """Count one user less; the last one disconnects what `join` connected."""
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._owned:
                self._owned = False
                ray.shutdown()


def _init(address: str | None) -> None:
    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False,
                              "include_dashboard": False}
    try:
        ray.init(address=_connect_to(address), **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExecutorError(f"cannot reach the Ray cluster at '{address or 'local'}': "
                            f"{exc}. Start one with `ray start --head` or drop --address.") \
            from None


def _connect_to(address: str | None) -> str | None:
    """What to hand `ray.init` for `address`: itself, except where Ray would find a running
    local cluster on its own (no address, or "auto") that does not use token authentication.

    Ray (2.59 on) connects to the cluster named in /tmp/ray/ray_current_cluster, as documented,
    and turns token authentication on for this process whenever a token is at hand
    (~/.ray/auth_token, RAY_AUTH_TOKEN), assuming that cluster uses it. A cluster started
    without it (`ray start` before the token existed or with RAY_AUTH_MODE=disabled,
    ray.cluster_utils) then cannot call back into this process, its calls carrying no token,
    and the first actor dies. Named explicitly, the same cluster is joined as it is configured,
    as with --address; a cluster that does use tokens keeps Ray's own path."""
    if address not in (None, "auto") or os.environ.get("RAY_ADDRESS") \
            or "RAY_AUTH_MODE" in os.environ or not _token_at_hand():
        return address  # Ray turns nothing on by itself
    try:  # Ray's private API: where it moved, Ray's own path is kept
        from ray._private import services

        # with None as ray.init passes it, though Ray annotates a str
        found = services.canonicalize_bootstrap_address(address, None)  # type: ignore[arg-type]
        running = services.find_gcs_addresses()
    except (ImportError, AttributeError, ConnectionError, ValueError):
        return address  # (a connection or value error: ray.init says the same, better)
    if found is None or found not in running:  # none, or a stale file
        return address
    return found if _answers_without_token(found) else address


def _token_at_hand() -> bool:
    """Whether Ray would find a token here, looking where it documents: RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token. (Not by asking Ray's token loader: once that
    has loaded the token, this process's own server refuses the cluster's calls without it.)"""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(
        os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


# Run in a fresh interpreter, where token authentication is still off: exits 3 when the
# cluster at argv[1] refuses a request that carries no token.
_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    raise SystemExit(3)
"""


def _answers_without_token(gcs_address: str) -> bool:
    """Whether the cluster at `gcs_address` serves requests that carry no token (asked from
    a child process: Ray logs a refusal on stderr, and this process keeps its settings)."""
    import subprocess
    import sys

    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE, gcs_address],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


_SESSION = _Session()


@contextlib.contextmanager
def held(address: str | None) -> Iterator[None]:
    """This process connected to Ray (at `address`, else a local instance) throughout."""
    _SESSION.join(address)
    try:
        yield
    finally:
        _SESSION.leave()


class RayExecutor:
    """Submits targets as Ray tasks on a local instance or a running cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, data: str = "auto", remote: Any = None,
                 store: Any = None, hasher: Any = None, state_dir: str | None = None) -> None:
        """`data`: "shared" (tasks run in the project directory), "remote" (inputs and outs
        travel through `remote` by hash) or "auto" (shared where a node sees the project,
        else remote). `store`, `hasher` are the project's, used to pack and unpack."""
        self.address = address
        self.data = data
        self.remote = remote
        self.store = store
        self.hasher = hasher
        self.state_dir = state_dir
        self._marker: str | None = None
        self._pack_lock = threading.Lock()
        self._refs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._callbacks: dict[str, OnLine] = {}
        self._received: dict[str, int] = {}
        self._pids: dict[str, tuple[str, int]] = {}
        self._cancelled = False
        _SESSION.join(address)
        self._joined = True
        try:
            self._queue = Queue(maxsize=0, actor_options={"num_cpus": 0})
        except _RAY_GONE as exc:
            self._leave()
            raise ExecutorError(f"cannot start mlmake's output queue on the Ray cluster: "
                                f"{exc}") from None
        self._stop = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="mlmake-ray-output",
                                         daemon=True)
        self._drainer.start()

    # -- capacity ---------------------------------------------------------------------------
    def capacity(self, need_gpus: bool) -> Capacity:
        total = ray.cluster_resources()
        custom = {k: float(v) for k, v in total.items()
                  if k not in ("CPU", "GPU", "memory", "object_store_memory")
                  and not k.startswith("node:") and not k.startswith("accelerator_type")}
        ngpu = int(total.get("GPU", 0))
        return Capacity(cpus=float(total.get("CPU", 1)),
                        gpus=tuple(f"ray{i}" for i in range(ngpu)),
                        memory=int(total.get("memory", 0)), custom=custom)

    def nodes_summary(self) -> str:
        parts = []
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            res = {k: v for k, v in n.get("Resources", {}).items()
                   if not k.startswith("node:") and k != "object_store_memory"}
            shown = ", ".join(f"{k}={_fmt(k, v)}" for k, v in sorted(res.items()))
            parts.append(f"{n.get('NodeManagerAddress', '?')} ({n['NodeID'][:8]}): {shown}")
        return "; ".join(parts)

    def _missing_resource(self, need: dict[str, float]) -> str | None:
        alive = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(all(res.get(k, 0.0) + 1e-9 >= v for k, v in need.items()) for res in alive):
            return None
        lacking = [k for k, v in need.items()
                   if not any(res.get(k, 0.0) + 1e-9 >= v for res in alive)]
        what = ", ".join(f"{k}={_fmt(k, need[k])}" for k in (lacking or list(need)))
        return (f"no node of the Ray cluster has {what}"
                + ("" if lacking else " together") + f". Nodes: {self.nodes_summary()}")

    # -- running ----------------------------------------------------------------------------
    def run(self, job: Job, on_line: OnLine) -> JobResult:
        t = job.target
        r = t.resources
        need: dict[str, float] = {"CPU": r.cpus}
        if r.gpus:
            need["GPU"] = r.gpus
        if r.memory:
            need["memory"] = float(r.memory)
        need.update(dict(r.custom))
        problem = self._missing_resource(need)
        if problem:
            return JobResult(1, problem)
        options: dict[str, Any] = {"num_cpus": r.cpus, "num_gpus": r.gpus,
                                   "resources": dict(r.custom) or None}
        if r.memory:
            options["memory"] = r.memory
        mode = "remote" if self.data == "remote" else "shared"
        with open(job.log_path, "w", encoding="utf-8") as log:
            self._callbacks[t.name] = _tee(on_line, log)
            self._received[t.name] = 0
            try:
                code, node, sent, records = self._submit(job, options, mode)
                if code == NOT_SHARED:
                    if self.remote is None:
                        return JobResult(1, f"Ray node {node[:8]} cannot see {job.root} and no "
                                         "remote is configured to carry the data; add a "
                                         "[remote.NAME] or run on a shared filesystem.", node)
                    self.data = "remote"  # this cluster has no shared filesystem
                    code, node, sent, records = self._submit(job, options, "remote")
            except ray.exceptions.TaskCancelledError:
                return JobResult(-signal.SIGTERM, "cancelled")
            except ray.exceptions.RayTaskError as exc:
                return JobResult(1, f"the Ray task failed: {exc.cause!r}")
            except ray.exceptions.RayError as exc:
                return JobResult(1, f"Ray could not run the task: {exc}")
            except MlmakeError as exc:
                return JobResult(1, str(exc))
            finally:
                with self._lock:
                    self._refs.pop(t.name, None)
            with self._lock:
                self._callbacks.pop(t.name, None)
        if code < 0:
            return JobResult(code, f"killed by signal {-code}", node)
        if code == 0 and records is not None:
            from mlmake import scratch

            records, missing = records
            if missing:
                return JobResult(1, f"the command succeeded but did not write "
                                 f"'{missing[0]}'; fix the command or the target's outs", node)
            try:
                scratch.unpack_outs(records, t.metrics, self.store, self.remote)
            except MlmakeError as exc:
                return JobResult(1, f"cannot bring the outs home: {exc}", node)
        return JobResult(code, "" if code == 0 else f"exit code {code}", node)

    def _submit(self, job: Job, options: dict[str, Any], mode: str
                ) -> tuple[int, str, int, Any]:
        """Run one task in `mode` and wait; (code, node, lines sent, (records, missing) or
        None)."""
        t = job.target
        if mode == "remote":
            if self.remote is None or self.store is None:
                raise ExecutorError("ray_data = \"remote\" needs a remote: add a "
                                    "[remote.NAME] table and [project] remote.")
            from mlmake import scratch

            with self._pack_lock:
                inputs = scratch.pack_inputs(t.deps, job.root, self.hasher, self.store,
                                             self.remote)
            url = self.remote.url
            if "://" not in url and not os.path.isabs(url):
                url = os.path.normpath(os.path.join(job.root, url))
            args = (self.remote.name, url, self.remote.options, job.root)
            cache_dir = os.path.join("/tmp", "mlmake-ray-cache",
                                     hash_bytes(url.encode())[:16])
            submit = lambda: _remote_scratch.options(**options).remote(  # noqa: E731
                t.name, t.cmd, t.wdir, dict(job.env), self._queue, inputs, t.all_outs, args,
                cache_dir)
        else:
            marker = self._shared_marker() if self.data == "auto" else None
            cwd = os.path.join(job.root, t.wdir)
            submit = lambda: _remote_run.options(**options).remote(  # noqa: E731
                t.name, t.cmd, cwd, dict(job.env), self._queue, marker, job)
        with self._lock:
            if self._cancelled:
                return -signal.SIGTERM, "", 0, None
            ref = submit()
            self._refs[t.name] = ref
        result = self._wait(ref)
        if mode == "remote":
            code, node, _, sent, records, missing = result
            self._await_lines(t.name, sent)
            return code, node, sent, (records, missing)
        code, node, _, sent = result
        self._await_lines(t.name, sent)
        return code, node, sent, None

    def _await_lines(self, name: str, sent: int) -> None:
        deadline = time.monotonic() + 5
        while self._received.get(name, 0) < sent and time.monotonic() < deadline:
            time.sleep(0.02)

    def _shared_marker(self) -> str | None:
        """A file only a node that shares this filesystem can see."""
        if self._marker is None and self.state_dir:
            import secrets

            os.makedirs(self.state_dir, exist_ok=True)
            self._marker = os.path.join(self.state_dir, f"ray-here-{secrets.token_hex(8)}")
            with open(self._marker, "w") as fh:  # a marker: its existence is the message
                fh.write(str(os.getpid()))
        return self._marker

    def _wait(self, ref: Any) -> Any:
        while True:
            ready, _ = ray.wait([ref], timeout=0.5)
            if ready:
                return ray.get(ref)

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                target, kind, payload = self._queue.get(block=True, timeout=0.5)
            except (Empty, queue_mod.Empty):
                continue
            except _RAY_GONE:  # the queue actor went away at shutdown
                if self._stop.is_set():
                    return
                time.sleep(0.2)
                continue
            if kind == "pid":
                self._pids[target] = payload
                continue
            cb = self._callbacks.get(target)
            for line in payload:
                if cb is not None:
                    cb(line)
            self._received[target] = self._received.get(target, 0) + len(payload)

    def cancel_all(self) -> None:
        """Kill every running command's process group on its node (a small task pinned there),
        then cancel the tasks themselves."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self._lock:
            self._cancelled = True
            running = dict(self._refs)
        deadline = time.monotonic() + 2  # a task that just started reports its pid soon
        while any(t not in self._pids for t in running) and time.monotonic() < deadline:
            ready, _ = ray.wait(list(running.values()), num_returns=len(running), timeout=0)
            if len(ready) == len(running):
                break
            time.sleep(0.05)
        refs = list(running.values())
        pids = [self._pids[t] for t in running if t in self._pids]
        kills = []
        for node, pid in pids:
            strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            kills.append(_remote_kill.options(scheduling_strategy=strategy).remote(pid))
        if kills:
            ray.wait(kills, num_returns=len(kills), timeout=_GRACE + 5)
        for ref in refs:
            try:
                ray.cancel(ref, force=False)
            except _RAY_GONE:  # finished, or the cluster went away
                pass
        deadline = time.monotonic() + _GRACE + 2
        pending = list(refs)
        while pending and time.monotonic() < deadline:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except _RAY_GONE:
                pass

    def close(self) -> None:
        """Stop the output queue and leave the process's Ray session (the last executor to
        leave disconnects)."""
        if self._marker:
            try:
                os.unlink(self._marker)
            except FileNotFoundError:
                pass
        if self.remote is not None:
            self.remote.close()
        self._stop.set()
        self._drainer.join(timeout=2)
        actor: Any = self._queue.actor  # typed by Ray as the handle or its class
        try:
            ray.kill(actor)
        except _RAY_GONE:  # the cluster may be gone already
            pass
        self._leave()

    def _leave(self) -> None:
        if self._joined:  # once, however often close() is called
            self._joined = False
            _SESSION.leave()


def _tee(on_line: OnLine, log: Any) -> Callable[[str], None]:
    def emit(line: str) -> None:
        log.write(line + "\n")
        log.flush()
        on_line(line)
    return emit


def _fmt(key: str, v: float) -> str:
    if key in ("memory", "object_store_memory"):
        return f"{v / 2**30:.1f}GiB"
    return f"{v:g}" if not math.isinf(v) else "inf"
