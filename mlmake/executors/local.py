"""Local executor: each command runs under `sh -c` in its own process group on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from mlmake.executors.base import Capacity, Job, JobResult, OnLine, machine_capacity

_GRACE = 3.0


class LocalExecutor:
    """Runs commands as child process groups, streaming merged stdout/stderr line by line."""

    name = "local"

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def capacity(self, need_gpus: bool) -> Capacity:
        return machine_capacity(need_gpus)

    def run(self, job: Job, on_line: OnLine) -> JobResult:
        t = job.target
        env = dict(os.environ)
        env.update(job.env)
        if job.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(job.gpus)
        cwd = os.path.join(job.root, t.wdir)
        with self._lock:
            if self._cancelled:
                return JobResult(-signal.SIGTERM, "interrupted before it started")
            try:
                proc = subprocess.Popen(["sh", "-c", t.cmd], cwd=cwd, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                return JobResult(127, f"cannot start the command: {exc}")
            self._procs[proc.pid] = proc
        try:
            assert proc.stdout is not None
            with open(job.log_path, "wb") as log:
                for raw in iter(proc.stdout.readline, b""):
                    log.write(raw)
                    on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
            code = proc.wait()
        finally:
            with self._lock:
                self._procs.pop(proc.pid, None)
            _kill_group(proc.pid, signal.SIGKILL)  # strays left in the group die with it
        if code < 0:
            return JobResult(code, f"killed by signal {-code}")
        return JobResult(code, "" if code == 0 else f"exit code {code}")

    def cancel_all(self) -> None:
        """SIGTERM every running process group, then SIGKILL what is left after a grace."""
        with self._lock:
            self._cancelled = True
            procs = list(self._procs.values())
        for p in procs:
            _kill_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + _GRACE
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(p.pid, signal.SIGKILL)

    def close(self) -> None:
        pass


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
