"""grokemu's own controls under /_grokemu: health, reset, and a WebSocket echo that proves the handoff.

Health is public but says only that grokemu is alive and its version; the details (Docker, URLs, open sockets) need
a session, like everything else here (web/guard.py)."""
from __future__ import annotations

import time

from flask import Blueprint, g, jsonify

from grokemu import __version__

blueprint = Blueprint("admin", __name__, url_prefix="/_grokemu")


def _ctx():
    from grokemu.app import ctx

    return ctx()


@blueprint.get("/health")
def health():
    if not g.login:
        return jsonify({"status": "ok", "version": __version__})
    c = _ctx()
    orch = c.orchestrator
    reachable = bool(orch and orch.ping())
    handoff = c.services.get("websockets")
    return jsonify({
        "status": "ok", "version": __version__, "uptime": round(time.time() - c.started_at, 3),
        "apiUrl": c.settings.api_url,
        "docker": {"reachable": reachable,
                   "message": "ok" if reachable else "Docker daemon unreachable: containers cannot be built or run"},
        "openWebSockets": handoff.open_websockets if handoff else 0,
    })


@blueprint.post("/reset")
def reset():
    return jsonify(_ctx().admin.reset())


def register_websockets(sock) -> None:
    @sock.route("/_grokemu/ws-echo")
    def ws_echo(ws):
        while True:
            message = ws.receive()
            if message is None:
                break
            ws.send(message)
