"""Cache commands: push and pull, with a progress bar (files, bytes, rate), and doctor."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import click

from mlmake.cli.app import Ctx, command
from mlmake.cli.outputs import _size

pass_ctx = click.make_pass_decorator(Ctx)


class BarProgress:
    """A rich progress bar on a terminal (mlmake.remote.Progress); silent elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self._bytes = 0
        self._t0 = 0.0

    def start(self, label: str, files: int, nbytes: int) -> None:
        if not self.enabled or files == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with self._lock:
            self._bytes, self._t0 = 0, time.monotonic()
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("files"),
                                 TextColumn("{task.fields[size]}"), transient=True,
                                 console=Console(stderr=True))
            self._task = self._bar.add_task(label, total=files, size="")
            self._bar.start()

    def advance(self, files: int, nbytes: int) -> None:
        with self._lock:
            if self._bar is None:
                return
            self._bytes += nbytes
            rate = self._bytes / max(1e-6, time.monotonic() - self._t0)
            self._bar.update(self._task, advance=files,
                             size=f"{_size(self._bytes)} · {_size(int(rate))}/s")

    def finish(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None


def _progress(g: Ctx) -> BarProgress:
    return BarProgress(not g.quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb")


def _rate(nbytes: int, seconds: float) -> str:
    return f"{_size(nbytes)} in {seconds:.1f}s ({_size(int(nbytes / max(seconds, 1e-6)))}/s)"


def remote_options(f: Any) -> Any:
    opts = [
        click.argument("targets", nargs=-1),
        click.option("-r", "--remote", default=None, metavar="NAME",
                     help="Remote to use (default: [project] remote, or the only one)."),
        click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
                     help="Parallel transfers (default: 8 per CPU for object stores such as "
                          "S3, 4 per CPU for directories)."),
        click.option("--all-commits", is_flag=True,
                     help="Also what the Mlfile.lock of every commit on any branch or tag "
                          "references, not only the work tree's."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@command("push")
@remote_options
@click.option("--no-exps", "no_exps", is_flag=True,
              help="Leave experiments out: neither their outs nor their refs.")
@pass_ctx
def push_cmd(g: Ctx, targets: tuple[str, ...], remote: str | None, jobs: int | None,
             all_commits: bool, no_exps: bool) -> int:
    """Upload outputs and their run-cache entries to a remote, with the experiments.

    Sends the objects that the Mlfile.lock entries of TARGETS (default: all) reference,
    and only those the remote lacks. Without TARGETS, the recorded experiments travel too:
    their outs to the same remote, then their refs (refs/mlmake/exps/*) to the Git remote
    (the branch's upstream remote, else origin), so that a teammate's `mlmake pull` lists
    them; an experiment the Git remote holds under the same name is never replaced.
    Credentials come from the environment or profile."""
    res = g.project().push(targets, remote, jobs, all_commits, callback=_progress(g),
                           experiments=not no_exps)
    for out in res.missing:
        click.echo(f"warning: {out} is not in the local cache, so it was not pushed; build it "
                   "(`mlmake`) or pull it first", err=True)
    if res.replaced:
        click.echo(f"replaced {len(res.replaced)} corrupt object(s) on '{res.remote}' with "
                   "good copies from the local cache "
                   f"({', '.join(o[:12] + '…' for o in res.replaced[:3])})",
                   err=True)
    click.echo(f"pushed {res.pushed} objects ({_rate(res.nbytes, res.duration)}) and "
               f"{res.runcache} run-cache entries to '{res.remote}'; {res.present} objects "
               "were already there")
    refs = res.experiments
    for name in refs.clashed if refs is not None else []:
        click.echo(f"warning: experiment '{name}' was not pushed: Git remote '{refs.remote}' "
                   "holds another experiment of that name. `mlmake exp push "
                   f"{refs.remote} {name}` replaces it, or `mlmake exp branch {name} BRANCH` "
                   "keeps yours as a branch", err=True)
    if refs is not None and refs.recorded:
        if refs.remote is None:
            click.echo(f"experiments: {refs.recorded} stay here, as this repository has no Git "
                       "remote (`git remote add origin URL`, then `mlmake push`)")
        else:
            there = refs.recorded - len(refs.moved) - len(refs.clashed)
            click.echo(f"experiments: pushed {len(refs.moved)} to Git remote '{refs.remote}'"
                       + (f"; {there} already there" if there else "")
                       + (f"; {len(refs.clashed)} not pushed, their names being taken there"
                          if refs.clashed else ""))
    return 1 if res.missing or (refs is not None and refs.clashed) else 0


@command("pull")
@remote_options
@click.option("--no-exps", "no_exps", is_flag=True,
              help="Do not fetch the experiments' refs from the Git remote.")
@pass_ctx
def pull_cmd(g: Ctx, targets: tuple[str, ...], remote: str | None, jobs: int | None,
             all_commits: bool, no_exps: bool) -> int:
    """Download outputs from a remote and restore them into the work tree.

    Fetches the objects that the Mlfile.lock entries of TARGETS (default: all) reference,
    verifying each one's hash before it enters the cache, plus their run-cache entries;
    then restores the work tree's outs like `mlmake checkout` (a pull is fetch + checkout).
    Outs edited by hand are never overwritten. Without TARGETS, the experiments that the
    Git remote holds (refs/mlmake/exps/*) and this clone lacks are fetched too, so that
    `mlmake exp show` lists them; `mlmake exp apply` downloads the outs of the one it
    applies. A repository with no Git remote skips that."""
    res = g.project().pull(targets, remote, jobs, all_commits, callback=_progress(g),
                           experiments=not no_exps)
    co = res.checkout
    if co is not None and not g.quiet:
        for out in co.restored:
            click.echo(f"restored {out}")
    for out in res.missing:
        click.echo(f"warning: remote '{res.remote}' does not have {out}; build it (`mlmake`)",
                   err=True)
    line = (f"fetched {res.fetched} objects ({_rate(res.nbytes, res.duration)}) and "
            f"{res.runcache} run-cache entries from '{res.remote}'; {res.present} were "
            "already here")
    if co is not None:
        line += (f" · restored {len(co.restored)} · unchanged {len(co.unchanged)} · "
                 f"missing {len(co.missing)}")
    click.echo(line)
    refs = res.experiments
    if refs is not None and refs.error:
        click.echo(f"warning: {refs.error}; the outs were pulled (`mlmake pull --no-exps` "
                   "leaves experiments out)", err=True)
    for name in refs.clashed if refs is not None else []:
        click.echo(f"warning: experiment '{name}' of Git remote '{refs.remote}' was not "
                   "fetched: yours has that name and was kept (`mlmake exp remove "
                   f"{name}`, then `mlmake pull`, takes theirs)", err=True)
    if refs is not None and refs.moved:
        click.echo(f"experiments: fetched {len(refs.moved)} from Git remote '{refs.remote}' "
                   "(`mlmake exp show` lists them)")
    return 1 if res.missing or (co is not None and co.missing) else 0


@command("doctor")
@click.option("-r", "--remote", "remote", default=None, metavar="NAME",
              help="The remote to verify (default: the project's).")
@click.option("--local", "local_only", is_flag=True, help="Verify only the local cache.")
@pass_ctx
def doctor_cmd(g: Ctx, remote: str | None, local_only: bool) -> int:
    """Verify every object in the local cache and the remote; repair what can be repaired.

    Corrupt local objects are removed (the next build reruns or re-fetches them); corrupt
    remote copies are replaced with good local ones. Exit 1 when something stays broken."""
    rep = g.project().doctor(remote, check_remote=not local_only)
    click.echo(f"local cache: {rep.checked} objects verified, {len(rep.removed)} corrupt "
               f"removed{'' if not rep.temps else f', {rep.temps} temporary files removed'}")
    for oid in rep.removed:
        click.echo(f"  removed corrupt object {oid}")
    if rep.remote is not None:
        click.echo(f"remote '{rep.remote}': {rep.remote_checked} objects verified, "
                   f"{len(rep.replaced)} corrupt replaced with good local copies")
        for oid in rep.replaced:
            click.echo(f"  replaced corrupt object {oid}")
        for oid in rep.unrepaired:
            click.echo(f"error: remote '{rep.remote}' holds a corrupt copy of {oid} and this "
                       "clone has no good one; rebuild it (`mlmake -B TARGET`) and run "
                       "`mlmake push`, which replaces it.", err=True)
    if rep.needed_missing:
        click.echo(f"{len(rep.needed_missing)} out(s) of the lock now lack objects "
                   f"({', '.join(rep.needed_missing[:5])}); `mlmake` rebuilds or re-fetches "
                   "them.")
    return 0 if rep.healthy else 1
