"""The one place where errors become HTTP (house rule 6).

Under /v2 the body is the OCI distribution error envelope; everywhere else it is Datagrok's ApiError JSON, which
the grok CLI prints (`#type == 'ApiError'` → message, exit 1) and the Dart client turns into an ApiException.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from grokemu.domain.errors import DiskFull, GrokemuError, disk_full

log = logging.getLogger(__name__)

# OCI error codes by HTTP status, for errors that do not name their own `oci_code`.
_OCI_CODE_BY_STATUS = {400: "UNSUPPORTED", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 405: "UNSUPPORTED",
                       411: "SIZE_INVALID", 413: "SIZE_INVALID", 416: "BLOB_UPLOAD_INVALID", 429: "TOOMANYREQUESTS"}


def api_error_response(status: int, message: str, inner: str = "", headers: dict | None = None) -> Response:
    body = {"#type": "ApiError", "message": message, "innerMessage": inner, "code": status,
            # fetchProxy callers (Bio's pepsea.ts) look for this field on a server-side failure.
            "datagrok-error": message}
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    resp.headers["api-error"] = "true"
    resp.headers.update(headers or {})
    return resp


def oci_error_response(status: int, code: str, message: str, detail=None, headers: dict | None = None) -> Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    resp.headers["Docker-Distribution-API-Version"] = "registry/2.0"
    resp.headers.update(headers or {})
    return resp


def is_registry_path(path: str, blueprint: str | None = None) -> bool:
    # The registry blueprint's token endpoints (/token, /api/docker/token) answer in the OCI envelope too: docker
    # parses a failed token response as one and prints its message ("unauthorized: bad credentials").
    return path == "/v2" or path.startswith("/v2/") or path == "/token" or path == "/api/docker/token" \
        or blueprint == "registry"


def _is_registry_path() -> bool:
    return is_registry_path(request.path, request.blueprint)


def domain_error_response(e: GrokemuError, path: str, blueprint: str | None = None) -> Response:
    headers = getattr(e, "headers", None) or {}
    if is_registry_path(path, blueprint):
        code = getattr(e, "oci_code", None) or _OCI_CODE_BY_STATUS.get(e.status, "UNKNOWN")
        return oci_error_response(e.status, code, e.message, getattr(e, "detail", None), headers)
    return api_error_response(e.status, e.message, e.inner, headers)


def raw_error(e: GrokemuError, path: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """The same answer as a status line, headers and body, for the server to write on a connection before any
    Flask request exists (web/guard.py's preflight)."""
    resp = domain_error_response(e, path)
    return resp.status, [(k, v) for k, v in resp.headers.items() if k.lower() != "content-length"], resp.get_data()


def _answered_on_taken_socket(resp: Response) -> Response:
    """A WebSocket upgrade refused before its handler ran (the guard's 401/403): the server took the connection
    from waitress already, so nothing would write this answer. Write it on the socket as the HTTP answer to the
    upgrade; the caller sees a real status instead of a dropped connection."""
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        body = resp.get_data()
        head = [f"HTTP/1.1 {resp.status}"] + [f"{k}: {v}" for k, v in resp.headers.items()
                                              if k.lower() not in ("content-length", "connection")]
        head += [f"Content-Length: {len(body)}", "Connection: close"]
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            pass
    return resp


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(GrokemuError)
    def _domain_error(e: GrokemuError):
        if isinstance(e, DiskFull):  # raised by a writer that cleaned up; the operator still needs the cause
            log.error("disk full on %s %s: %s", request.method, request.path, e.__cause__ or e)
        return _answered_on_taken_socket(domain_error_response(e, request.path, request.blueprint))

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if _is_registry_path():
            code = _OCI_CODE_BY_STATUS.get(e.code or 500, "UNKNOWN")
            return oci_error_response(e.code or 500, code, e.description or e.name)
        return _answered_on_taken_socket(api_error_response(e.code or 500, e.description or e.name))

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        full = disk_full(e)  # the data directory's disk: 507, not a crash (docs/design.md)
        if full is not None:
            log.error("disk full on %s %s: %s", request.method, request.path, e)
            return _answered_on_taken_socket(domain_error_response(full, request.path, request.blueprint))
        log.exception("unhandled error on %s %s", request.method, request.path)
        if _is_registry_path():
            return oci_error_response(500, "UNKNOWN", f"internal error: {e}")
        return api_error_response(500, f"Internal error: {e}", type(e).__name__)
