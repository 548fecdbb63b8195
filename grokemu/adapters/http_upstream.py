"""HTTP to plugin containers (the HttpUpstream port of domain/upstream.py): one urllib3 pool per container port for
requests with a body, kept-alive raw sockets for body-less ones (the small-GET hot path, _LeanPool below), the
caller's headers shaped for the container, the container's answer passed back as it is.

Wire facts (docs/datagrok-api.md §1.2):
- The container's answer comes back "as it is": status, headers and body bytes unchanged (Chemprop checks 201, Bio
  checks the exact Content-Type; gzip stays gzip).
- Request bodies are forwarded as bytes with the caller's Content-Type (MolTrack sends multipart FormData).

The container is only ever reached on 127.0.0.1 and the port the spawner published (docs/design.md decision 4), or,
with the `docker_network` setting, at the address Docker gave it on that network (`upstream_address`): the pools are
keyed by that address and port, and the request path is sent as a request target, never parsed for a host.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.util import SKIP_HEADER
from urllib3.util.retry import Retry

from grokemu.domain.errors import GatewayTimeout
from grokemu.domain.model import DockerContainer
from grokemu.domain.upstream import Forwarded, ProxiedRequest, UpstreamFailed, UpstreamRefused
from grokemu.http1 import HOP_BY_HOP, parse_response_head, response_framing

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def upstream_address(c: DockerContainer) -> str:
    """127.0.0.1 (the published port), or the container's address on the shared Docker network when grokemu runs
    with the `docker_network` setting (e.g. inside the compose stand, where 127.0.0.1 is grokemu's own container)."""
    return c.address or LOOPBACK


def upstream_port(c: DockerContainer) -> int:
    """The port the proxy connects to: a started container always has one."""
    if c.port is None:
        raise UpstreamFailed(f"Container {c.name} has no port: it is not started")
    return c.port


# Never forwarded to a container: grokemu's credentials (the session token is the user's API key), the hop's own
# framing (Content-Length is re-sent from the body grokemu holds), and Expect (waitress already answered 100).
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "content-length", "expect", "x-user-api-key"}
# The caller's identity for the container: datagrok-api's Node runtime reads the user's token from `Authorization`,
# the `auth` cookie or `x-user-api-key`; grokemu sends the caller's session token in the last one, never a dev key
# and never its own Authorization/cookie (docs/real-plugins.md, "Caller identity"). A caller's own x-user-api-key
# is replaced, so the container always sees who grokemu authenticated.
IDENTITY_HEADER = "X-User-Api-Key"
SMALL_BODY = 256 * 1024  # answers up to this size are read at once; bigger or unsized ones are streamed
STREAM_CHUNK = 1024 * 1024
UPLOAD_BLOCK = 1024 * 1024  # http.client's default 16 KiB blocks cost ~25% on a 1 GiB upload


_HEADER_NAMES: dict[str, str] = {}  # environ key -> header name, as forwarded_headers spells it


# -- request / response shapes -------------------------------------------------------------------------------------
def forwarded_headers(environ: dict, upstream_host: str, identity: str | None = None) -> dict[str, str]:
    """The caller's headers for the container, from the WSGI environ: hop-by-hop headers, Authorization and
    grokemu's `auth` cookie removed, Host set to the container, X-Forwarded-* added, and the caller's session
    token in x-user-api-key when `identity` is given."""
    headers: dict[str, str] = {"Host": upstream_host}
    connection_named = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",") if t.strip()}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = _HEADER_NAMES.get(key)
            if name is None:
                name = key[5:].replace("_", "-").title()
                if len(_HEADER_NAMES) < 4096:  # the names seen, bounded against callers that invent names
                    _HEADER_NAMES[key] = name
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
    if identity:
        headers[IDENTITY_HEADER] = identity
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


class _StreamedBody:
    """The body of a big or unsized answer, read from the container as the caller takes it. Iteration ends at the
    container's EOF; close() (waitress calls it when the answer is done or the caller went away) gives the
    connection back to the pool only when the body was read to the end, then calls `release`."""

    def __init__(self, upstream: urllib3.BaseHTTPResponse, release: Callable[[], None]):
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
            self._release()


class _StaleConnectionRetry(Retry):
    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)  # a dropped connection, not a ReadTimeoutError


class HttpUpstreamPools:
    """HttpUpstream over urllib3: one pool per container, reused across requests, replaced when the container
    comes back on another port. `threads` sizes each pool; `timeout` is the read timeout (proxy_request_timeout)."""

    def __init__(self, threads: int, timeout: float):
        self._threads = threads
        self._timeout = timeout
        self._pools: dict[str, tuple[tuple[str, int], urllib3.HTTPConnectionPool]] = {}  # id -> ((addr, port), pool)
        self._pools_lock = threading.Lock()
        self._lean_pools: dict[str, _LeanPool] = {}  # id -> kept-alive sockets for body-less requests
        # Idempotent body-less requests may be retried once when a kept-alive connection turns out dead (the
        # container closed it while it sat in the pool); a timeout is never replayed, nor anything with a body.
        self._retries = _StaleConnectionRetry(total=1, connect=1, read=1, status=0, other=0, redirect=False,
                                              allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}),
                                              raise_on_redirect=False, raise_on_status=False)

    def pool(self, c: DockerContainer) -> urllib3.HTTPConnectionPool:
        port = (upstream_address(c), upstream_port(c))  # the pool key: address and port
        entry = self._pools.get(c.id)
        if entry is not None and entry[0] == port:
            return entry[1]
        with self._pools_lock:
            entry = self._pools.get(c.id)
            if entry is not None and entry[0] == port:
                return entry[1]
            pool = urllib3.HTTPConnectionPool(
                port[0], port[1], maxsize=max(self._threads, 4), block=False,
                timeout=urllib3.Timeout(connect=5.0, read=self._timeout), blocksize=UPLOAD_BLOCK)
            old = self._pools.get(c.id)
            self._pools[c.id] = (port, pool)
        if old is not None:  # the container was restarted on another port
            old[1].close()
        return pool

    def _lean(self, c: DockerContainer) -> _LeanPool:
        key = (upstream_address(c), upstream_port(c))
        entry = self._lean_pools.get(c.id)
        if entry is not None and entry.key == key:
            return entry
        with self._pools_lock:
            entry = self._lean_pools.get(c.id)
            if entry is None or entry.key != key:
                old, entry = entry, _LeanPool(key, max(self._threads, 32), self._timeout)
                self._lean_pools[c.id] = entry
                if old is not None:
                    old.close()
        return entry

    def request_head(self, c: DockerContainer, method: str, target: str, environ: dict,
                     identity: str | None = None,
                     relayed: ProxiedRequest | None = None) -> tuple[tuple[str, int], bytes]:
        address = (upstream_address(c), upstream_port(c))
        return address, bodyless_request_head(address, method, target, environ, identity, relayed)

    def forget(self, cid: str) -> None:
        with self._pools_lock:
            entry = self._pools.pop(cid, None)
            lean = self._lean_pools.pop(cid, None)
        if entry is not None:
            entry[1].close()
        if lean is not None:
            lean.close()

    def close(self) -> None:
        with self._pools_lock:
            entries, self._pools = list(self._pools.values()), {}
            leans, self._lean_pools = list(self._lean_pools.values()), {}
        for _, pool in entries:
            pool.close()
        for lean in leans:
            lean.close()

    def send(self, c: DockerContainer, method: str, target: str, environ: dict, body: IO[bytes] | None,
             length: int, release: Callable[[], None], identity: str | None = None) -> Forwarded:
        if body is None:  # the hot path (small GETs): kept-alive raw sockets, no urllib3 / http.client
            return self._lean(c).send(c, method, target, environ, release, identity)
        upstream = self._urlopen(c, method, target, environ, body, length, identity)
        headers = response_headers(upstream.headers.items())
        declared = upstream.headers.get("Content-Length")
        if method == "HEAD" or upstream.status in (204, 304) or (
                declared is not None and declared.isdigit() and int(declared) <= SMALL_BODY):
            data = upstream.read(decode_content=False)
            upstream.release_conn()
            release()
            return Forwarded(upstream.status, upstream.reason or "", headers, [data] if data else [])
        return Forwarded(upstream.status, upstream.reason or "", headers, _StreamedBody(upstream, release))

    def _urlopen(self, c: DockerContainer, method: str, target: str, environ: dict, body: IO[bytes] | None,
                 length: int, identity: str | None = None) -> urllib3.BaseHTTPResponse:
        pool = self.pool(c)
        headers = forwarded_headers(environ, f"{upstream_address(c)}:{c.port}", identity)
        if body is not None:
            headers["Content-Length"] = str(length)
        for name in ("Accept-Encoding", "User-Agent"):  # http.client / urllib3 would add their own
            headers.setdefault(name, SKIP_HEADER)
        try:
            return pool.urlopen(method, target, body=body, headers=headers,
                                retries=self._retries if body is None else False, redirect=False,
                                assert_same_host=True, preload_content=False, decode_content=False,
                                release_conn=False, chunked=False)
        except NewConnectionError as e:
            raise UpstreamRefused(str(e)) from e
        except ReadTimeoutError:
            raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                 f"{self._timeout:g} s") from None
        except Urllib3Error as e:
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, NewConnectionError):
                raise UpstreamRefused(str(reason)) from reason
            if isinstance(reason, ReadTimeoutError):
                raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                     f"{self._timeout:g} s") from None
            raise UpstreamFailed(f"Container {c.name} did not answer on {upstream_address(c)}:{c.port}: "
                                 f"{reason}") from None


# -- body-less requests over kept-alive raw sockets (docs/design.md decision 2) ------------------------------------
# urllib3 + http.client (its email-parser header parsing) cost half of grokemu's CPU per small proxied GET. A request
# without a body is sent as one head, built once, on a socket kept alive per container; the answer's head is parsed
# here, and its body passed on as it is (Content-Length, chunked or up to the container's close). Same rules as the
# urllib3 path: the same forwarded headers, one retry of an idempotent request on a kept-alive socket the container
# closed meanwhile, the same errors (refused, read timeout, broken answer).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
_EXPECT_BODY = frozenset({"POST", "PUT", "PATCH"})
_MAX_HEAD = 256 * 1024
_MAX_CHUNK_LINE = 4096


class _StaleSocket(Exception):
    """A kept-alive socket turned out closed before any byte of the answer came back."""


class _LeanPool:
    def __init__(self, key: tuple[str, int], size: int, timeout: float):
        self.key = key
        self._size = size
        self._timeout = timeout
        self._idle: deque[socket.socket] = deque()
        self._lock = threading.Lock()

    def _get(self) -> tuple[socket.socket, bool]:
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                break
            # a kept-alive socket with something to read (EOF, or bytes nobody asked for) is dead
            try:
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                readable = bool(poller.poll(0))
            except (OSError, ValueError):
                readable = True
            if not readable:
                return sock, True
            sock.close()
        sock = socket.create_connection(self.key, timeout=5.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._timeout)
        return sock, False

    def put(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(sock)
                return
        sock.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for sock in idle:
            sock.close()

    def send(self, c: DockerContainer, method: str, target: str, environ: dict, release: Callable[[], None],
             identity: str | None) -> Forwarded:
        head = bodyless_request_head(self.key, method, target, environ, identity)
        for attempt in (0, 1):
            try:
                sock, reused = self._get()
            except TimeoutError as e:
                raise UpstreamFailed(f"Container {c.name} did not answer on {self.key[0]}:{self.key[1]}: "
                                     f"connect timed out") from e
            except OSError as e:
                raise UpstreamRefused(str(e)) from e
            try:
                return self._exchange(sock, reused, method, head, release)
            except _StaleSocket:
                sock.close()
                if attempt or method not in _IDEMPOTENT:
                    raise UpstreamFailed(f"Container {c.name} did not answer on {self.key[0]}:{self.key[1]}: "
                                         f"the connection was closed") from None
            except TimeoutError:
                sock.close()
                raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                     f"{self._timeout:g} s") from None
            except OSError as e:
                sock.close()
                if reused and not attempt and method in _IDEMPOTENT:
                    continue
                raise UpstreamFailed(f"Container {c.name} did not answer on {self.key[0]}:{self.key[1]}: "
                                     f"{e}") from None
        raise AssertionError("unreachable")

    def _exchange(self, sock, reused, method, head, release) -> Forwarded:
        try:
            sock.sendall(head)
        except OSError:
            if reused:
                raise _StaleSocket() from None
            raise
        buf = b""
        while True:  # skip 1xx informational answers (103 Early Hints)
            end = -1
            while end < 0:
                data = sock.recv(65536)
                if not data:
                    if not buf and reused:
                        raise _StaleSocket()
                    raise ConnectionError("the container closed the connection mid-answer")
                buf += data
                end = buf.find(b"\r\n\r\n")
                if end < 0 and len(buf) > _MAX_HEAD:
                    raise ConnectionError("the container's answer head is too big")
            status, reason, version, raw = parse_response_head(buf[:end])
            buf = buf[end + 4:]
            if 100 <= status < 200 and status != 101:
                continue
            break
        length, chunked, keep = response_framing(version, raw)
        headers = response_headers(raw)
        if method == "HEAD" or status in (204, 304):
            self._done(sock, keep and not buf)
            release()
            return Forwarded(status, reason, headers, [])
        if chunked:
            return Forwarded(status, reason, headers, _LeanBody(self, sock, buf, None, True, keep, release))
        if length is not None and length <= SMALL_BODY:
            while len(buf) < length:
                data = sock.recv(max(65536, length - len(buf)))
                if not data:
                    raise ConnectionError("the container closed the connection mid-answer")
                buf += data
            self._done(sock, keep and len(buf) == length)
            release()
            return Forwarded(status, reason, headers, [buf] if length else [])
        return Forwarded(status, reason, headers, _LeanBody(self, sock, buf, length, False, keep, release))

    def _done(self, sock: socket.socket, reuse: bool) -> None:
        if reuse:
            self.put(sock)
        else:
            sock.close()


def bodyless_request_head(address: tuple[str, int], method: str, target: str, environ: dict,
                          identity: str | None, relayed: ProxiedRequest | None = None) -> bytes:
    """The head of a body-less request to the container at `address`, built once: the caller's headers shaped by
    forwarded_headers, and Content-Length: 0 where http.client would send it (an empty POST / PUT / PATCH).

    On a relayed connection `relayed` has the caller's header lines as they came (server/relay_loop.py); the shaped header lines depend on nothing else but the container's address, the
    identity and the caller's address, so they are kept and reused for the next request with the same lines."""
    raw = None if relayed is None else relayed.header_block
    key = None if raw is None else (raw, address, identity, environ.get("REMOTE_ADDR"), method in _EXPECT_BODY)
    block = _HEAD_BLOCKS.get(key) if key is not None else None
    if block is None:
        headers = forwarded_headers(environ, f"{address[0]}:{address[1]}", identity)
        if method in _EXPECT_BODY:
            headers["Content-Length"] = "0"
        block = ("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode("latin-1")
        if key is not None:
            if len(_HEAD_BLOCKS) >= 1024:  # bounded: callers and containers come and go
                _HEAD_BLOCKS.clear()
            _HEAD_BLOCKS[key] = block
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + block


_HEAD_BLOCKS: dict[tuple, bytes] = {}


class _LeanBody:
    """A big, chunked or unsized answer read from the container's socket as the caller takes it; close() gives the
    socket back for reuse only when the body was read to its end, then calls `release`."""

    def __init__(self, pool: _LeanPool, sock: socket.socket, buf: bytes, length: int | None, chunked: bool,
                 keep: bool, release: Callable[[], None]):
        self._pool = pool
        self._sock = sock
        self._buf = buf
        self._left = length  # None: until the container closes (or the last chunk)
        self._chunked = chunked
        self._keep = keep and (chunked or length is not None)
        self._release = release
        self._done = False
        self._closed = False
        self._chunks = self._dechunk() if chunked else None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(STREAM_CHUNK)
        except OSError as e:
            log.warning("container answer broke off mid-body: %s", e)
            self.close()
            raise

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        if self._chunks is not None:
            return next(self._chunks)
        if self._buf:
            data, self._buf = self._buf, b""
        else:
            data = self._recv() if self._left is None or self._left > 0 else b""
        if self._left is not None:
            data = data[:self._left]
            self._left -= len(data)
            if not data and self._left > 0:
                log.warning("container answer broke off mid-body: %d bytes missing", self._left)
                self.close()
                raise ConnectionError("the container closed the connection mid-answer")
        if not data:
            self._done = True
            raise StopIteration
        if self._left == 0:
            self._done = True
        return data

    def _more(self) -> None:
        data = self._recv()
        if not data:
            self.close()
            raise ConnectionError("the container closed the connection mid-chunk")
        self._buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if len(self._buf) > _MAX_CHUNK_LINE:
                raise ConnectionError("the container's chunked answer has a line too long")
            self._more()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _dechunk(self) -> Iterator[bytes]:
        while True:
            digits = self._line().split(b";", 1)[0].strip(b" \t")
            if not digits or digits.strip(b"0123456789abcdefABCDEF"):  # int() would take "-5", "0x5", "1_0"
                raise ConnectionError(f"the container's chunked answer has an invalid chunk size {digits[:20]!r}")
            size = int(digits, 16)
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                self._done = True
                return
            while len(self._buf) < size + 2:
                self._more()
            data, self._buf = self._buf[:size], self._buf[size + 2:]
            yield data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._pool._done(self._sock, self._done and self._keep and not self._buf)
        finally:
            self._release()
