"""Request hygiene for the web server: health check, cross-site refusal, errors without traces.

* `HealthCheck` answers ``GET /health`` in front of Flask, hence outside the sign-in gate,
  with ``{"status": "ok", "queue": "ok"|"unreachable"}`` and nothing else.
* `install_protection` refuses state-changing requests (POST, PUT, PATCH, DELETE) whose
  ``Origin``/``Referer`` names another site (browsers send them on cross-site requests, and
  would attach a remembered Basic password), refuses malformed callback requests before any
  library parses them, answers every error with a short message (JSON under ``/api/``) and
  never a stack trace, and sets defensive response headers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Container, Iterable
from typing import Any
from urllib.parse import urlsplit

import flask
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CALLBACK_PATH = "/_dash-update-component"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class HealthCheck:
    """WSGI middleware: ``GET /health`` → 200 JSON from `probe()`; everything else passes on."""

    def __init__(self, app: Callable, probe: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.probe = probe

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/health":
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body = json.dumps(self.probe()).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        start_response("200 OK", headers)
        return [body] if environ["REQUEST_METHOD"] == "GET" else [b""]


def _refuse(status: int, message: str) -> flask.Response:
    if flask.request.path.startswith("/api/"):
        return flask.make_response(flask.jsonify(error=message), status)
    return flask.Response(message + "\n", status=status, mimetype="text/plain")


def cross_site_refusal() -> flask.Response | None:
    """403 for a state-changing request that a browser sent from another site; else None.

    Scripts (curl, the API clients) send neither ``Origin`` nor ``Referer`` and pass.
    """
    if flask.request.method not in UNSAFE_METHODS:
        return None
    for header in ("Origin", "Referer"):
        value = flask.request.headers.get(header)
        if value:
            if value != "null" and urlsplit(value).netloc == flask.request.host:
                return None
            return _refuse(
                403,
                f"Cross-site request refused: {header} '{value}' is not this server "
                f"({flask.request.host}).",
            )
    if flask.request.headers.get("Sec-Fetch-Site") == "cross-site":
        return _refuse(403, "Cross-site request refused.")
    return None


def malformed_callback_refusal() -> flask.Response | None:
    """400 for a Dash callback request that is not the JSON object the renderer sends."""
    if flask.request.path != CALLBACK_PATH or flask.request.method != "POST":
        return None
    body = flask.request.get_json(silent=True)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("output"), str)
        or not isinstance(body.get("inputs"), list)
        or not all(isinstance(item, dict | list) for item in body["inputs"])
    ):
        return _refuse(400, "Malformed callback request.")
    return None


def install_protection(
    server: flask.Flask,
    max_upload_mb: float,
    before_auth: bool,
    callbacks: Container[str] = (),
) -> None:
    """Register the hooks: call with `before_auth` True before dash-auth, then False after
    (with the app's `callbacks` map, so a request for an unknown callback is a clear 404)."""
    if before_auth:
        server.before_request(malformed_callback_refusal)
        return
    server.before_request(cross_site_refusal)

    @server.before_request
    def unknown_callback_refusal() -> flask.Response | None:
        if flask.request.path == CALLBACK_PATH and flask.request.method == "POST":
            if flask.request.get_json()["output"] not in callbacks:
                return _refuse(404, "Unknown callback.")
        return None

    @server.after_request
    def security_headers(response: flask.Response) -> flask.Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @server.errorhandler(RequestEntityTooLarge)
    def too_large(_err: HTTPException):
        return _refuse(
            413,
            f"The request is larger than this server accepts (uploads up to {max_upload_mb:g} MB)."
            " Open bigger files from the command line: `velodash run FILE`.",
        )

    @server.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return _refuse(err.code or 500, f"{err.code} {err.name}: {err.description}")

    @server.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("unhandled error on %s %s", flask.request.method, flask.request.path)
        return _refuse(500, "Internal error; the server log has the details.")
