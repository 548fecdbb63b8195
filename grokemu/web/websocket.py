"""The caller's side of a WebSocket on a connection the server took from waitress: accept the upgrade (wsproto's
server side), close with a code and a reason, or reject a request that failed before its view ran.

Datagrok's client helper resolves on the text frame `CONNECTED`; a close before it rejects with `Could not open
WebSocket connection: <reason>` (docs/datagrok-api.md §1.3), so every failure before it closes with a
reason the client can show.
"""
from __future__ import annotations

import socket

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request
from wsproto.utilities import RemoteProtocolError

from grokemu.domain.errors import BadRequest, GrokemuError
from grokemu.http1 import raw_answer
from grokemu.web import errors


def ws_close_code(status: int) -> int:
    """Close code for a failure before CONNECTED: 4000 + the HTTP status it would have had (4401, 4404, 4400,
    4504); 4000-4999 is the application range of RFC 6455 §7.4.2."""
    return 4000 + status if 100 <= status <= 599 else 1011


def _request_head(environ: dict) -> bytes:
    """The caller's upgrade request as bytes for wsproto; waitress parsed it already, so it is rebuilt from the
    environ (as simple-websocket's Server does)."""
    target = environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/"
    lines = [f"GET {target} HTTP/1.1"]
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            lines.append(f"{key[5:].replace('_', '-')}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def accept_websocket(environ: dict, client: socket.socket) -> WSConnection | None:
    """Answer the caller's upgrade with 101, no extension and no subprotocol (adapters/websocket_upstream.py relays
    frames as bytes); wsproto checks the request and computes the accept key. A request that is not a valid upgrade
    gets an HTTP 400 and None."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(_request_head(environ))
        request_event = next(iter(ws.events()), None)
        if not isinstance(request_event, Request):
            raise RemoteProtocolError("not a WebSocket upgrade", event_hint=RejectConnection())
        client.sendall(ws.send(AcceptConnection()))
    except RemoteProtocolError as e:
        answer = errors.render(BadRequest(f"Bad WebSocket upgrade: {e}"), environ.get("PATH_INFO") or "")
        try:
            client.sendall(raw_answer(*answer))
        except OSError:
            pass
        return None
    except OSError:
        return None
    environ["grokemu.websocket"] = ws
    return ws


def close_websocket(ws: WSConnection, client: socket.socket, code: int, reason: str) -> None:
    """Send a close frame (wsproto keeps the reason within RFC 6455's 123 bytes) and wait briefly for the
    caller's close."""
    reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
    try:
        client.sendall(ws.send(CloseConnection(code=code, reason=reason)))
        client.settimeout(2.0)
        client.shutdown(socket.SHUT_WR)
        while client.recv(4096):  # the caller's close frame, then its FIN
            pass
    except OSError:
        pass


def reject_websocket(environ: dict, client: socket.socket, error: GrokemuError) -> None:
    """A failure before the view ran (the /api guard's 401, the server's cap on open WebSockets) or in it: accept
    (unless done already), then close with 4000 + the error's status and its message as the reason, so the JS
    client rejects with `Could not open WebSocket connection: <message>` rather than a bare error event."""
    ws = environ.get("grokemu.websocket") or accept_websocket(environ, client)
    if ws is not None:
        close_websocket(ws, client, ws_close_code(error.status), error.message)
