"""The HTTP layer of `mlmake serve`: routes, bearer-token auth, JSON errors, the page's static
files and the uvicorn server; the only module that imports the web framework."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import mimetypes
import os
import socket
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (FileResponse, HTMLResponse, JSONResponse, PlainTextResponse,
                                 Response, StreamingResponse)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mlmake.errors import MlmakeError
from mlmake.serve import views
from mlmake.serve.runs import BadRequest
from mlmake.serve.service import Service

if TYPE_CHECKING:
    from mlmake.project import Project

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TOKEN_FILE = "serve-token"
TOKEN_ENV = "MLMAKE_SERVE_TOKEN"
KEEPALIVE = 15.0


# -- the token ---------------------------------------------------------------------------------
def load_token(project: Project) -> tuple[str, str | None]:
    """The bearer token: $MLMAKE_SERVE_TOKEN, else the one in .mlmake/serve-token, generated
    (mode 0600) on first use. Returns it and the file it came from (None: environment)."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, None
    return project.secret(TOKEN_FILE)


class _Auth:
    """Every /api route needs `Authorization: Bearer TOKEN`, compared in constant time; the
    event stream also takes `?access_token=` (a browser's EventSource cannot set headers)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api") \
                and not self._ok(scope):
            response = JSONResponse(
                {"error": "missing or wrong bearer token: send `Authorization: Bearer TOKEN` "
                          f"(the token is in .mlmake/{TOKEN_FILE} or ${TOKEN_ENV}).",
                 "detail": None}, 401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _ok(self, scope: Any) -> bool:
        given = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                scheme, _, value = v.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = value.strip()
                break
        if not given and scope["path"] == "/api/events":
            from urllib.parse import parse_qs

            qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (qs.get("access_token") or [""])[0].encode()
        return bool(given) and hmac.compare_digest(given, self.token)


# -- the app -----------------------------------------------------------------------------------
def create_app(project: Project, token: str, jobs: int = 1) -> Starlette:
    """The ASGI app serving `project`; its Service (queue, schedules) starts with the app's
    lifespan and is also at `app.state.service`."""
    service = Service(project, jobs)
    runner = service.runner

    def _int(request: Request, name: str, default: int, top: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            n = int(raw)
        except ValueError:
            raise BadRequest(f"query parameter '{name}' must be an integer, not '{raw}'.",
                             param=name) from None
        if n < 1:
            raise BadRequest(f"query parameter '{name}' must be at least 1.", param=name)
        return min(n, top)

    def endpoints(request: Request) -> Response:
        """The published endpoints: targets, default rev, allowed params and their values."""
        return JSONResponse(views.endpoints(project, runner))

    async def trigger(request: Request) -> Response:
        """Queue a run of an endpoint; body {"params": {...}, "rev": "..."}, both optional."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body must be JSON: {\"params\": {...}, \"rev\": \"...\"}.",
                             field="body") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with optional \"params\" and "
                             "\"rev\".", field="body")
        extra = sorted(set(body) - {"params", "rev"})
        if extra:
            raise BadRequest(f"unknown field '{extra[0]}' in the body; use \"params\" and "
                             "\"rev\".", field=extra[0])
        req = await run_in_threadpool(runner.submit, request.path_params["name"],
                                      body.get("params"), body.get("rev"), "api")
        url = f"/api/runs/{req.id}"
        return JSONResponse({"id": req.id, "status": "queued", "url": url,
                             "commit": req.commit, "endpoint": req.endpoint,
                             "params": req.params}, 202, headers={"Location": url})

    def runs(request: Request) -> Response:
        """The run history, newest first (CLI runs too); ?limit=N (default 50)."""
        return JSONResponse(views.runs_list(project, _int(request, "limit", 50, 10_000),
                                            runner))

    def run(request: Request) -> Response:
        """One run: status, trigger, commit, params and each target's outcome."""
        return JSONResponse(views.run_detail(project, request.path_params["id"], runner))

    def log(request: Request) -> Response:
        """A run's log: every target's with a header, or ?target=T's alone (text)."""
        text = views.log_text(project, request.path_params["id"],
                              request.query_params.get("target"))
        return PlainTextResponse(text, media_type="text/plain; charset=utf-8")

    def output(request: Request) -> Response:
        """The exact bytes of an output as the run produced it, from the object store (a
        directory out gives its listing as JSON)."""
        found = views.output(project, request.path_params["id"], request.path_params["path"])
        if "listing" in found:
            return JSONResponse(found)
        kind = mimetypes.guess_type(found["path"])[0] or "application/octet-stream"
        return FileResponse(found["object"], media_type=kind, headers={
            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox",
            "Cache-Control": "no-cache"})

    def graph(request: Request) -> Response:
        """The DAG: nodes with state, reasons, running flag and last run; edges."""
        return JSONResponse(views.graph(project, runner))

    def schedules(request: Request) -> Response:
        """The schedules with their next fire (or check) time and last run."""
        return JSONResponse(service.schedules.describe())

    def metrics(request: Request) -> Response:
        """Metrics and params of the last ?limit=N (default 50) commits, oldest first."""
        return JSONResponse(views.metrics_history(project, _int(request, "limit", 50, 1000)))

    def experiments(request: Request) -> Response:
        """The experiments table (`mlmake exp show --json` rows) and which columns differ."""
        return JSONResponse(views.experiments(project))

    async def events(request: Request) -> Response:
        """Server-sent events: `run` (queued, running, finished) and `target` (running,
        finished), with a keep-alive comment every 15 s."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=10_000)

        def put(item: tuple[str, dict[str, Any]]) -> None:
            if not queue.full():
                queue.put_nowait(item)

        def deliver(kind: str, data: dict[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(put, (kind, data))
            except RuntimeError:  # the loop has closed
                pass

        unsubscribe = service.hub.subscribe(deliver)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n: connected\n\n"
                last = time.monotonic()
                while not service.stopping.is_set():
                    try:
                        kind, data = await asyncio.wait_for(queue.get(), timeout=1.0)
                    except asyncio.TimeoutError:
                        if time.monotonic() - last >= KEEPALIVE:
                            last = time.monotonic()
                            yield ": keep-alive\n\n"
                        continue
                    last = time.monotonic()
                    yield f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
            finally:
                unsubscribe()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema())

    def page(request: Request) -> Response:
        index = os.path.join(STATIC, "index.html")
        if os.path.isfile(index):
            return FileResponse(index, headers={"Cache-Control": "no-cache"})
        return HTMLResponse("<!doctype html><title>mlmake</title><p>mlmake serve is running; "
                            "the API is under <code>/api</code>.</p>")

    routes = [
        Route("/", page),
        Route("/api/openapi.json", openapi),
        Route("/api/endpoints", endpoints),
        Route("/api/endpoints/{name}/runs", trigger, methods=["POST"]),
        Route("/api/runs", runs),
        Route("/api/runs/{id}", run),
        Route("/api/runs/{id}/log", log),
        Route("/api/runs/{id}/outputs/{path:path}", output),
        Route("/api/graph", graph),
        Route("/api/schedules", schedules),
        Route("/api/metrics", metrics),
        Route("/api/experiments", experiments),
        Route("/api/events", events),
        Mount("/static", StaticFiles(directory=STATIC, check_dir=False)),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(_Auth, token=token)],
                    exception_handlers={HTTPException: _http_error,  # type: ignore[dict-item]
                                        BadRequest: _bad_request,  # type: ignore[dict-item]
                                        MlmakeError: _mlmake_error})  # type: ignore[dict-item]
    app.state.service = service
    return app


async def _bad_request(request: Request, exc: BadRequest) -> Response:
    return JSONResponse({"error": exc.message, "detail": exc.detail}, exc.status)


async def _mlmake_error(request: Request, exc: MlmakeError) -> Response:
    return JSONResponse({"error": str(exc), "detail": {"kind": type(exc).__name__}}, 500)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if request.url.path.startswith("/api"):
        msg = {404: f"no such route: {request.method} {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}
        return JSONResponse({"error": msg.get(exc.status_code, exc.detail), "detail": None},
                            exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)


# -- serving -----------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one)."""
    info = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(app: Starlette, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve `app` on `sock` until SIGINT or SIGTERM; running builds are cancelled and their
    worktrees removed before this returns."""
    import uvicorn

    service: Service = app.state.service

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service.stopping.set()  # ends the event streams, so shutdown does not wait
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level=log_level, access_log=log_level == "info",
                            lifespan="on", timeout_graceful_shutdown=5, ws="none")
    _Server(config).run(sockets=[sock])


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the /api routes."""
    err = {"description": "error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}

    def ok(desc: str, schema: dict[str, Any] | None = None,
           kind: str = "application/json") -> dict[str, Any]:
        return {"description": desc, "content": {kind: {"schema": schema or {}}}}

    run_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlmake serve", "version": _version(),
                 "description": "Published pipelines, schedules and run records of an mlmake "
                                "project. Every route needs `Authorization: Bearer TOKEN`."},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "detail": {}}},
                "Trigger": {"type": "object", "additionalProperties": False, "properties": {
                    "params": {"type": "object", "description": "dotted param → value"},
                    "rev": {"type": "string", "description": "branch, tag or commit"}}},
                "Queued": {"type": "object", "properties": {
                    "id": {"type": "string"}, "status": {"const": "queued"},
                    "url": {"type": "string"}, "commit": {"type": "string"}}},
                "Run": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "status": {"enum": ["queued", "running", "succeeded", "failed",
                                        "interrupted"]},
                    "trigger": {"type": "string"}, "endpoint": {"type": ["string", "null"]},
                    "commit": {"type": ["string", "null"]}, "started": {"type": "number"},
                    "finished": {"type": ["number", "null"]},
                    "duration": {"type": ["number", "null"]}, "params": {"type": "object"},
                    "summary": {"type": "object"}, "message": {"type": ["string", "null"]}}},
            },
        },
        "paths": {
            "/api/endpoints": {"get": {"summary": "List the published endpoints",
                                       "responses": {"200": ok("endpoints"), "401": err}}},
            "/api/endpoints/{name}/runs": {"post": {
                "summary": "Trigger a run of an endpoint",
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Trigger"}}}},
                "responses": {"202": ok("queued", {"$ref": "#/components/schemas/Queued"}),
                              "400": err, "401": err, "404": err}}},
            "/api/runs": {"get": {"summary": "Run history, newest first", "parameters": [limit],
                                  "responses": {"200": ok("runs", {"type": "array", "items": {
                                      "$ref": "#/components/schemas/Run"}}), "401": err}}},
            "/api/runs/{id}": {"get": {"summary": "One run with its targets",
                                       "parameters": [run_id],
                                       "responses": {"200": ok("run", {
                                           "$ref": "#/components/schemas/Run"}),
                                           "401": err, "404": err}}},
            "/api/runs/{id}/log": {"get": {
                "summary": "A run's log (all targets, or ?target=T)",
                "parameters": [run_id, {"name": "target", "in": "query",
                                        "schema": {"type": "string"}}],
                "responses": {"200": ok("log", {"type": "string"}, "text/plain"),
                              "401": err, "404": err}}},
            "/api/runs/{id}/outputs/{path}": {"get": {
                "summary": "The bytes of an output as that run produced it",
                "parameters": [run_id, {"name": "path", "in": "path", "required": True,
                                        "schema": {"type": "string"}}],
                "responses": {"200": ok("the bytes", {"type": "string", "format": "binary"},
                                        "application/octet-stream"),
                              "401": err, "404": err, "410": err}}},
            "/api/graph": {"get": {"summary": "The DAG with states and running targets",
                                   "responses": {"200": ok("graph"), "401": err}}},
            "/api/schedules": {"get": {"summary": "Schedules with next fire time and last run",
                                       "responses": {"200": ok("schedules"), "401": err}}},
            "/api/metrics": {"get": {"summary": "Metrics and params across the branch's commits",
                                     "parameters": [limit],
                                     "responses": {"200": ok("metrics"), "401": err}}},
            "/api/experiments": {"get": {
                "summary": "Experiments × params × metrics, and the columns that differ",
                "responses": {"200": ok("experiments"), "401": err}}},
            "/api/events": {"get": {"summary": "Server-sent events: run and target",
                                    "responses": {"200": ok("events", {"type": "string"},
                                                            "text/event-stream"),
                                                  "401": err}}},
        },
    }


def _version() -> str:
    from mlmake import __version__

    return __version__
