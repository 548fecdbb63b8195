"""fetchProxy and webSocketProxy: forward a caller to a plugin container, starting it when it is on_demand.

Wire facts (research/datagrok-docker-api.md §1.2, §1.3):
- The container's answer comes back "as it is": status, headers and body bytes unchanged (Chemprop checks 201, Bio
  checks the exact Content-Type; gzip stays gzip). grokemu's own failures are ApiError JSON with `datagrok-error`.
- Request bodies are forwarded as bytes with the caller's Content-Type (MolTrack sends multipart FormData).
- A WebSocket is linked to the container, then the server sends the text frame `CONNECTED`; the client's helper
  resolves on it. A close before `CONNECTED` rejects with `Could not open WebSocket connection: <reason>`, so every
  failure before it closes with a reason the client can show.

The container is only ever reached on 127.0.0.1 and the port the spawner published (DESIGN.md decision 4): the
pools are keyed by that port and the request path is sent as a request target, never parsed for a host.

Idle shutdown: every request touches the container; a response still streaming or an open WebSocket holds it
(`spawner.hold`), so the idle clock never stops a container mid-use (Sablier #576 is that bug).
"""
from __future__ import annotations

import logging
import socket
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator

import urllib3
from urllib3.util import SKIP_HEADER
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request
from wsproto.utilities import RemoteProtocolError

from grokemu.domain.errors import GatewayTimeout, GrokemuError
from grokemu.domain.model import DockerContainer

if TYPE_CHECKING:
    from grokemu.config import Settings
    from grokemu.services.spawner import Spawner

log = logging.getLogger(__name__)

COLD_START_HEADER = "X-Grokemu-Cold-Start-Ms"  # KEDA's HTTP add-on answers X-KEDA-HTTP-Cold-Start (anchors.md §2)
LOOPBACK = "127.0.0.1"
# RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy Proxy-Connection; Host is set for the upstream hop.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "proxy-connection"})
# Never forwarded to a container: grokemu's credentials (the session token is the user's API key), the hop's own
# framing (Content-Length is re-sent from the body grokemu holds), and Expect (waitress already answered 100).
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "content-length", "expect"}
SMALL_BODY = 256 * 1024  # answers up to this size are read at once; bigger or unsized ones are streamed
STREAM_CHUNK = 1024 * 1024
UPLOAD_BLOCK = 1024 * 1024  # http.client's default 16 KiB blocks cost ~25% on a 1 GiB upload
WS_CONNECTED = b"\x81\x09CONNECTED"  # one unmasked FIN text frame: what Datagrok sends once both sides are linked
WS_RELAY_CHUNK = 64 * 1024
WS_LINGER = 10.0  # seconds the other direction may take to finish once one side has closed


class UpstreamFailed(GrokemuError):
    """The container did not answer. 500: 'the server workflow fails' in fetchProxy's JSDoc (§1.2); only the
    container itself answers other statuses."""

    status = 500


class WebSocketFailed(GrokemuError):
    status = 400


def ws_close_code(status: int) -> int:
    """Close code for a failure before CONNECTED: 4000 + the HTTP status it would have had (4401, 4404, 4400,
    4504); 4000-4999 is the application range of RFC 6455 §7.4.2."""
    return 4000 + status if 100 <= status <= 599 else 1011


# -- request / response shapes -------------------------------------------------------------------------------------
def forwarded_headers(environ: dict, upstream_host: str) -> dict[str, str]:
    """The caller's headers for the container, from the WSGI environ: hop-by-hop headers, Authorization and
    grokemu's `auth` cookie removed, Host set to the container, X-Forwarded-* added."""
    headers: dict[str, str] = {"Host": upstream_host}
    connection_named = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",") if t.strip()}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
        elif key == "CONTENT_TYPE" and value:
            name = "Content-Type"
        else:
            continue
        lower = name.lower()
        if lower in NOT_FORWARDED or lower in connection_named:
            continue
        if lower == "cookie":
            value = strip_auth_cookie(value)
            if not value:
                continue
        headers[name] = value
    client = environ.get("REMOTE_ADDR")
    if client:
        prior = environ.get("HTTP_X_FORWARDED_FOR")
        headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    if environ.get("HTTP_HOST"):
        headers.setdefault("X-Forwarded-Host", environ["HTTP_HOST"])
    headers.setdefault("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http"))
    return headers


def strip_auth_cookie(cookie_header: str) -> str:
    kept = [part.strip() for part in cookie_header.split(";")
            if part.strip() and part.split("=", 1)[0].strip() != "auth"]
    return "; ".join(kept)


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The container's headers, in order, repeated ones (Set-Cookie) kept, hop-by-hop ones dropped (waitress
    frames the answer itself and refuses hop-by-hop headers from an app)."""
    items = list(headers)
    named = {t.strip().lower() for k, v in items if k.lower() == "connection" for t in v.split(",")}
    return [(k, v) for k, v in items if k.lower() not in HOP_BY_HOP and k.lower() not in named]


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


class _StreamedBody:
    """The body of a big or unsized answer, read from the container as the caller takes it. Iteration ends at the
    container's EOF; close() (waitress calls it when the answer is done or the caller went away) gives the
    connection back to the pool only when the body was read to the end, and ends the idle hold."""

    def __init__(self, upstream: urllib3.BaseHTTPResponse, release: ExitStack):
        self._upstream = upstream
        self._release = release
        self._done = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        try:
            data = self._upstream.read1(STREAM_CHUNK, decode_content=False)  # what arrived: streams stay live
        except (Urllib3Error, OSError) as e:
            # Headers are gone already: all that can be done is to cut the caller's connection (waitress does).
            log.warning("container answer broke off mid-body: %s", e)
            self.close()
            raise
        if not data:
            self._done = True
            raise StopIteration
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._done:
                self._upstream.close()  # unread bytes left: the connection cannot be reused
            self._upstream.release_conn()
        finally:
            self._release.close()


class _StaleConnectionRetry(Retry):
    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)  # a dropped connection, not a ReadTimeoutError


# -- the service ---------------------------------------------------------------------------------------------------
class ProxyService:
    def __init__(self, spawner: "Spawner", settings: "Settings"):
        self._spawner = spawner
        self._settings = settings
        self._pools: dict[str, tuple[int, urllib3.HTTPConnectionPool]] = {}  # container id -> (port, pool)
        self._pools_lock = threading.Lock()
        # container id -> (spawner generation, the started entity): a started container stays started, on the same
        # port, until some container changes status, so the hot path skips the database read of ensure_ready.
        self._started: dict[str, tuple[int, DockerContainer]] = {}
        # Idempotent body-less requests may be retried once when a kept-alive connection turns out dead (the
        # container closed it while it sat in the pool); a timeout is never replayed, nor anything with a body.
        self._retries = _StaleConnectionRetry(total=1, connect=1, read=1, status=0, other=0, redirect=False,
                                              allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}),
                                              raise_on_redirect=False, raise_on_status=False)

    # pools: one per container port, reused across requests ----------------------------------------------------
    def pool(self, c: DockerContainer) -> urllib3.HTTPConnectionPool:
        port = int(c.port)
        entry = self._pools.get(c.id)
        if entry is not None and entry[0] == port:
            return entry[1]
        with self._pools_lock:
            entry = self._pools.get(c.id)
            if entry is not None and entry[0] == port:
                return entry[1]
            pool = urllib3.HTTPConnectionPool(
                LOOPBACK, port, maxsize=max(self._settings.threads, 4), block=False,
                timeout=urllib3.Timeout(connect=5.0, read=self._settings.proxy_request_timeout),
                blocksize=UPLOAD_BLOCK)
            old = self._pools.get(c.id)
            self._pools[c.id] = (port, pool)
        if old is not None:  # the container was restarted on another port
            old[1].close()
        return pool

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

    # fetchProxy -------------------------------------------------------------------------------------------------
    def forward(self, cid: str, login: str, method: str, target: str, environ: dict,
                body: BinaryIO | None, length: int) -> Forwarded:
        """Send one request to the container and return its answer, the body streamed when it is big."""
        c, cold_ms = self.ready(cid, login)
        release = ExitStack()
        release.enter_context(self._spawner.hold(cid))
        try:
            try:
                upstream = self._send(c, method, target, environ, body, length)
            except NewConnectionError:
                # Nothing was sent. The container may have been stopped (idle, by a user) between the status check
                # and the connect: look again, which starts an on_demand one, and try once more.
                self._started.pop(cid, None)
                c, again_ms = self.ready(cid, login)
                cold_ms = cold_ms if again_ms is None else again_ms
                try:
                    upstream = self._send(c, method, target, environ, body, length)
                except NewConnectionError as e:
                    raise UpstreamFailed(f"Container {c.name} did not answer on {LOOPBACK}:{c.port}: "
                                         f"connection refused") from e
            headers = response_headers(upstream.headers.items())
            if cold_ms is not None:
                headers.append((COLD_START_HEADER, str(round(cold_ms))))
            declared = upstream.headers.get("Content-Length")
            if method == "HEAD" or upstream.status in (204, 304) or (
                    declared is not None and declared.isdigit() and int(declared) <= SMALL_BODY):
                data = upstream.read(decode_content=False)
                upstream.release_conn()
                release.close()
                return Forwarded(upstream.status, upstream.reason, headers, [data] if data else [])
            return Forwarded(upstream.status, upstream.reason, headers, _StreamedBody(upstream, release))
        except BaseException:
            release.close()
            raise

    def _send(self, c: DockerContainer, method: str, target: str, environ: dict, body: BinaryIO | None,
              length: int) -> urllib3.BaseHTTPResponse:
        pool = self.pool(c)
        headers = forwarded_headers(environ, f"{LOOPBACK}:{c.port}")
        if body is not None:
            headers["Content-Length"] = str(length)
        for name in ("Accept-Encoding", "User-Agent"):  # http.client / urllib3 would add their own
            headers.setdefault(name, SKIP_HEADER)
        try:
            return pool.urlopen(method, target, body=body, headers=headers,
                                retries=self._retries if body is None else False, redirect=False,
                                assert_same_host=True, preload_content=False, decode_content=False,
                                release_conn=False, chunked=False)
        except NewConnectionError:
            raise
        except ReadTimeoutError:
            raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                 f"{self._settings.proxy_request_timeout:g} s") from None
        except Urllib3Error as e:
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, NewConnectionError):
                raise reason from None
            if isinstance(reason, ReadTimeoutError):
                raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                     f"{self._settings.proxy_request_timeout:g} s") from None
            raise UpstreamFailed(f"Container {c.name} did not answer on {LOOPBACK}:{c.port}: {reason}") from None

    # webSocketProxy ---------------------------------------------------------------------------------------------
    def websocket(self, cid: str, login: str, target: str, environ: dict, client: socket.socket) -> None:
        """Accept the caller's WebSocket, make sure the container runs, link it to the container's WebSocket,
        send `CONNECTED`, then relay until either side closes. Runs on the handed-off socket's own thread and
        returns when the socket is finished."""
        ws = accept_websocket(environ, client)
        if ws is None:
            return
        try:
            c, _ = self.ready(cid, login)
            with self._spawner.hold(cid):
                upstream, early = self._connect_upstream(c, target, environ)
                try:
                    client.sendall(WS_CONNECTED + early)
                    self._relay(cid, client, upstream)
                finally:
                    upstream.close()
        except GrokemuError as e:
            close_websocket(ws, client, ws_close_code(e.status), e.message)
        except OSError:
            pass  # the caller went away

    def _connect_upstream(self, c: DockerContainer, target: str, environ: dict) -> tuple[socket.socket, bytes]:
        """The WebSocket handshake with the container on 127.0.0.1:<port> (wsproto builds and checks it): the
        connected socket and any bytes the container already sent after its 101.

        Both legs negotiate no extension and no subprotocol, so a frame means the same bytes on both: a caller's
        frame is masked as a client frame must be, a container's frame is unmasked as a server frame must be.
        After the handshakes the relay passes frames through byte for byte, close frames and their codes included
        (as nginx does after an upgrade), without re-framing every message in Python."""
        host = f"{LOOPBACK}:{c.port}"
        try:
            sock = socket.create_connection((LOOPBACK, int(c.port)), timeout=5.0)
        except OSError as e:
            raise UpstreamFailed(f"Container {c.name} refused the WebSocket on {host}: {e.strerror or e}") from None
        try:
            # wsproto writes Host, Upgrade, Connection and the Sec-WebSocket-* headers itself
            headers = [(k, v) for k, v in forwarded_headers(environ, host).items()
                       if k.lower() != "host" and not k.lower().startswith("sec-websocket-")]
            handshake = WSConnection(ConnectionType.CLIENT)
            sock.settimeout(self._settings.proxy_request_timeout)
            sock.sendall(handshake.send(Request(host=host, target=target, extra_headers=headers)))
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
            return sock, early
        except RemoteProtocolError as e:
            sock.close()
            raise WebSocketFailed(f"Container {c.name} broke the WebSocket handshake: {e}") from None
        except socket.timeout:
            sock.close()
            raise GatewayTimeout(f"Container {c.name} did not answer the WebSocket upgrade within "
                                 f"{self._settings.proxy_request_timeout:g} s") from None
        except OSError as e:
            sock.close()
            raise UpstreamFailed(f"Container {c.name} dropped the WebSocket upgrade: {e}") from None
        except BaseException:
            sock.close()
            raise

    def _relay(self, cid: str, client: socket.socket, upstream: socket.socket) -> None:
        """Two pumps, caller→container on this thread and container→caller on another, each renewing lastActive
        per chunk. When one side's stream ends the other side is half-closed, so the closing handshake finishes
        end to end; after WS_LINGER both are cut."""
        client.settimeout(None)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        touch = self._spawner.touch
        back = threading.Thread(target=_pump, args=(upstream, client, cid, touch), daemon=True,
                                name=f"grokemu-ws-{cid[:8]}")
        back.start()
        _pump(client, upstream, cid, touch)
        back.join(WS_LINGER)
        if back.is_alive():
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            back.join()


def _pump(src: socket.socket, dst: socket.socket, cid: str, touch) -> None:
    recv, send = src.recv, dst.sendall
    try:
        while True:
            data = recv(WS_RELAY_CHUNK)
            if not data:
                break
            send(data)
            touch(cid)
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


# -- the caller's side of a WebSocket -------------------------------------------------------------------------------
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
    """Answer the caller's upgrade with 101, no extension and no subprotocol (see _connect_upstream); wsproto checks
    the request and computes the accept key. A request that is not a valid upgrade gets an HTTP 400 and None."""
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(_request_head(environ))
        request_event = next(iter(ws.events()), None)
        if not isinstance(request_event, Request):
            raise RemoteProtocolError("not a WebSocket upgrade", event_hint=RejectConnection())
        client.sendall(ws.send(AcceptConnection()))
    except RemoteProtocolError as e:
        body = ('{"#type":"ApiError","message":"Bad WebSocket upgrade: %s"}' % str(e).replace('"', "'")).encode()
        try:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
                           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
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


def reject_websocket(environ: dict, client: socket.socket, status: int, message: str) -> None:
    """A failure before the view ran (the /api guard's 401): accept, then close with the reason, so the JS client
    rejects with `Could not open WebSocket connection: <message>` rather than a bare error event."""
    ws = environ.get("grokemu.websocket") or accept_websocket(environ, client)
    if ws is not None:
        close_websocket(ws, client, ws_close_code(status), message)
