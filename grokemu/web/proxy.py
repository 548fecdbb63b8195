"""fetchProxy and webSocketProxy routes (docs/datagrok-api.md §1.2, §1.3); the decisions are in
services/proxy.py, the caller's WebSocket handshake in web/websocket.py.

    {METHOD} /api/docker/containers/proxy/<id><path>      the container's answer, unchanged
    WebSocket /api/docker/containers/proxy-ws/<id><path>   `CONNECTED`, then frames both ways

The app-wide /api guard authenticates both (Authorization header or the `auth` cookie). For the WebSocket route it
runs before the view too; its 401 would be an HTTP answer that the server's connection takeover never writes, so this module's
WebSocket blueprint turns every error on a handed-off socket into an accepted-then-closed WebSocket whose close
reason the JS client shows.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import cast
from urllib.parse import quote, unquote, urlsplit

from flask import Blueprint, Response, g, request

from grokemu.domain.errors import BadRequest, GrokemuError
from grokemu.services.proxy import Forwarded, ProxyService
from grokemu.web.context import ctx
from grokemu.web.takeover import direct_answers
from grokemu.web.websocket import accept_websocket, close_websocket, reject_websocket, ws_close_code

blueprint = Blueprint("proxy", __name__, url_prefix="/api/docker/containers")
ws_blueprint = Blueprint("proxy_ws", __name__, url_prefix="/api/docker/containers")

HTTP_PREFIX = "/api/docker/containers/proxy/"
WS_PREFIX = "/api/docker/containers/proxy-ws/"
# Every method goes to the container; OPTIONS too (a CORS preflight is the container's business), so Flask's
# automatic OPTIONS answer is off.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
UUID_LENGTH = 36
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _proxy() -> ProxyService:
    return ctx().proxy


def split_target(environ: dict, prefix: str) -> tuple[str, str]:
    """(container id, request target for the container) from the raw request URI, so the path and query reach the
    container exactly as the caller encoded them (`%2F` stays `%2F`). An empty path is `/`."""
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
    if raw and not raw.startswith("/"):  # absolute-form request target
        parts = urlsplit(raw)
        raw = parts.path + (f"?{parts.query}" if parts.query else "")
    if not raw.startswith(prefix):  # a server that gives no raw URI, or an encoded prefix
        raw = prefix + quote(environ.get("PATH_INFO", "")[len(prefix):], safe="/;=@:,$&+!*'()~")
        query = environ.get("QUERY_STRING")
        raw += f"?{query}" if query else ""
    rest = raw[len(prefix):]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    cid, target = unquote(rest[:cut]), rest[cut:]
    if prefix == WS_PREFIX and len(cid) > UUID_LENGTH and _UUID.match(cid):
        # webSocketProxySync does not add the leading '/' that webSocketProxy adds (docs/datagrok-api.md §1.3): `<id>ws` means `<id>/ws`.
        cid, target = cid[:UUID_LENGTH], "/" + cid[UUID_LENGTH:] + target
    if not target.startswith("/"):
        target = "/" + target
    return cid, target


class ProxiedResponse(Response):
    """The container's answer as it is: its status line and headers (case, order and repeats kept) and its body
    bytes, with none of werkzeug's response fix-ups (default Content-Type, Location rewriting, entity headers
    dropped on 304)."""

    default_mimetype = None
    automatically_set_content_length = False

    @classmethod
    def of(cls, answer: Forwarded) -> ProxiedResponse:
        resp = cls(answer.body, status=answer.status_line, direct_passthrough=True)
        resp.headers.clear()
        for name, value in answer.headers:
            resp.headers.add(name, value)
        return resp

    def __call__(self, environ, start_response):
        takeover = direct_answers(environ)
        if (takeover is not None and not isinstance(self.response, list) and "Content-Length" in self.headers
                and takeover.can_answer_directly(environ)):
            # a big answer of known size: written on the socket by this thread, not copied through waitress's
            # output buffers and event loop (server/takeover.py answer_directly); waitress gets nothing to write.
            # Unsized (chunked, server-sent events) answers stay with waitress, which keeps their chunking.
            # the container's answer: bytes (ProxiedResponse.of), whatever werkzeug's Response.response may hold
            takeover.answer_directly(environ, self.status, self.headers.to_wsgi_list(),
                                     cast(Iterable[bytes], self.response))
            start_response("200 OK", [])
            return []
        start_response(self.status, self.headers.to_wsgi_list())
        return self.response  # its close() releases the container's connection and the idle hold


@blueprint.route("/proxy/<path:rest>", methods=METHODS, provide_automatic_options=False)
def fetch_proxy(rest: str):  # noqa: ARG001  (Flask passes the URL part; split_target reads the raw path)
    environ = request.environ
    cid, target = split_target(environ, HTTP_PREFIX)
    length = request.content_length or 0
    body = request.stream if length > 0 else None  # waitress spooled a big body to a file: read in blocks
    return ProxiedResponse.of(_proxy().forward(cid, g.login, request.method, target, environ, body, length,
                                               token=g.token))


@ws_blueprint.route("/proxy-ws/<path:rest>", websocket=True)
def websocket_proxy(rest: str):  # noqa: ARG001  (Flask passes the URL part; split_target reads the raw path)
    environ = request.environ
    cid, target = split_target(environ, WS_PREFIX)
    client = environ.get("werkzeug.socket")
    if client is None:  # no socket to take over (the Flask test client): check what can be checked, in HTTP
        _proxy().ready(cid, g.login)
        raise BadRequest("A WebSocket needs grokemu's server: this request has no socket to upgrade")
    ws = accept_websocket(environ, client)
    if ws is not None:
        try:
            _proxy().websocket(cid, g.login, target, environ, client, token=g.token)
        except GrokemuError as e:
            close_websocket(ws, client, ws_close_code(e.status), e.message)
        except OSError:
            pass  # the caller went away
    return Response(status=101)  # never written: the socket was taken over and is closed by the takeover


def _websocket_error(e: GrokemuError):
    """Errors on the WebSocket route, the guard's 401 included: a close with a reason when there is a socket,
    the usual ApiError answer otherwise."""
    from grokemu.web.errors import domain_error_response

    client = request.environ.get("werkzeug.socket")
    if client is not None:
        reject_websocket(request.environ, client, e)
    return domain_error_response(e, request.path, request.blueprint)


ws_blueprint.register_error_handler(GrokemuError, _websocket_error)
