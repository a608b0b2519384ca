"""A small client of a running `mlmake serve` (urllib): trigger an endpoint, read a run."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mlmake.errors import UsageError

DEFAULT_URL = "http://127.0.0.1:8765"
ADDRESS_FILE = "serve.json"  # under .mlmake/: where a running service listens (no token)


class ServiceError(UsageError):
    """The service refused a request (4xx) or cannot be reached; `status` is the HTTP code
    (0 when nothing answered)."""

    def __init__(self, message: str, status: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def find_service(state_dir: str | None) -> tuple[str | None, str | None]:
    """The URL a service of this project recorded, and the token in .mlmake/serve-token."""
    url = token = None
    if state_dir:
        try:
            with open(os.path.join(state_dir, ADDRESS_FILE), encoding="utf-8") as fh:
                url = json.load(fh).get("url")
        except (OSError, ValueError, AttributeError):
            pass
        try:
            with open(os.path.join(state_dir, "serve-token"), encoding="utf-8") as fh:
                token = fh.read().strip() or None
        except OSError:
            pass
    return url, token


class Client:
    """Calls the /api routes of the service at `url` with a bearer token."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"error": raw.decode("utf-8", "replace").strip() or exc.reason}
            msg = payload.get("error") if isinstance(payload, dict) else str(payload)
            if exc.code == 401:
                msg = (f"the service at {self.url} refused the token; pass --token, set "
                       "MLMAKE_SERVE_TOKEN, or run from the project whose .mlmake/serve-token "
                       "it uses.")
            raise ServiceError(str(msg), exc.code,
                               payload.get("detail") if isinstance(payload, dict) else None
                               ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(f"no mlmake service answers at {self.url} ({reason}). Start one "
                               "with `mlmake serve`, or pass --url.") from None
        return json.loads(raw) if raw else None

    def trigger(self, endpoint: str, params: dict[str, Any] | None = None,
                rev: str | None = None) -> dict[str, Any]:
        """POST /api/endpoints/ENDPOINT/runs; returns {"id", "status", "url", ...}."""
        body: dict[str, Any] = {}
        if params:
            body["params"] = params
        if rev:
            body["rev"] = rev
        return self.call("POST", f"/api/endpoints/{urllib.parse.quote(endpoint, safe='')}/runs",
                         body)

    def run(self, run_id: str) -> dict[str, Any]:
        """GET /api/runs/ID."""
        return self.call("GET", f"/api/runs/{urllib.parse.quote(run_id, safe='')}")
