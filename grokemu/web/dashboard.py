"""The dashboard's own routes: the live feed, the snapshot, Download context and Rebuild. The page itself
is web/ui.py; its script and styles are files in web/static/ (the page's CSP is `default-src 'self'`: no inline
script, no CDN, no build step).

Every route here needs a session (web/guard.py: an endpoint not in POLICIES does), and the WebSocket upgrade passes
the same Host / Origin / Sec-Fetch rules as any request (docs/security.md, rules 1-4), so another origin can neither
open the feed nor read it. Start / Stop / Delete use the Datagrok API routes the JS client uses (web/api.py).

The live feed (`/_grokemu/live`, flask-sock on its own thread, docs/design.md decision 2) sends the whole snapshot
whenever something changed (services/activity.py `subscribe`: the spawner's `_notify`, image status writes and the
proxy's numbers), at most four times a second; and, for the container the page follows, its log tail once a second
when it changed, and its request inspector entries (the Requests tab: the newest REQUESTS_SENT, at most every
REQUESTS_POLL seconds, when its ring changed); and, every RESYNC seconds, the snapshot again if it differs from the last one sent. The page sends
`{"follow": <container id or null>}`. A session that ends (logout, expiry) ends the feed with a `bye` message.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from flask import Blueprint, Response, current_app, g, jsonify

from grokemu.domain.errors import GrokemuError
from grokemu.services.dashboard import DashboardService
from grokemu.web.context import ctx

log = logging.getLogger(__name__)
blueprint = Blueprint("dashboard", __name__, url_prefix="/_grokemu")

SERVICE = "grokemu.dashboard"
FEED_TICK = 0.25  # s between looks at the change flag (the most snapshots a second is 1 / FEED_TICK)
LOG_POLL = 1.0  # s between log tails of the followed container
LOG_LINES = 500
REQUESTS_POLL = 0.5  # s between looks at the followed container's inspector ring
REQUESTS_SENT = 50  # entries sent for the Requests tab
SESSION_RECHECK = 15.0  # s between checks that the feed's session is still valid
# s between looks at the snapshot without a notification: a safety net for a change notified inside a store
# transaction (images' status writes) and read before its commit
RESYNC = 2.0


def service() -> DashboardService:
    svc = current_app.extensions.get(SERVICE)
    if svc is None:
        c = ctx()
        svc = current_app.extensions.setdefault(SERVICE, DashboardService(
            c.store, c.clock, c.activity, c.images, c.package_files, c.functions, c.calls,
            docker=c.spawner.docker_state))
    return svc


@blueprint.get("/dashboard/snapshot")
def snapshot():
    return jsonify(service().snapshot())


@blueprint.get("/images/<image_id>/context.zip")
def download_context(image_id: str):
    name, data = service().context_zip(image_id)
    return Response(data, mimetype="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})


@blueprint.post("/images/<image_id>/rebuild")
def rebuild_image(image_id: str):
    return jsonify(service().rebuild(image_id).to_wire())


def register_websockets(sock) -> None:
    @sock.route("/_grokemu/live")
    def live_feed(ws):
        c = ctx()
        svc = service()
        token = g.token
        changed = threading.Event()
        unsubscribe = c.activity.subscribe(lambda _kind: changed.set())
        changed.set()
        follow, last_logs, next_logs = None, None, 0.0
        last_requests, next_requests = -1, 0.0
        last_sent, next_resync = None, 0.0
        next_auth = time.monotonic() + SESSION_RECHECK
        try:
            while True:
                now = time.monotonic()
                if now >= next_auth:
                    next_auth = now + SESSION_RECHECK
                    try:
                        c.auth.authenticate(token)
                    except GrokemuError:
                        ws.send(json.dumps({"type": "bye", "reason": "Your session ended: sign in again."}))
                        return
                if changed.is_set() or now >= next_resync:
                    changed.clear()
                    next_resync = now + RESYNC
                    snap = svc.snapshot()
                    entities = json.dumps([snap["containers"], snap["images"]])
                    if entities != last_sent:
                        last_sent = entities
                        ws.send(json.dumps({"type": "snapshot", **snap}))
                if follow and now >= next_logs:
                    next_logs = now + LOG_POLL
                    try:
                        text = c.spawner.logs(follow, LOG_LINES)
                    except GrokemuError as e:
                        text = f"({e.message})"
                    if text != last_logs:
                        last_logs = text
                        ws.send(json.dumps({"type": "logs", "id": follow, "text": text}))
                if follow and now >= next_requests:
                    next_requests = now + REQUESTS_POLL
                    version = c.inspector.version(follow)
                    if version != last_requests:
                        last_requests = version
                        ws.send(json.dumps({"type": "requests", "id": follow,
                                            "entries": c.inspector.entries(follow, REQUESTS_SENT)}))
                message = ws.receive(timeout=FEED_TICK)
                if message is None:
                    continue
                try:
                    wanted = json.loads(message).get("follow")
                except (ValueError, AttributeError, RecursionError):
                    continue
                if wanted is None or (isinstance(wanted, str) and len(wanted) <= 100):
                    follow, last_logs, next_logs = wanted, None, 0.0
                    last_requests, next_requests = -1, 0.0
        except Exception as e:  # the page went away (ConnectionClosed) or the socket broke: nothing to tell anyone
            log.debug("live feed closed: %r", e)
            return
        finally:
            unsubscribe()
