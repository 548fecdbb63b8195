"""Queue functions on the wire: the entity lookup the JS client resolves `Pkg:func` with, the call socket
`/api/log/funcs/call/stream` it calls through, and the pipe `/<call id>` the Celery worker opens
(docs/queue-functions.md; services/calls.py does the work).

Both sockets are WebSockets on a connection the server took over from waitress; simple-websocket frames them with a
per-frame size cap (`max_call_frame_bytes`). A refusal before the socket opens (the guard's 401, a wrong pipe key)
is an accepted upgrade closed with 4000 + the HTTP status and the reason, as on the proxy's WebSocket route.
"""
from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, Response, g, jsonify, request
from simple_websocket import ConnectionClosed, Server

from grokemu.domain.errors import BadRequest, GrokemuError
from grokemu.web.context import ctx
from grokemu.web.websocket import reject_websocket

log = logging.getLogger(__name__)

blueprint = Blueprint("functions", __name__, url_prefix="/api")
ws_blueprint = Blueprint("functions_ws", __name__)
RECEIVE_TICK = 1.0  # seconds between checks of a session's state while nothing arrives


class WebSocketChannel:
    """FrameChannel over a simple-websocket Server: one lock for every sender (the call's dispatch thread, the
    broker's consumer, the pipe's reader)."""

    def __init__(self, ws: Server):
        self._ws = ws
        self._lock = threading.Lock()

    def send_text(self, text: str) -> None:
        self._send(text)

    def send_binary(self, data: bytes) -> None:
        self._send(data)

    def _send(self, data: str | bytes) -> None:
        with self._lock:
            try:
                self._ws.send(data)
            except ConnectionClosed as e:
                raise OSError(f"the WebSocket closed ({e.reason})") from None

    def close(self, code: int = 1000, reason: str = "") -> None:
        with self._lock:
            try:
                self._ws.close(reason=code, message=reason[:120])
            except Exception:  # closed already
                pass


def _socket_of_request():
    client = request.environ.get("werkzeug.socket")
    if client is None:  # the Flask test client: nothing to upgrade
        raise BadRequest("A WebSocket needs grokemu's server: this request has no socket to upgrade")
    return client


def _server(environ) -> Server:
    return Server(environ, max_message_size=ctx().settings.max_call_frame_bytes + 4)


@blueprint.get("/entities")
def entities():
    """Datagrok's entity search, for what the JS client asks of it: DockerFuncs by shortName and namespace."""
    text = request.args.get("text", "")
    return jsonify([f.to_wire() for f in ctx().functions.query(text)])


@blueprint.get("/docker/functions")
def list_functions():
    """grokemu's own listing (the page, the test kit): every registered function with its container."""
    return jsonify([f.to_wire() for f in ctx().functions.all()])


@ws_blueprint.route("/api/log/funcs/call/stream", websocket=True)
def call_stream():
    """`LISTENING` first, `PING` → `PING REPLY`, then multiplexed call frames until the client closes."""
    _socket_of_request()
    c = ctx()
    ws = _server(request.environ)
    channel = WebSocketChannel(ws)
    session = c.calls.session(channel, g.login, g.token)
    try:
        ws.send("LISTENING")
        while True:
            message = ws.receive(timeout=RECEIVE_TICK)
            if message is None:
                continue
            if message == "PING":
                channel.send_text("PING REPLY")
                continue
            session.frame(message)
    except (ConnectionClosed, OSError):
        pass
    finally:
        session.closed()
        channel.close()
    return Response(status=101)


@ws_blueprint.route("/<uuid:call_id>", websocket=True)
def pipe(call_id):
    """The worker's side of a call (grok_pipe's room `/<call id>`): its frames go to the client, the client's to
    it. Only the container the call was sent to may join, with its own pipe key."""
    c = ctx()
    call = c.calls.join_pipe(str(call_id), request.environ.get("HTTP_AUTHORIZATION", ""))
    _socket_of_request()
    ws = _server(request.environ)
    channel = WebSocketChannel(ws)
    c.calls.attach_pipe(call, channel)
    member = request.environ.get("HTTP_X_MEMBER_NAME", "")[:100]
    log.info("pipe %s joined by %s", call.id, member or "a worker")
    began = time.monotonic()
    try:
        while True:
            message = ws.receive(timeout=RECEIVE_TICK)
            if message is None:
                if call.state.value == "finished":
                    break
                continue
            c.calls.pipe_frame(call, message)
    except (ConnectionClosed, OSError):
        pass
    finally:
        c.calls.pipe_closed(call)
        channel.close()
        log.debug("pipe %s closed after %.1f s", call.id, time.monotonic() - began)
    return Response(status=101)


def _websocket_error(e: GrokemuError):
    from grokemu.web.errors import domain_error_response

    client = request.environ.get("werkzeug.socket")
    if client is not None and request.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
        reject_websocket(request.environ, client, e)
    return domain_error_response(e, request.path, request.blueprint)


ws_blueprint.register_error_handler(GrokemuError, _websocket_error)
