"""Local executor: each command runs under `sh -c` in its own process group on this machine.

A command's shell dies with mlmake, even a SIGKILLed one: a guardian `sh`, one per executor
in a session of its own, reads the shells' pids from a pipe and kills those still listed when
the pipe closes (mlmake exited or was killed), as PR_SET_PDEATHSIG would. Children are then
started by vfork, without running Python between fork and exec: a `preexec_fn` would force a
full fork of the interpreter, about 1.5 ms per command (what the shell itself starts is
covered by mlmake.orphans' token).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlmake import orphans
from mlmake.errors import EnvError
from mlmake.executors.base import Capacity, Job, JobResult, OnLine, machine_capacity

if TYPE_CHECKING:
    from mlmake import envs

_GRACE = 3.0


class LocalExecutor:
    """Runs commands as child process groups, streaming merged stdout/stderr line by line."""

    name = "local"

    def __init__(self) -> None:
        self._guardian: _Guardian | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._containers: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._cancelled = False
        self._cancel = threading.Event()  # stops environment builds in progress
        self._record: str | None = None  # this run's token under .mlmake/procs/

    def capacity(self, need_gpus: bool) -> Capacity:
        return machine_capacity(need_gpus)

    def run(self, job: Job, on_line: OnLine) -> JobResult:
        with open(job.log_path, "wb") as log:
            def emit(raw: bytes) -> None:
                log.write(raw)
                on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))

            runtime = None
            if job.env_spec is not None:
                if self._cancel.is_set():
                    return JobResult(-signal.SIGTERM, "interrupted before it started")
                from mlmake import envs  # (only a target that names an environment)

                try:
                    runtime = envs.prepare(
                        job.env_spec, job.env_digest or "", job.root, job.state_dir,
                        log=lambda line: emit(line.encode() + b"\n"), cancel=self._cancel,
                        record=lambda line: log.write(line.encode() + b"\n"))
                except EnvError as exc:
                    log.write(f"mlmake: {exc}\n".encode())
                    if self._cancel.is_set():
                        return JobResult(-signal.SIGTERM, "interrupted while its environment "
                                                          "was being built")
                    return JobResult(1, str(exc))
                log.flush()
            if runtime is not None and runtime.kind == "docker":
                return self._run_container(job, runtime, emit)
            return self._run_process(job, runtime, emit)

    def _run_process(self, job: Job, runtime: envs.Runtime | None,
                     emit: Callable[[bytes], None]) -> JobResult:
        t = job.target
        env = dict(os.environ)
        env.update(job.env)
        if job.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(job.gpus)
        if runtime is not None:
            env = runtime.environ(env)
        env[orphans.ENV] = orphans.token()
        cwd = os.path.join(job.root, t.wdir)
        with self._lock:
            if self._cancelled:
                return JobResult(-signal.SIGTERM, "interrupted before it started")
            if self._record is None:  # before the first child: a later run can find strays
                self._record = orphans.register(os.path.join(
                    job.state_dir or os.path.join(job.root, ".mlmake"), "procs"))
                self._guardian = _Guardian.start()
            guardian = self._guardian
            try:
                # the shell dies with mlmake: the guardian kills it, or (without one) the
                # kernel does when this worker thread, which waits for it below, ends
                proc = subprocess.Popen(["sh", "-c", t.cmd], cwd=cwd, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=None if guardian is not None
                                        else orphans.child_setup())
            except OSError as exc:
                return JobResult(127, f"cannot start the command: {exc}")
            self._procs[proc.pid] = proc
            if guardian is not None:
                guardian.watch(proc.pid)
        try:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                emit(raw)
            code = proc.wait()
        finally:
            with self._lock:
                self._procs.pop(proc.pid, None)
            _kill_group(proc.pid, signal.SIGKILL)  # strays left in the group die with it
            if guardian is not None:
                guardian.forget(proc.pid)
        if code < 0:
            return JobResult(code, f"killed by signal {-code}")
        return JobResult(code, "" if code == 0 else f"exit code {code}")

    def _run_container(self, job: Job, runtime: envs.Runtime,
                       emit: Callable[[bytes], None]) -> JobResult:
        from mlmake.envs.docker import ContainerRun

        run = ContainerRun(job, runtime)
        with self._lock:
            if self._cancelled:
                return JobResult(-signal.SIGTERM, "interrupted before it started")
            try:
                run.start()
            except EnvError as exc:
                return JobResult(125, str(exc))
            self._containers[id(run)] = run
        try:
            for raw in run.lines():
                emit(raw)
            code = run.wait()
        except EnvError as exc:
            return JobResult(125, str(exc))
        finally:
            with self._lock:
                self._containers.pop(id(run), None)
            run.close()
        if run.stopped:
            return JobResult(-signal.SIGTERM, "interrupted: its container was stopped")
        if code != 0 and run.oom_killed:
            return JobResult(code, f"exit code {code}: out of memory (the container's limit "
                                   "is the target's resources.memory)")
        return JobResult(code, "" if code == 0 else f"exit code {code}")

    def cancel_all(self) -> None:
        """SIGTERM every running process group and container, then SIGKILL what is left
        after a grace; stop environment builds."""
        with self._lock:
            self._cancelled = True
            self._cancel.set()
            procs = list(self._procs.values())
            runs = list(self._containers.values())
        stoppers = [threading.Thread(target=r.stop, args=(_GRACE,), daemon=True) for r in runs]
        for th in stoppers:
            th.start()
        for p in procs:
            _kill_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + _GRACE
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(p.pid, signal.SIGKILL)
        for th in stoppers:
            th.join(_GRACE + 10)

    def close(self) -> None:
        with self._lock:
            record, self._record = self._record, None
            guardian, self._guardian = self._guardian, None
        if guardian is not None:
            guardian.close()
        if record is not None:
            orphans.release(record)


# Collects "+ PID" (a shell started) and "- PID" (reaped) lines until its stdin closes (cat
# takes them in bulk: no work per line while mlmake lives), then SIGKILLs the shells still
# listed: at a normal close none are.
_GUARD = """
lines=$(cat)
p=' '
while read -r op pid; do
  case $op in
    +) p="$p$pid " ;;
    -) case $p in *" $pid "*) p="${p%%" $pid "*} ${p#*" $pid "}" ;; esac ;;
  esac
done <<EOF
$lines
EOF
for pid in $p; do kill -s KILL "$pid" 2>/dev/null; done
"""


class _Guardian:
    """The `sh` that kills the executor's running shells when this process goes away."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        self._proc = proc
        self._fd = proc.stdin.fileno()
        self._mutex = threading.Lock()
        self._alive = True

    @classmethod
    def start(cls) -> _Guardian | None:
        """A guardian in a session of its own (a kill of mlmake's process group spares it);
        None when it cannot start, and children then get PR_SET_PDEATHSIG themselves."""
        try:
            proc = subprocess.Popen(["sh", "-c", _GUARD], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError:
            return None
        return cls(proc)

    def watch(self, pid: int) -> None:
        with self._mutex:
            self._send(f"+ {pid}\n")

    def forget(self, pid: int) -> None:
        """Unlist a reaped shell at once: its pid may soon name an unrelated process, which
        the guardian must never kill if mlmake dies later."""
        with self._mutex:
            self._send(f"- {pid}\n")

    def _send(self, lines: str) -> None:
        if not self._alive:
            return
        try:
            os.write(self._fd, lines.encode())  # (a few bytes: the pipe takes them whole)
        except OSError:  # it died: the token sweep of mlmake.orphans remains
            self._alive = False

    def close(self) -> None:
        with self._mutex:
            self._alive = False
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
