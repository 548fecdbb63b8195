"""WebSockets to plugin containers (the WebSocketUpstream port of domain/upstream.py): the handshake with the
container on 127.0.0.1:<port> (wsproto builds and checks it), then two byte pumps.

Both legs negotiate no extension and no subprotocol (web/websocket.py accepts the caller's side that way), so a
frame means the same bytes on both: a caller's frame is masked as a client frame must be, a container's frame is
unmasked as a server frame must be. After the handshakes the relay passes frames through byte for byte, close
frames and their codes included (as nginx does after an upgrade), without re-framing every message in Python.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError

from grokemu.adapters.upstream_headers import forwarded_headers, upstream_address, upstream_port
from grokemu.domain.errors import GatewayTimeout
from grokemu.domain.model import DockerContainer
from grokemu.domain.upstream import UpstreamFailed, WebSocketFailed

WS_RELAY_CHUNK = 64 * 1024
WS_LINGER = 10.0  # seconds the other direction may take to finish once one side has closed


class WebSocketDialer:
    """WebSocketUpstream over plain sockets; `timeout` bounds the container's answer to the upgrade
    (proxy_request_timeout)."""

    def __init__(self, timeout: float):
        self._timeout = timeout

    def connect(self, c: DockerContainer, target: str, environ: dict, identity: str | None = None
                ) -> UpstreamWebSocket:
        host = f"{upstream_address(c)}:{c.port}"
        try:
            sock = socket.create_connection((upstream_address(c), upstream_port(c)), timeout=5.0)
        except OSError as e:
            raise UpstreamFailed(f"Container {c.name} refused the WebSocket on {host}: {e.strerror or e}") from None
        try:
            # wsproto writes Host, Upgrade, Connection and the Sec-WebSocket-* headers itself
            headers = [(k, v) for k, v in forwarded_headers(environ, host, identity).items()
                       if k.lower() != "host" and not k.lower().startswith("sec-websocket-")]
            handshake = WSConnection(ConnectionType.CLIENT)
            sock.settimeout(self._timeout)
            # wsproto's stub says bytes pairs; h11, which writes the handshake, takes str pairs as well
            sock.sendall(handshake.send(Request(host=host, target=target,
                                                extra_headers=headers)))  # type: ignore[arg-type]
            head, early = _read_head(sock)
            # Only the head goes to wsproto: what follows it are the container's first frames, relayed as bytes.
            handshake.receive_data(head + b"\r\n\r\n")
            event = next(iter(handshake.events()), None)
            if not isinstance(event, AcceptConnection):
                status = getattr(event, "status_code", None) or head.split(b"\r\n", 1)[0].decode("latin-1")
                raise WebSocketFailed(f"Container {c.name} answered {status or 'nothing'} to the WebSocket "
                                      f"upgrade of {target}")
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return UpstreamWebSocket(sock, early, c.id)
        except RemoteProtocolError as e:
            sock.close()
            raise WebSocketFailed(f"Container {c.name} broke the WebSocket handshake: {e}") from None
        except TimeoutError:
            sock.close()
            raise GatewayTimeout(f"Container {c.name} did not answer the WebSocket upgrade within "
                                 f"{self._timeout:g} s") from None
        except OSError as e:
            sock.close()
            raise UpstreamFailed(f"Container {c.name} dropped the WebSocket upgrade: {e}") from None
        except BaseException:
            sock.close()
            raise


class UpstreamWebSocket:
    """The connected socket to the container and any bytes the container already sent after its 101."""

    def __init__(self, sock: socket.socket, early: bytes, cid: str):
        self.sock = sock
        self.early = early
        self._cid = cid

    def relay(self, client: socket.socket, on_traffic: Callable[[], None], observer=None) -> None:
        """Two pumps, caller→container on this thread and container→caller on another, each calling `on_traffic`
        per chunk. When one side's stream ends the other side is half-closed, so the closing handshake finishes
        end to end; after WS_LINGER both are cut."""
        upstream = self.sock
        client.settimeout(None)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        back = threading.Thread(target=_pump, args=(upstream, client, on_traffic,
                                                    observer.from_container if observer else None), daemon=True,
                                name=f"grokemu-ws-{self._cid[:8]}")
        back.start()
        _pump(client, upstream, on_traffic, observer.from_caller if observer else None)
        back.join(WS_LINGER)
        if back.is_alive():
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            back.join()

    def close(self) -> None:
        self.sock.close()


def _pump(src: socket.socket, dst: socket.socket, on_traffic: Callable[[], None],
          observe: Callable[[bytes], None] | None = None) -> None:
    """`observe` (the request inspector's frame reader) sees each chunk; its failure never breaks the relay."""
    recv, send = src.recv, dst.sendall
    try:
        while True:
            data = recv(WS_RELAY_CHUNK)
            if not data:
                break
            if observe is not None:  # before it is passed on: the side that closed first is seen first
                try:
                    observe(data)
                except Exception:
                    observe = None
            send(data)
            on_traffic()
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _read_head(sock: socket.socket, limit: int = 64 * 1024) -> tuple[bytes, bytes]:
    """The bytes of an HTTP head (without its blank line) and whatever arrived after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("connection closed during the handshake")
        data += chunk
        if len(data) > limit:
            raise ConnectionResetError("handshake answer too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest
