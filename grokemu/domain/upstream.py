"""The proxy's ports: how services/proxy.py reaches a plugin container over HTTP and over WebSocket, and the errors
those legs report. adapters/http_upstream.py and adapters/websocket_upstream.py implement them.

Wire facts behind the errors (docs/datagrok-api.md §1.2, §1.3): a container that does not answer is 500
('the server workflow fails' in fetchProxy's JSDoc), a refused WebSocket upgrade 400, a timeout 504
(domain.errors.GatewayTimeout).
"""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Protocol

from grokemu.domain.errors import GrokemuError
from grokemu.domain.model import DockerContainer


@dataclass(frozen=True, slots=True)
class ProxiedRequest:
    """What the server read of a fetchProxy request that its WSGI environ cannot say, for the proxy's legs:
    `header_block`, the caller's header lines exactly as they came (the relay loop has them, server/relay_loop.py).
    Equal blocks shape the same request head for the container (adapters/http_upstream.py) and the same redacted
    headers in the request inspector (services/inspector.py), so both key what they work out once by it.

    The server hands it to the web layer on the environ (`carry`, read back by `proxied_request`: the one place that
    knows the key); from there it is an argument (ProxyService.fast_forward, HttpUpstream.request_head,
    RequestInspector.begin)."""

    header_block: bytes

    def carry(self, environ: dict) -> dict:
        """`environ`, carrying this request to the web layer."""
        environ[_PROXIED_KEY] = self
        return environ


_PROXIED_KEY = "grokemu.proxied"


def proxied_request(environ: dict) -> ProxiedRequest | None:
    """The ProxiedRequest the server put on `environ` (ProxiedRequest.carry), or None (a request waitress parsed)."""
    return environ.get(_PROXIED_KEY)


class UpstreamFailed(GrokemuError):
    """The container did not answer. 500: 'the server workflow fails' in fetchProxy's JSDoc (docs/datagrok-api.md §1.2); only the
    container itself answers other statuses."""

    status = 500


class WebSocketFailed(GrokemuError):
    status = 400


class NotListening(GrokemuError):
    """A started container whose port accepts no connection (a queue worker, or an app that never came up): a
    502-class answer naming the port, not a hang or a bare reset (docs/real-plugins.md)."""

    status = 502


class UpstreamRefused(Exception):
    """The container's port refused the connection: nothing of the request was sent, so it may be tried again
    (the service decides whether to)."""


class Forwarded:
    """The container's answer: status line, headers, and a body iterable whose close() releases everything."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: Iterable[bytes]):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}".rstrip()


@dataclass(slots=True)
class FastForward:
    """A body-less fetchProxy request the server's relay loop sends itself (server/relay_loop.py): where to, the
    request head for the container, built once, and what to call when it is over. Only for a container known to be
    started and listening; everything else takes ProxyService.forward.

    `done(status)` is called exactly once: with the container's status when its answer went out, with None when the
    exchange broke off; it records the request and ends the idle hold. `refused()`: the container's port refused the
    connection before anything was sent; the request then goes the full way (a status check, a restart of an
    on_demand container).

    `explain()` (blocking: never on the loop's thread) says why the exchange broke off when the container ended
    under it (domain/exits.py), or None.

    `recording` (the request inspector's, services/inspector/; None when it is off) is handed the answer's head
    and body bytes as they pass; `done` ends it.

    `pool`: the container's kept-alive sockets, the same the blocking relay uses (HttpUpstream.kept_alive); None
    sends the request on a fresh socket, closed after."""

    cid: str
    name: str
    address: tuple[str, int]
    head: bytes
    method: str
    done: Callable[[int | None], None]
    refused: Callable[[], None]
    explain: Callable[[], str | None] | None = None
    recording: ExchangeRecording | None = None
    pool: KeptAliveSockets | None = None


class KeptAliveSockets(Protocol):
    """One container address's kept-alive sockets, shared by every way a request reaches it (the blocking relay and
    the server's relay loop): one pool per container, one stale-socket rule (adapters/lean_upstream.py LeanPool).
    A *loose* idle socket is checked when it is taken; a *watched* one stays registered with the relay loop, which
    removes it the moment it turns readable, and only the loop takes it."""

    def take(self) -> socket.socket | None:
        """A loose idle socket that still looks alive (not readable), or None: the caller opens a fresh one."""
        ...

    def give(self, sock: socket.socket) -> None:
        """A loose socket whose exchange ended cleanly and that may carry the next request; the pool closes it when
        it is full or closed."""
        ...

    def take_watched(self) -> tuple[socket.socket, object] | None:
        """The relay loop's: a watched idle socket and the record it was given back with, or None."""
        ...

    def give_watched(self, sock: socket.socket, watcher: object) -> bool:
        """The relay loop's: its socket back, still watched; False when not kept (the loop closes it)."""
        ...

    def discard(self, sock: socket.socket) -> None:
        """The relay loop's: a watched idle socket turned readable; it is no longer offered."""
        ...


class ExchangeRecording(Protocol):
    """What the relay loop tells the request inspector about one exchange (services/inspector/rings.py Recording)."""

    def response_meta(self, headers: Iterable[tuple[str, str]], chunked: bool = False) -> tuple: ...

    def answered(self, status: int, meta: tuple, cold_start_ms: float | None = None) -> None: ...

    def body(self, data: bytes) -> None: ...

    def finish(self, status: int | None = None, error: str | None = None) -> None: ...

    def discard(self) -> None: ...


class FrameObserver(Protocol):
    """Sees the bytes a WebSocket relay passes each way (services/inspector/websocket.py WebSocketTap)."""

    def from_caller(self, data: bytes) -> None: ...

    def from_container(self, data: bytes) -> None: ...


class HttpUpstream(Protocol):
    def send(self, c: DockerContainer, method: str, target: str, environ: dict, body: IO[bytes] | None,
             length: int, release: Callable[[], None], identity: str | None = None) -> Forwarded:
        """Send one request to the started container `c` and return its answer, headers shaped for the caller, the
        caller's session token in `x-user-api-key` when `identity` is given (docs/real-plugins.md), the
        body streamed when it is big. `release` is called once the answer no longer needs the container: at once
        for an answer read whole, when the body is closed for a streamed one; never when this raises.
        Raises UpstreamRefused (nothing sent), GatewayTimeout or UpstreamFailed."""
        ...

    def request_head(self, c: DockerContainer, method: str, target: str, environ: dict,
                     identity: str | None = None,
                     relayed: ProxiedRequest | None = None) -> tuple[tuple[str, int], bytes]:
        """The container's address and the head of a body-less request to it, as `send` would write it (`relayed`:
        what the server read of it, so a repeated header block is shaped once)."""
        ...

    def kept_alive(self, cid: str, address: tuple[str, int]) -> KeptAliveSockets:
        """Container `cid`'s kept-alive sockets to `address` (request_head's; replaced, the old ones closed, when the
        container moved to another address)."""
        ...

    def forget(self, cid: str) -> None:
        """Drop what is kept for container `cid` (its connection pool)."""
        ...

    def close(self) -> None:
        """Drop everything kept (every connection pool)."""
        ...


class WebSocketLink(Protocol):
    """A WebSocket to the container after its 101: `early` holds the bytes it sent right after the handshake."""

    early: bytes

    def relay(self, client: socket.socket, on_traffic: Callable[[], None],
              observer: FrameObserver | None = None) -> None:
        """Pass bytes both ways between the caller's socket and the container until both sides are done;
        `on_traffic` is called per chunk relayed, `observer` (the request inspector) shown each chunk."""
        ...

    def close(self) -> None:
        ...


class WebSocketUpstream(Protocol):
    def connect(self, c: DockerContainer, target: str, environ: dict, identity: str | None = None) -> WebSocketLink:
        """The WebSocket handshake with the started container `c` (the caller's token in `x-user-api-key` when
        `identity` is given). Raises WebSocketFailed (not accepted),
        GatewayTimeout or UpstreamFailed."""
        ...
