"""grokemu's own controls under /_grokemu: health, reset, and a WebSocket echo that proves the handoff.

Health is public but says only that grokemu is alive and its version; the details (Docker, URLs, open sockets) need
a session, like everything else here (web/guard.py)."""
from __future__ import annotations

import time

from flask import Blueprint, g, jsonify

from grokemu import __version__
from grokemu.web.context import ctx

blueprint = Blueprint("admin", __name__, url_prefix="/_grokemu")


@blueprint.get("/health")
def health():
    if not g.login:
        return jsonify({"status": "ok", "version": __version__})
    c = ctx()
    orch = c.orchestrator
    reachable = bool(orch and orch.ping())
    takeover = c.takeover
    return jsonify({
        "status": "ok", "version": __version__, "uptime": round(time.time() - c.started_at, 3),
        "apiUrl": c.settings.api_url,
        "docker": {"reachable": reachable,
                   "message": "ok" if reachable else "Docker daemon unreachable: containers cannot be built or run"},
        "openWebSockets": takeover.open_websockets if takeover else 0,
        # keep-alive fetchProxy connections in the relay loop, and the requests it forwarded itself or handed on
        "relay": {"connections": loop.connections, "forwarded": loop.forwarded, "handedOff": loop.handed_off}
        if (loop := getattr(takeover, "loop", None)) is not None else None,
    })


@blueprint.post("/reset")
def reset():
    return jsonify(ctx().admin.reset())


def register_websockets(sock) -> None:
    @sock.route("/_grokemu/ws-echo")
    def ws_echo(ws):
        while True:
            message = ws.receive()
            if message is None:
                break
            ws.send(message)
