"""`mlmake serve` (the HTTP service with its page and schedules) and `mlmake trigger` (a client
of a running service)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from mlmake.cli.app import Ctx, command
from mlmake.errors import UsageError

pass_ctx = click.make_pass_decorator(Ctx)


@command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default; anything else is reachable "
                   "from other machines).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: a free one).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Triggered runs built at once; more wait in the queue.")
@pass_ctx
def serve_cmd(g: Ctx, host: str, port: int, jobs: int) -> int:
    """Serve the project: REST-triggered endpoints, schedules and a page.

    Every /api route needs `Authorization: Bearer TOKEN`; the token comes from
    $MLMAKE_SERVE_TOKEN, else .mlmake/serve-token (generated on first start, mode 0600).
    Ctrl-C or SIGTERM stops the running builds and removes their worktrees.
    """
    from mlmake.serve import app as app_mod
    from mlmake.serve.client import ADDRESS_FILE

    project = g.project()
    pipeline = project.pipeline  # a bad Mlfile (or schedule) is exit 2 before anything starts
    token, token_file = app_mod.load_token(project)
    try:
        sock = app_mod.bind(host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Pick "
                         "another --port, or stop what uses it.") from None
    actual = sock.getsockname()[1]
    app = app_mod.create_app(project, token, jobs)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{actual}/"
    address = project.state_path(ADDRESS_FILE)
    with open(address, "w", encoding="utf-8") as fh:
        json.dump({"url": url, "pid": os.getpid()}, fh)
    eps = ", ".join(pipeline.endpoints) or "none"
    click.echo(f"mlmake serve: {project.root}")
    click.echo(f"  endpoints: {eps} · schedules: {len(pipeline.schedules)} · jobs: {jobs}")
    click.echo(f"  token: {'$MLMAKE_SERVE_TOKEN' if token_file is None else token_file}")
    if not app_mod.is_loopback(host):
        click.echo(f"warning: listening on {host}, which other machines can reach; anyone "
                   "with the token can run this project's endpoints.", err=True)
    click.echo(f"page: {url}#token={token}")
    sys.stdout.flush()
    try:
        app_mod.serve(app, sock, "info" if g.verbose else "warning")
    except KeyboardInterrupt:
        pass
    finally:
        app.state.service.stop()
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
    click.echo("mlmake serve stopped")
    return 0


def _value(text: str) -> Any:
    """A --param value: JSON when it parses (0.1, 3, true, "x", [1,2]), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@command("trigger")
@click.argument("endpoint")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override an allowed param (repeatable); VALUE is read as JSON when it "
                   "parses (0.1, 3, true), else as a string.")
@click.option("--rev", default=None, help="Branch, tag or commit to build (default: the "
                                          "endpoint's rev).")
@click.option("--url", default=None, help="The service (default: the one this project's "
                                          "`mlmake serve` runs, else http://127.0.0.1:8765).")
@click.option("--token", default=None, help="Bearer token (default: $MLMAKE_SERVE_TOKEN, "
                                            "else .mlmake/serve-token).")
@click.option("--wait", is_flag=True, help="Wait for the run to end; exit 0 if it succeeded, "
                                           "1 if not.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@pass_ctx
def trigger_cmd(g: Ctx, endpoint: str, params: tuple[str, ...], rev: str | None,
                url: str | None, token: str | None, wait: bool, as_json: bool) -> int:
    """Trigger ENDPOINT on a running `mlmake serve`."""
    from mlmake.errors import MlmakeError
    from mlmake.serve.client import DEFAULT_URL, Client, find_service

    overrides: dict[str, Any] = {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{p}' is not KEY=VALUE", param_hint="--param")
        overrides[key.strip()] = _value(value)
    state_dir = None
    try:
        state_dir = g.project().state_dir
    except MlmakeError:
        pass
    found_url, found_token = find_service(state_dir)
    url = url or os.environ.get("MLMAKE_SERVE_URL") or found_url or DEFAULT_URL
    token = token or os.environ.get("MLMAKE_SERVE_TOKEN") or found_token
    if not token:
        raise UsageError("no token: pass --token, set MLMAKE_SERVE_TOKEN, or run from the "
                         "project whose `mlmake serve` wrote .mlmake/serve-token.")
    client = Client(url, token)
    queued = client.trigger(endpoint, overrides, rev)
    run_id = queued["id"]
    if not wait:
        if as_json:
            click.echo(json.dumps(queued, indent=2, sort_keys=True))
        else:
            click.echo(f"queued run {run_id} of '{endpoint}' at {queued.get('commit', '')[:10]}"
                       f": {client.url}{queued['url']}")
        return 0
    if not as_json and not g.quiet:
        click.echo(f"queued run {run_id} of '{endpoint}'; waiting…", err=True)
    run: dict[str, Any] = queued
    while True:
        run = client.run(run_id)
        if run["status"] not in ("queued", "running"):
            break
        time.sleep(0.3)
    if as_json:
        click.echo(json.dumps(run, indent=2, sort_keys=True))
    else:
        s = run.get("summary") or {}
        counts = (f"ran {s.get('ran', 0)} · reused {s.get('reused', 0)} · up to date "
                  f"{s.get('uptodate', 0)} · failed {s.get('failed', 0)}")
        for t in run.get("targets", []):
            if t.get("outcome") == "failed":
                click.echo(f"✗ {t['name']} failed: {t.get('message') or ''}".rstrip(": "))
        took = f" ({run['duration']:.1f}s)" if run.get("duration") is not None else ""
        click.echo(f"run {run_id} {run['status']}: {counts}{took}")
        if run.get("message"):
            click.echo(f"  {run['message']}")
    return 0 if run["status"] == "succeeded" else 1
