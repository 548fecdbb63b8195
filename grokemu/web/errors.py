"""The one place where errors become HTTP (house rule 6).

Under /v2 the body is the OCI distribution error envelope; everywhere else it is Datagrok's ApiError JSON, which
the grok CLI prints (`#type == 'ApiError'` → message, exit 1) and the Dart client turns into an ApiException.

`render` is the renderer every way out uses: the Flask handlers below, the guard's preflight (web/guard.py), the
fetchProxy fast path (web/fast_proxy.py), the WebSocket upgrade's 400 (web/websocket.py), and through
bootstrap.py's WebHooks the server's own refusals (a full stream pool, a preflight that failed, a request head
waitress's parser refused, a container that did not answer on a relayed connection). Each writes the rendered answer
as it is, or framed by http1.py raw_answer on a connection it closes.
"""
from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from grokemu.domain.errors import DiskFull, GrokemuError, disk_full
from grokemu.http1 import raw_answer

log = logging.getLogger(__name__)

Rendered = tuple[str, list[tuple[str, str]], bytes]  # status line, headers (Content-Length included), body

# OCI error codes by HTTP status, for errors that do not name their own `oci_code`.
_OCI_CODE_BY_STATUS = {400: "UNSUPPORTED", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 405: "UNSUPPORTED",
                       411: "SIZE_INVALID", 413: "SIZE_INVALID", 416: "BLOB_UPLOAD_INVALID", 429: "TOOMANYREQUESTS"}


def _status_line(status: int, reason: str | None = None) -> str:
    # as werkzeug spells it, so an answer reads the same whichever way it went out, unless the error names its own
    return f"{status} {reason or HTTP_STATUS_CODES.get(status, 'unknown').upper()}"


def _answer(status: int, body: dict, headers: list[tuple[str, str]], extra: dict | None,
            reason: str | None = None) -> Rendered:
    # sorted keys, as Flask's JSON provider writes them
    data = json.dumps(body, sort_keys=True, default=str).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))] + headers
    for name, value in (extra or {}).items():  # replaces a header of the same name in place, as werkzeug's update
        lower = name.lower()
        at = next((i for i, h in enumerate(headers) if h[0].lower() == lower), len(headers))
        headers = [h for h in headers if h[0].lower() != lower]
        headers.insert(at, (name, value))
    return _status_line(status, reason), headers, data


def render_api_error(status: int, message: str, inner: str = "", headers: dict | None = None,
                     reason: str | None = None) -> Rendered:
    body = {"#type": "ApiError", "message": message, "innerMessage": inner, "code": status,
            # fetchProxy callers (Bio's pepsea.ts) look for this field on a server-side failure.
            "datagrok-error": message}
    return _answer(status, body, [("api-error", "true")], headers, reason)


def render_oci_error(status: int, code: str, message: str, detail=None, headers: dict | None = None,
                     reason: str | None = None) -> Rendered:
    body = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return _answer(status, body, [("Docker-Distribution-API-Version", "registry/2.0")], headers, reason)


def is_registry_path(path: str, blueprint: str | None = None) -> bool:
    # The registry blueprint's token endpoints (/token, /api/docker/token) answer in the OCI envelope too: docker
    # parses a failed token response as one and prints its message ("unauthorized: bad credentials").
    return path == "/v2" or path.startswith("/v2/") or path == "/token" or path == "/api/docker/token" \
        or blueprint == "registry"


def render(e: GrokemuError, path: str, blueprint: str | None = None) -> Rendered:
    """The answer to the domain error `e` on a request for `path`: the OCI envelope on the registry's paths,
    Datagrok's ApiError JSON everywhere else; the error's own `headers` (WWW-Authenticate, Retry-After) added, and
    its status line's `phrase` when it names one (the server's HTTP parser's refusals)."""
    headers = getattr(e, "headers", None) or {}
    reason = getattr(e, "phrase", None)
    if is_registry_path(path, blueprint):
        code = getattr(e, "oci_code", None) or _OCI_CODE_BY_STATUS.get(e.status, "UNKNOWN")
        return render_oci_error(e.status, code, e.message, getattr(e, "detail", None), headers, reason)
    return render_api_error(e.status, e.message, e.inner, headers, reason)


def render_unexpected(e: Exception, path: str, blueprint: str | None = None) -> Rendered:
    """The answer to an exception no code path expected (the caller logs it): a full disk is 507 (docs/design.md),
    anything else 500 naming it."""
    full = disk_full(e)
    if full is not None:
        return render(full, path, blueprint)
    return render(GrokemuError(f"Internal error: {e}", type(e).__name__), path, blueprint)


def _response(answer: Rendered) -> Response:
    status, headers, body = answer
    return Response(body, status=status, headers=headers)


def api_error_response(status: int, message: str, inner: str = "", headers: dict | None = None) -> Response:
    return _response(render_api_error(status, message, inner, headers))


def oci_error_response(status: int, code: str, message: str, detail=None, headers: dict | None = None) -> Response:
    return _response(render_oci_error(status, code, message, detail, headers))


def domain_error_response(e: GrokemuError, path: str, blueprint: str | None = None) -> Response:
    return _response(render(e, path, blueprint))


def _answered_on_taken_socket(resp: Response) -> Response:
    """A WebSocket upgrade refused before its handler ran (the guard's 401/403): the server took the connection
    from waitress already, so nothing would write this answer. Write it on the socket as the HTTP answer to the
    upgrade; the caller sees a real status instead of a dropped connection."""
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.sendall(raw_answer(resp.status, resp.headers.items(), resp.get_data()))
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
        if is_registry_path(request.path, request.blueprint):
            code = _OCI_CODE_BY_STATUS.get(e.code or 500, "UNKNOWN")
            return oci_error_response(e.code or 500, code, e.description or e.name)
        return _answered_on_taken_socket(api_error_response(e.code or 500, e.description or e.name))

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        if disk_full(e) is not None:
            log.error("disk full on %s %s: %s", request.method, request.path, e)
            return _answered_on_taken_socket(_response(render_unexpected(e, request.path, request.blueprint)))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _response(render_unexpected(e, request.path, request.blueprint))
