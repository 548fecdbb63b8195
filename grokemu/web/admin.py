"""grokemu's own controls under /_grokemu: health, reset, a container's logs for `grokemu logs`, and a WebSocket echo
that proves the handoff.

Health is public but says only that grokemu is alive and its version; the details (Docker, URLs, open sockets) need
a session, like everything else here (web/guard.py)."""
from __future__ import annotations

import time

from flask import Blueprint, Response, g, jsonify, request

from grokemu import __version__
from grokemu.domain.container_config import load_json
from grokemu.domain.errors import DOCKER_UNREACHABLE, BadRequest, Busy, PayloadTooLarge
from grokemu.web.context import ctx
from grokemu.web.takeover import direct_answers

blueprint = Blueprint("admin", __name__, url_prefix="/_grokemu")


@blueprint.get("/health")
def health():
    if not g.login:
        return jsonify({"status": "ok", "version": __version__})
    c = ctx()
    orch = c.orchestrator
    reachable = orch.ping()
    return jsonify({
        "status": "ok", "version": __version__, "uptime": round(time.time() - c.started_at, 3),
        "apiUrl": c.settings.api_url,
        "docker": {"reachable": reachable, "message": "ok" if reachable else DOCKER_UNREACHABLE,
                   # when the scheduler first found it gone (grokemu's clock), while it is
                   "unreachableSince": None if reachable else c.spawner.docker_state()["since"]},
        "openWebSockets": c.gauges.read("openWebSockets", 0),
        # keep-alive fetchProxy connections in the relay loop, and the requests it forwarded itself or handed on
        "relay": c.gauges.read("relay"),
        # passes of the background work (reconcile, idle stops, builds) completed since start
        "scheduler": {"passes": c.scheduler.passes},
    })


@blueprint.post("/reset")
def reset():
    return jsonify(ctx().admin.reset())


@blueprint.post("/containers/<container_id>/replace")
def replace_container_image(container_id):
    """`grokemu dev`: {"image": "datagrok/<image name>:<tag>"}, a new build of the container's own image, replaces the
    running container live, keeping the entity (services/spawner.py `replace_image`); answers it once the new one
    serves."""
    limit = ctx().settings.max_api_body_bytes
    raw = request.stream.read(limit + 1)  # the guard checked Content-Length; this bounds any other framing
    if len(raw) > limit:
        raise PayloadTooLarge(f"Body is bigger than {limit} bytes (setting max_api_body_bytes)")
    body = load_json(raw, "replace body") if raw.strip() else None  # bad, deep or huge JSON: 400, never a 500
    if not isinstance(body, dict) or not isinstance(body.get("image"), str) or not body["image"].strip():
        raise BadRequest('The body must be JSON {"image": "datagrok/<image name>:<tag>"}')
    return jsonify(ctx().spawner.replace_image(container_id, body["image"].strip()).to_wire())


MAX_TAIL = 1_000_000  # lines, as the Datagrok logs route's `limit`
LOG_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
               ("X-Content-Type-Options", "nosniff")]


def _tail() -> int | None:
    raw = (request.args.get("tail") or "all").strip().lower()
    if raw == "all":
        return None
    if not raw.isdigit() or int(raw) > MAX_TAIL:
        raise BadRequest(f"tail must be 'all' or a number of lines from 0 to {MAX_TAIL}, not {raw!r}")
    return int(raw)


def _follow() -> bool:
    raw = (request.args.get("follow") or "false").strip().lower()
    if raw not in ("true", "1", "false", "0"):
        raise BadRequest(f"follow must be true or false, not {raw!r}")
    return raw in ("true", "1")


@blueprint.get("/logs")
def container_logs():
    """`?container=NAME` (an id, a container, package or image name: domain/names.py; 404 unknown, 400 ambiguous)
    `&tail=N|all` (default all) `&follow=true`: plain text as the container writes it. A followed log is written by
    a stream thread (server/takeover.py answer_on_stream) until the container stops or the caller goes away."""
    name = (request.args.get("container") or "").strip()
    if not name:
        raise BadRequest("Say which container: ?container=<id, container name, package or image name>")
    tail, follow = _tail(), _follow()
    service = ctx().logs
    container = service.find(name)
    headers = LOG_HEADERS + [("X-Grokemu-Container", container.id)]
    body = service.stream(container, tail, follow)
    takeover = direct_answers(request.environ)
    if follow and takeover is not None and takeover.can_answer_directly(request.environ):
        if not takeover.answer_on_stream(request.environ, "200 OK", headers, body):
            body.close()
            raise Busy(f"Too many streams at once ({ctx().settings.max_streams}, the max_streams setting): "
                       f"try again later")
        return Response(status=200)  # never written: the connection has left waitress
    # not followed (it ends by itself), or no server that can take the connection (the Flask test client)
    return Response(body, status=200, headers=headers)


def register_websockets(sock) -> None:
    @sock.route("/_grokemu/ws-echo")
    def ws_echo(ws):
        while True:
            message = ws.receive()
            if message is None:
                break
            ws.send(message)


MAX_NAME = 300  # characters of a container name in a query


@blueprint.get("/requests")
def inspected_requests():
    """The request inspector (services/inspector.py, docs/inspector.md): `?container=NAME` (as `logs` takes it; 404
    unknown, 400 ambiguous) `&limit=N` (1 to inspector_size; default all kept): the container's recorded fetchProxy
    requests, WebSocket sessions and queue calls, newest first, credentials redacted."""
    name = (request.args.get("container") or "").strip()
    if not name:
        raise BadRequest("Say which container: ?container=<id, container name, package or image name>")
    if len(name) > MAX_NAME:
        raise BadRequest(f"container must be at most {MAX_NAME} characters")
    c = ctx()
    size = c.inspector.size
    raw = (request.args.get("limit") or "").strip()
    limit = None
    if raw:
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= max(size, 1):
            raise BadRequest(f"limit must be a number from 1 to {max(size, 1)} (the inspector_size setting), "
                             f"not {raw[:40]!r}")
        limit = int(raw)
    container = c.logs.find(name)
    resp = jsonify(c.inspector.entries(container.id, limit))
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
