"""fetchProxy and webSocketProxy: forward a caller to a plugin container, starting it when it is on_demand.

This module keeps the decisions: which container answers (ready: 404 unknown, 400 stopped, start-and-wait when
on_demand, 504 after proxy_request_timeout), when a request is tried again, the cold-start header, `CONNECTED`,
and the idle holds. The transport is behind the ports of domain/upstream.py (adapters/http_upstream.py,
adapters/websocket_upstream.py); the caller's WebSocket handshake is the web layer's (web/websocket.py).

Wire facts (docs/datagrok-api.md §1.2, §1.3):
- The container's answer comes back "as it is": status, headers and body bytes unchanged. grokemu's own failures
  are ApiError JSON with `datagrok-error`.
- A WebSocket is linked to the container, then the server sends the text frame `CONNECTED`; the client's helper
  resolves on it. A close before `CONNECTED` rejects with `Could not open WebSocket connection: <reason>`, so every
  failure before it is a GrokemuError the web layer turns into a close with a reason.

The container is only ever reached on 127.0.0.1 and the port the spawner published (docs/design.md decision 4), or,
with the `docker_network` setting (the compose stand), at its own address on that network (nothing published).

Idle shutdown: every request touches the container; a response still streaming or an open WebSocket holds it
(`ActivityTracker.hold`, services/activity.py), so the idle clock never stops a container mid-use (Sablier #576 is that bug).
"""
from __future__ import annotations

import socket
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import IO, TYPE_CHECKING, cast

from grokemu.domain.errors import DockerUnavailable, GrokemuError, NotFound
from grokemu.domain.model import DockerContainer
from grokemu.domain.upstream import (
    FastForward,
    Forwarded,
    HttpUpstream,
    NotListening,
    ProxiedRequest,
    UpstreamFailed,
    UpstreamRefused,
    WebSocketFailed,
    WebSocketUpstream,
)

if TYPE_CHECKING:
    from grokemu.config import Settings
    from grokemu.services.activity import ActivityTracker
    from grokemu.services.inspector import Recording, RequestInspector
    from grokemu.services.spawner import Spawner

__all__ = ["COLD_START_HEADER", "Forwarded", "ProxyService", "UpstreamFailed", "WebSocketFailed", "WS_CONNECTED"]

COLD_START_HEADER = "X-Grokemu-Cold-Start-Ms"  # KEDA's HTTP add-on answers X-KEDA-HTTP-Cold-Start (docs/peers.md §2)
LOOPBACK = "127.0.0.1"
WS_CONNECTED = b"\x81\x09CONNECTED"  # one unmasked FIN text frame: what Datagrok sends once both sides are linked


class ProxyService:
    def __init__(self, spawner: Spawner, activity: ActivityTracker, settings: Settings, *, http: HttpUpstream,
                 websockets: WebSocketUpstream, inspector: RequestInspector | None = None):
        # what passes is recorded for the request inspector (docs/inspector.md) unless it is off (inspector_size 0)
        self._inspector = inspector if inspector is not None and inspector.enabled else None
        self._spawner = spawner
        self._activity = activity  # every request touches the container; a stream or a WebSocket holds it
        self._settings = settings
        self._http = http
        self._websockets = websockets
        # container id -> (spawner generation, the started entity): a started container stays started, on the same
        # port, until some container changes status, so the hot path skips the database read of ensure_ready.
        self._started: dict[str, tuple[int, DockerContainer]] = {}

    def forget(self, cid: str) -> None:
        """A container was deleted: its kept-alive upstream sockets are closed, its started entry dropped."""
        self._started.pop(cid, None)
        self._http.forget(cid)

    def reset(self) -> None:
        """Forget every started container and every upstream connection (admin reset)."""
        self._started.clear()
        self._http.close()

    def ready(self, cid: str, login: str) -> tuple[DockerContainer, float | None]:
        """404 unknown, 400 stopped and not on_demand, start-and-wait when on_demand, 504 after
        `proxy_request_timeout` (Datagrok's proxyRequestTimeout)."""
        generation = self._spawner.generation  # read first: a change landing meanwhile leaves the entry stale
        seen = self._started.get(cid)
        if seen is not None and seen[0] == generation:
            return seen[1], None
        c, cold_ms = self._spawner.ensure_ready(cid, login, self._settings.proxy_request_timeout)
        if not c.port:
            raise UpstreamFailed(f"Container {c.name} is started but has no published port")
        self._started[cid] = (generation, c)
        return c, cold_ms

    def reachable(self, cid: str, login: str) -> tuple[DockerContainer, float | None]:
        """`ready`, and for a container started although its port never accepted (a worker, a database that never
        came up: services/spawner/drivers.py `_check`), a look whether it listens now; 502 naming the port when not."""
        c, cold_ms = self.ready(cid, login)
        if not self._spawner.listening(c):
            self._started.pop(cid, None)
            raise NotListening(f"Container {c.name} is started but nothing listens on port "
                               f"{c.container_port or c.port}: it answers no HTTP (a queue worker or a non-HTTP "
                               f"server)")
        return c, cold_ms

    # fetchProxy -------------------------------------------------------------------------------------------------
    def forward(self, cid: str, login: str, method: str, target: str, environ: dict,
                body: IO[bytes] | None, length: int, token: str | None = None) -> Forwarded:
        """Send one request to the container and return its answer, the body streamed when it is big; the idle
        hold lasts until the answer's body is closed. `token` is the caller's session token: the container gets it
        as the caller's identity (`x-user-api-key`, docs/real-plugins.md); it is revoked with the session."""
        rec = None
        try:
            c, cold_ms = self.reachable(cid, login)
        except GrokemuError as e:
            if self._inspector is not None and not isinstance(e, NotFound):  # a known container that could not serve
                failed = self._inspector.begin(cid, method, target, environ, token)
                if failed is not None:
                    failed.finish(e.status, e.message)
            raise
        if self._inspector is not None:
            rec = self._inspector.begin(cid, method, target, environ, token)
            if rec is not None and body is not None:
                body = cast(IO[bytes], _TeeUpload(body, rec))  # reads like the body it wraps
        send = partial(self._http.send, identity=token)
        release = ExitStack()
        release.enter_context(self._activity.hold(cid))
        try:
            with self._explained(c):
                answer, cold_ms = self._send(cid, login, c, cold_ms, send, method, target, environ, body, length,
                                             release)
            if cold_ms is not None:
                answer.headers.append((COLD_START_HEADER, str(round(cold_ms))))
            self._activity.record_request(cid, answer.status, cold_ms)  # the dashboard's card numbers
            if rec is not None:
                rec.answered(answer.status, rec.response_meta(answer.headers), cold_ms)
                answer.body = _recorded_body(answer.body, rec)
            return answer
        except GrokemuError as e:
            release.close()
            if rec is not None:
                rec.finish(e.status, e.message)
            raise
        except BaseException:
            release.close()
            if rec is not None:
                rec.finish(None)
            raise

    @contextmanager
    def _explained(self, c: DockerContainer):
        """A container that ended under a request (out of memory, a signal, a crash): the caller reads why
        (domain/exits.py), not only that the connection broke."""
        try:
            yield
        except UpstreamFailed as e:
            self._started.pop(c.id, None)
            try:
                reason = self._spawner.explain_broken(c.id)
            except DockerUnavailable as gone:  # the daemon went away (a restart takes its containers with it): 503
                raise DockerUnavailable(f"Container {c.name} did not answer: {gone.message}", e.message) from e
            if reason:
                raise UpstreamFailed(f"Container {c.name} did not answer: {reason}", e.message) from e
            raise

    def _send(self, cid: str, login: str, c: DockerContainer, cold_ms: float | None, send, method: str,
              target: str, environ: dict, body: IO[bytes] | None, length: int,
              release: ExitStack) -> tuple[Forwarded, float | None]:
        try:
            return send(c, method, target, environ, body, length, release.close), cold_ms
        except UpstreamRefused:
            # Nothing was sent. The container may have been stopped (idle, by a user) between the status check
            # and the connect: look again, which starts an on_demand one, and try once more.
            self._started.pop(cid, None)
            c, again_ms = self.reachable(cid, login)
            cold_ms = cold_ms if again_ms is None else again_ms
            try:
                return send(c, method, target, environ, body, length, release.close), cold_ms
            except UpstreamRefused as e:
                if not self._spawner.started_again(c):
                    raise UpstreamFailed(f"Container {c.name} did not answer on {c.address or LOOPBACK}:{c.port}: "
                                         f"connection refused") from e
            # the Docker daemon restarted and took the container down; it is being run again: wait for it
            # (docs/faults.md §4), then this request goes to the new one. Still nothing was sent, so it may.
            self._started.pop(cid, None)
            c, again_ms = self.reachable(cid, login)
            cold_ms = cold_ms if again_ms is None else again_ms
            try:
                return send(c, method, target, environ, body, length, release.close), cold_ms
            except UpstreamRefused as e:
                raise UpstreamFailed(f"Container {c.name} did not answer on {c.address or LOOPBACK}:{c.port}: "
                                     f"connection refused") from e

    def fast_forward(self, cid: str, method: str, target: str, environ: dict,
                     token: str | None = None, relayed: ProxiedRequest | None = None) -> FastForward | None:
        """A body-less request for the relay loop to send itself (server/relay_loop.py), or None when the container
        is not known started and listening (the first request, a cold start, a container with warnings): then
        `forward` serves it. The same rules as `forward`: the idle hold from now until `done`, the request counted
        with the container's status, the caller's token as its identity. `relayed`: what the relay loop read of the
        request (its header lines), so what repeats is worked out once."""
        seen = self._started.get(cid)
        if seen is None or seen[0] != self._spawner.generation or self._spawner.may_not_listen(seen[1]):
            return None
        c = seen[1]
        address, head = self._http.request_head(c, method, target, environ, identity=token, relayed=relayed)
        activity = self._activity
        rec = self._inspector.begin(cid, method, target, environ, token, relayed=relayed) \
            if self._inspector is not None else None
        activity.begin_hold(cid)

        def done(status: int | None) -> None:
            try:
                if status is not None:
                    activity.record_request(cid, status, None)
                if rec is not None:
                    rec.finish(status)
            finally:
                activity.end_hold(cid)

        def refused() -> None:
            # the container was stopped between two requests: the next look goes to the spawner
            self._started.pop(cid, None)

        def explain() -> str | None:
            self._started.pop(cid, None)
            return self._spawner.explain_broken(cid)

        return FastForward(cid, c.name, address, head, method, done, refused, explain, rec,
                           self._http.kept_alive(cid, address))

    # webSocketProxy ---------------------------------------------------------------------------------------------
    def websocket(self, cid: str, login: str, target: str, environ: dict, client: socket.socket,
                  token: str | None = None) -> None:
        """For a caller whose upgrade was accepted (web/websocket.py): make sure the container runs, link it to the
        container's WebSocket, send `CONNECTED`, then relay until either side closes. A GrokemuError means nothing
        was linked (the caller is closed with its reason); OSError, that the caller went away."""
        c, _ = self.reachable(cid, login)
        with self._activity.hold(cid):
            try:
                with self._explained(c):
                    link = self._websockets.connect(c, target, environ, identity=token)
            except GrokemuError as e:
                if self._inspector is not None:  # a refused upgrade is a session that never opened
                    tap = self._inspector.websocket(cid, target, environ, token)
                    if tap is not None:
                        tap.refused(e.status, e.message)
                raise
            tap = self._inspector.websocket(cid, target, environ, token) if self._inspector is not None else None
            try:
                client.sendall(WS_CONNECTED + link.early)
                if tap is not None and link.early:
                    tap.from_container(link.early)
                link.relay(client, partial(self._activity.touch, cid), tap)
            finally:
                link.close()
                if tap is not None:
                    tap.close()


class _TeeUpload:
    """The request body as the upstream reads it, its first bytes seen by the inspector on the way."""

    def __init__(self, body: IO[bytes], rec: Recording):
        self._body = body
        self._rec = rec

    def read(self, size: int = -1) -> bytes:
        data = self._body.read(size)
        if data:
            self._rec.request_body_bytes(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self._body, name)


def _recorded_body(body, rec: Recording):
    """The answer body with the inspector watching it pass: a body read whole (a list) is recorded at once and
    stays a list (web/proxy.py answers those itself); a streamed one is wrapped, and its close() ends the entry."""
    if isinstance(body, list):
        for chunk in body:
            rec.body(chunk)
        rec.finish()
        return body
    return _RecordedStream(body, rec)


class _RecordedStream:
    __slots__ = ("_body", "_rec", "_it")

    def __init__(self, body, rec: Recording):
        self._body = body
        self._rec = rec
        self._it = iter(body)

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        data = next(self._it)
        self._rec.body(data)
        return data

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._rec.finish()
