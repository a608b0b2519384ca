"""The ready/done loop: runs work for targets in dependency order within resource limits.

It knows nothing of hashing, the store or any executor back end: it is handed a graph, a
capacity and a `work(name, gpus)` callable that returns an Outcome.
"""

from __future__ import annotations

import graphlib
import math
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from collections.abc import Callable

from mlmake.executors.base import Capacity
from mlmake.graph import Graph
from mlmake.model import Outcome, Resources

Work = Callable[[str, tuple[str, ...]], Outcome]


@dataclass
class _Pool:
    """Resources not yet handed out.

    `memory` is what is left and may reach 0; `limit_memory` says whether there is a memory
    limit at all (a capacity of 0 means the executor does not know, so none is enforced).
    """

    cpus: float
    gpus: list[str]
    memory: int
    custom: dict[str, float] = field(default_factory=dict)
    limit_memory: bool = False

    @classmethod
    def of(cls, capacity: Capacity) -> _Pool:
        """A full pool for `capacity`."""
        return cls(capacity.cpus, list(capacity.gpus), capacity.memory, dict(capacity.custom),
                   limit_memory=capacity.memory > 0)

    def fits(self, r: Resources, limit_cpus: bool = True) -> bool:
        if limit_cpus and r.cpus > self.cpus + 1e-9:
            return False
        if math.ceil(r.gpus) > len(self.gpus):
            return False
        if self.limit_memory and r.memory > self.memory:
            return False
        return all(self.custom.get(k, 0.0) + 1e-9 >= v for k, v in r.custom
                   if k in self.custom)

    def take(self, r: Resources) -> tuple[str, ...]:
        self.cpus -= r.cpus
        n = math.ceil(r.gpus)
        got, self.gpus = tuple(self.gpus[:n]), self.gpus[n:]
        if self.limit_memory:
            self.memory -= r.memory
        for k, v in r.custom:
            if k in self.custom:
                self.custom[k] -= v
        return got

    def give(self, r: Resources, gpus: tuple[str, ...]) -> None:
        self.cpus += r.cpus
        self.gpus = sorted(self.gpus + list(gpus))
        if self.limit_memory:
            self.memory += r.memory
        for k, v in r.custom:
            if k in self.custom:
                self.custom[k] += v


class Scheduler:
    """Runs `work` for each of `names` once its upstream succeeded, at most `jobs` at once.

    A failed target blocks only its dependents; without `keep_going` no new target starts
    after a failure. Interrupts (KeyboardInterrupt in the calling thread) call `cancel` and
    wait for running work to return before re-raising.
    """

    def __init__(self, graph: Graph, names: set[str], capacity: Capacity, jobs: int,
                 keep_going: bool, work: Work, cancel: Callable[[], None],
                 limit_cpus: bool = True) -> None:
        self.graph = graph
        self.names = names
        self.capacity = capacity
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.work = work
        self.cancel = cancel
        self.limit_cpus = limit_cpus
        self.outcomes: dict[str, Outcome] = {}
        self.interrupted = False

    def run(self) -> dict[str, Outcome]:
        order = self.graph.order(self.names)
        rank = {n: i for i, n in enumerate(order)}
        ts: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for n in order:
            ts.add(n, *(u for u in self.graph.up[n] if u in self.names))
        ts.prepare()
        pool = _Pool.of(self.capacity)
        ready: list[str] = []
        running: dict[Future[Outcome], tuple[str, tuple[str, ...]]] = {}
        stop = False
        lock = threading.Lock()
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="mlmake") as threads:
            try:
                while True:
                    if not stop:
                        ready.extend(ts.get_ready())
                        ready.sort(key=rank.__getitem__)
                    while ready and not stop and len(running) < self.jobs:
                        pick = next((n for n in ready
                                     if pool.fits(self.graph.targets[n].resources,
                                                  self.limit_cpus)), None)
                        if pick is None:
                            if not running:  # nothing will free up: run it alone anyway
                                pick = ready[0]
                            else:
                                break
                        ready.remove(pick)
                        res = self.graph.targets[pick].resources
                        with lock:
                            gpus = pool.take(res)
                        running[threads.submit(self.work, pick, gpus)] = (pick, gpus)
                    if not running:
                        break
                    done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in done:
                        name, gpus = running.pop(fut)
                        pool.give(self.graph.targets[name].resources, gpus)
                        outcome = fut.result()
                        self.outcomes[name] = outcome
                        if outcome.ok:
                            ts.done(name)
                        elif not self.keep_going:
                            stop = True
            except BaseException:
                self.interrupted = True
                self.cancel()
                for fut, (name, _) in running.items():
                    try:
                        self.outcomes[name] = fut.result()
                    except BaseException:  # noqa: BLE001 - already interrupting
                        self.outcomes[name] = Outcome(name, "failed", message="interrupted")
                raise
        for n in order:
            if n not in self.outcomes:
                ups = self.graph.upstream_closure({n}) - {n}
                # name a target that really failed (not one only blocked), the first in order
                failed_up = [u for u in order if u in ups and u in self.outcomes
                             and self.outcomes[u].status == "failed"]
                msg = f"not run: '{failed_up[0]}' failed" if failed_up else \
                    "not run: the build stopped after a failure (use -k to keep going)"
                self.outcomes[n] = Outcome(n, "blocked", message=msg)
        return self.outcomes
