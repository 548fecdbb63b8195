"""The relay loop (docs/design.md decision 2): every keep-alive connection that left waitress after a fetchProxy
request lives here, on one thread with one selector, and its body-less fetchProxy requests to a started container are
relayed without a thread, without a WSGI environ of waitress's and without Flask.

Why one loop and not a thread per connection: measured with 8 keep-alive clients, a thread per connection spent most
of grokemu's core on waitress's pure-Python parser, on environ and response building and on handing the GIL from
thread to thread; a selector loop answers each readable socket in turn with a few system calls per request.

Per request head (found by its blank line, parsed by httptools, the C parser of llhttp):
- a body-less HTTP/1.1 fetchProxy request that `plan` (web/fast_proxy.py FastProxy.plan: the guard, then
  ProxyService.fast_forward) accepts is sent to the container on a kept-alive upstream socket, and the answer
  passed back as it arrives: status, headers (hop-by-hop ones dropped, as everywhere) and body bytes unchanged, a
  chunked body passed through chunk for chunk, a body that ends with the container's close re-framed as chunked;
- what repeats is worked out once: header lines equal to the last ones on the connection are not parsed again
  (`_plan_for`), the container's header block for them is reused (upstream_headers.bodyless_request_head), and an
  answer head the container repeats is shaped once per second (`_shape`); the guard and the container lookup run
  for every request;
- anything else leaves the loop for one request: the connection's bytes go to a stream thread running the blocking
  relay (server/relay.py: waitress's parser, the preflight, the whole WSGI app, WebSocket upgrades, cold starts,
  bodies, every refusal), which gives the connection back here afterwards when it stays open.

Bounds: a connection here holds one of `max_streams` parking places (StreamPool.try_park) for its whole life, a
hand-off additionally a stream slot while its thread runs. Buffers are bounded: at most MAX_PENDING bytes read ahead
of the request being answered, at most HIGH_WATER bytes of an answer waiting for a slow caller (the container is
not read meanwhile). Timeouts, checked every SWEEP seconds: idle `channel_timeout`; a request head not complete
`header_timeout` after its first byte; no answer head from the container within `proxy_request_timeout` (504); an
answer that makes no progress either way for `stream_timeout`.
"""
from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import httptools

from grokemu.domain.errors import DockerUnavailable, GatewayTimeout, GrokemuError
from grokemu.domain.upstream import FastForward, ProxiedRequest, UpstreamFailed
from grokemu.http1 import (
    HOP_BY_HOP,
    MAX_ANSWER_HEAD,
    RECV,
    ChunkedDecoder,
    parse_response_head,
    response_framing,
    retry_on_stale,
)
from grokemu.server.channel import raw_answer
from grokemu.server.relay import Relay, http_date
from grokemu.server.watchdog import WATCHDOG, TrackedSocket

log = logging.getLogger("grokemu.server")

MAX_PENDING = 256 * 1024  # bytes read ahead of the request in flight (pipelining) before the caller is not read
HIGH_WATER = 1024 * 1024  # answer bytes waiting for a slow caller before the container is not read
HOLD_HEAD_FOR = 64 * 1024  # an answer head is held back until its body when the body is at most this big
MAX_IDLE_UPSTREAM = 32  # kept-alive sockets per container address
SWEEP = 0.5  # seconds between timeout checks
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY)
_HEADER_KEYS: dict[bytes, str | None] = {}  # header name -> environ key (None: dropped, as waitress drops `_`)
_RENAMED = {"CONTENT_LENGTH": "CONTENT_LENGTH", "CONTENT_TYPE": "CONTENT_TYPE"}


def _environ_key(name: bytes) -> str | None:
    key = _HEADER_KEYS.get(name)
    if key is None and name not in _HEADER_KEYS:
        if b"_" in name:
            key = None
        else:
            upper = name.decode("latin-1").upper().replace("-", "_")
            key = _RENAMED.get(upper) or "HTTP_" + upper
        if len(_HEADER_KEYS) < 4096:  # a cache of the names seen, bounded against callers that invent names
            _HEADER_KEYS[name] = key
    return key


class _Head:
    """httptools callbacks for one request head. The method, version and keep-alive are read when the head is
    complete: llhttp resets them once the message is."""

    __slots__ = ("parser", "url", "headers", "method", "version", "keep", "complete")

    def __init__(self):
        self.parser: httptools.HttpRequestParser | None = None  # set by the caller, dropped once the head is parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.version = ""
        self.keep = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # called from its feed_data
        self.method, self.version, self.keep = parser.get_method(), parser.get_http_version(), \
            parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True


class _Client:
    __slots__ = ("sock", "channel", "remote", "listener", "buf", "head_since", "idle_since", "exchange", "out",
                 "out_since", "reading", "ended", "closing", "closed", "events", "last_block", "last_base",
                 "last_keep")

    def __init__(self, sock: socket.socket, channel, buf: bytes, listener: str):
        self.sock = sock
        self.channel = channel  # waitress's, detached: its server, address and adjustments serve hand-offs
        self.remote = channel.addr[0]
        self.listener = listener
        self.buf = buf
        self.head_since: float | None = None
        self.idle_since = time.monotonic()
        self.exchange: _Exchange | None = None
        self.out = bytearray()  # answer bytes the caller has not taken yet
        self.out_since = 0.0
        self.reading = True
        self.ended = False  # the caller shut its sending side: the requests it sent are answered, then it closes
        self.closing = False  # close once `out` is written
        self.closed = False
        self.events = 0
        self.last_block: bytes | None = None  # the header lines of the last head the loop served, their environ part, keep-alive
        self.last_base: dict = {}
        self.last_keep = True


class _Exchange:
    """One request relayed to a container and its answer coming back."""

    __slots__ = ("client", "plan", "head", "keep", "up", "reused", "retried", "connecting", "unsent", "since",
                 "rbuf", "status", "framing", "remaining", "chunks", "up_keep", "answered", "finished", "head_out")

    def __init__(self, client: _Client, plan: FastForward, head: bytes, keep: bool):
        self.client = client
        self.plan = plan
        self.head = head  # the caller's head, for a hand-off when the container refused the connection
        self.keep = keep  # the caller's connection stays open after this answer
        self.up: _Upstream | None = None
        self.reused = False
        self.retried = False
        self.connecting = False
        self.unsent = b""
        self.since = time.monotonic()  # the last progress of the upstream leg
        self.rbuf = b""
        self.status: int | None = None  # set once the answer's head went to the caller
        self.framing = ""  # "length", "chunked" (passed through), "close" (re-chunked) or "none"
        self.remaining = 0
        self.chunks: ChunkedDecoder | None = None
        self.up_keep = False
        self.answered = False  # any byte of the answer reached the caller's buffer
        self.finished = False
        self.head_out = b""  # the answer's head, sent together with the first body bytes


class _Upstream:
    """A socket to a container, registered with the loop for its whole life; `exchange` is the request it carries,
    None while it waits in the idle pool."""

    __slots__ = ("sock", "key", "exchange", "events")

    def __init__(self, sock: socket.socket, key: tuple):
        self.sock = sock
        self.key = key
        self.exchange: _Exchange | None = None
        self.events = 0


class _Shape:
    """An answer head shaped for the caller (see _shape_answer)."""

    __slots__ = ("status", "informational", "framing", "length", "keep_up", "head", "headers", "recorded")

    def __init__(self, status: int, informational: bool, framing: str, length: int, keep_up: bool, head: bytes,
                 headers: tuple = ()):
        self.headers = headers  # (name, value) as the caller gets them, for the request inspector
        self.recorded: tuple | None = None  # the inspector's redacted view of them, worked out once (_record_head)
        self.status = status
        self.informational = informational
        self.framing = framing  # "length", "chunked" (passed through), "close" (re-chunked) or "none"
        self.length = length
        self.keep_up = keep_up  # the container's connection can be reused after this answer
        self.head = head


def _shape_answer(raw_head: bytes, head_method: bool, keep: bool, date: str) -> _Shape:
    """The caller's head for a container's answer head (status line and headers, no blank line): hop-by-hop headers
    and those named in Connection dropped, Server and Date added when missing, the framing the loop passes the body
    on with, and Connection: close when the caller does not keep the connection. ConnectionError: not HTTP, or an
    invalid Content-Length."""
    status, reason, version, raw = parse_response_head(raw_head)
    if 100 <= status < 200:
        return _Shape(status, True, "none", 0, False, b"")
    length, chunked, keep_up = response_framing(version, raw)
    named = {t.strip().lower() for k, v in raw if k.lower() == "connection" for t in v.split(",")}
    lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
    has_server = has_date = False
    for name, value in raw:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or (chunked and lower == "content-length"):
            continue
        if lower == "server":
            has_server = True
        elif lower == "date":
            has_date = True
        lines.append(f"{name}: {value}")
    if not has_server:
        lines.append("Server: grokemu")
    if not has_date:
        lines.append(f"Date: {date}")
    if head_method or status in (204, 304):
        framing = "none"
    elif chunked:
        framing = "chunked"
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        framing = "length"
    else:  # the body ends when the container closes: re-framed as chunked, the caller's connection kept
        framing = "close"
        keep_up = False
        lines.append("Transfer-Encoding: chunked")
    if not keep:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    headers = tuple(tuple(line.split(": ", 1)) for line in lines[1:])
    return _Shape(status, False, framing, length or 0, keep_up, head, headers)


class RelayLoop:
    """The loop and its thread (started with the first connection). `takeover` is the ConnectionTakeover (its
    settings and stream pool); `plan`, `fast` and `prefix` are web/fast_proxy.py's FastProxy.plan, .handle and
    .PREFIX, `failure` the one error renderer (web/errors.py render, through WebHooks)."""

    def __init__(self, takeover, plan: Callable[[dict], FastForward | None], failure: Callable, fast: Callable,
                 prefix: str):
        self.takeover = takeover
        self.settings = takeover.settings
        self.streams = takeover.streams
        self._plan = plan
        self._failure = failure  # (GrokemuError, path) -> (status, headers, body): grokemu's own error answers
        self.fast = fast  # FastProxy.handle, for the blocking relay
        self._selector = selectors.DefaultSelector()
        self._incoming: deque[tuple] = deque()
        self._explained: deque[tuple] = deque()  # (exchange, reason or None) from explaining threads
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, _READ, (self._woken, None))
        self._clients: set[_Client] = set()
        self._idle: dict[tuple, list[_Upstream]] = {}  # (cid, address) -> kept-alive upstream sockets
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._prefix = prefix.encode("latin-1")  # fetchProxy's path prefix: other request lines are handed off
        self._closing = False
        self._shapes: dict[tuple, _Shape] = {}  # answer heads shaped for the caller (_shape)
        self.forwarded = 0  # requests the loop sent to a container itself (the signed-in health shows these)
        self.handed_off = 0  # requests handed to the blocking relay

    @property
    def connections(self) -> int:
        return len(self._clients)

    def stats(self) -> dict[str, int]:
        """What the signed-in health shows of the loop (reported through the app's gauges)."""
        return {"connections": self.connections, "forwarded": self.forwarded, "handedOff": self.handed_off}

    # -- connections arriving --------------------------------------------------------------------------------------
    def adopt(self, channel, sock, rest: bytes, *, parked: bool) -> None:
        """Take a connection (a TrackedSocket from the takeover or the blocking relay) into the loop, with the bytes
        already read after its last request. `parked`: it holds a parking place already (it is coming back from a
        hand-off); otherwise one is taken, and without one free the connection is closed (it is idle)."""
        if self._closing or (not parked and not self.streams.try_park()):
            sock.close()
            if parked:
                self.streams.unpark()
            return
        WATCHDOG.unwatch(sock)  # the loop keeps its own time
        plain = socket.socket(fileno=sock.detach())
        plain.setblocking(False)
        listener = channel.server.listener_for(channel.addr)
        with self._lock:
            if self._closing:  # closed meanwhile
                plain.close()
                self.streams.unpark()
                return
            self._incoming.append((plain, channel, rest, listener))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="grokemu-relay-loop", daemon=True)
                self._thread.start()
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already

    def close(self) -> None:
        """Stop the loop and close its connections (the server is closing)."""
        with self._lock:
            self._closing = True
            running = self._thread is not None
        if running:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass
        else:
            self._shut()

    def _shut(self) -> None:
        for c in list(self._clients):
            self._close_client(c)
        for idle in list(self._idle.values()):
            for up in list(idle):
                self._discard_idle(up)
        with self._lock:
            incoming, self._incoming = list(self._incoming), deque()
        for plain, *_ in incoming:
            plain.close()
            self.streams.unpark()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _woken(self, _unused, _mask) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            with self._lock:
                if not self._explained:
                    break
                ex, error = self._explained.popleft()
            if not ex.finished and not ex.client.closed:
                self._fail(ex, error)
        while True:
            with self._lock:
                if not self._incoming:
                    return
                plain, channel, rest, listener = self._incoming.popleft()
            c = _Client(plain, channel, rest, listener)
            self._clients.add(c)
            c.events = _READ
            self._selector.register(plain, _READ, (self._client_event, c))
            self._next(c)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP
        select = self._selector.select
        while not self._closing:
            for key, mask in select(SWEEP):
                handler, obj = key.data
                try:
                    handler(obj, mask)
                except Exception:  # a bug must not stop every relayed connection: that one closes, the rest go on
                    log.exception("relay loop error")
                    self._abandon(obj)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SWEEP
                try:
                    self._sweep(now)
                except Exception:
                    log.exception("relay loop error in the timeout sweep")
        self._shut()

    def _abandon(self, obj) -> None:
        """Close what an event handler that failed was working on (its caller's connection, or an idle socket)."""
        try:
            if isinstance(obj, _Client):
                self._close_client(obj)
            elif isinstance(obj, _Upstream):
                if obj.exchange is not None:
                    self._close_client(obj.exchange.client)
                else:
                    self._discard_idle(obj)
        except Exception:
            log.exception("relay loop error while closing")

    # -- the caller's side ------------------------------------------------------------------------------------------
    def _client_event(self, c: _Client, mask: int) -> None:
        if c.closed:
            return
        if mask & _WRITE:
            self._flush(c)
            if c.closed:
                return
        if mask & _READ:
            try:
                data = c.sock.recv(RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # a reset: the caller is gone, whatever was in flight
                self._close_client(c)
                return
            if not data:
                if c.exchange is None and not c.buf:  # the caller went away between requests
                    self._close_client(c)
                    return
                # it may have only shut its sending side (a half-close, as `curl` can): what it sent is answered,
                # then the connection closes; a caller really gone fails the next write instead
                c.ended = True
                self._set_client_events(c, reading=False)
                if c.exchange is None:
                    self._next(c)
                return
            c.buf = c.buf + data if c.buf else data
            if c.exchange is None:
                self._next(c)
            elif len(c.buf) > MAX_PENDING:
                self._set_client_events(c, reading=False)

    def _next(self, c: _Client) -> None:
        """Serve the requests waiting in the caller's buffer, in order, until one is in flight."""
        while c.exchange is None and not c.closed and not c.closing:
            buf = c.buf
            end = buf.find(b"\r\n\r\n") if buf else -1
            if (end + 4 if end >= 0 else len(buf)) > c.channel.adj.max_request_header_size:
                self._hand_off(c)  # waitress's parser answers 431
                return
            if end < 0:
                if c.ended:  # nothing complete is left to answer
                    c.closing = True
                    if not c.out:
                        self._close_client(c)
                    return
                if not buf:
                    c.idle_since = time.monotonic()
                elif c.head_since is None:
                    c.head_since = time.monotonic()
                if not c.reading:
                    self._set_client_events(c, reading=True)
                return
            head = buf[:end + 4]
            planned = self._plan_for(c, head)
            if planned is None:
                self._hand_off(c)
                return
            plan, keep = planned
            c.buf = buf[end + 4:]
            c.head_since = None
            c.exchange = _Exchange(c, plan, head, keep)
            self.forwarded += 1
            self._connect(c.exchange)

    def _plan_for(self, c: _Client, head: bytes) -> tuple[FastForward, bool] | None:
        """Parse one request head; for a request the loop serves, its plan and whether the caller keeps the
        connection open; None: the blocking relay serves it.

        A caller mostly repeats its headers byte for byte (a page, a test client): when the header lines equal the
        last ones on this connection, already parsed and found body-less, only the request line is parsed and the
        environ's header part is reused."""
        line_end = head.find(b"\r\n")
        if self._prefix not in head[:line_end]:
            return None  # not a fetchProxy request line: the WSGI app serves it
        block = head[line_end + 2:]
        repeated = block == c.last_block
        parsed = _Head()
        parser = parsed.parser = httptools.HttpRequestParser(parsed)
        try:
            parser.feed_data(head[:line_end + 2] + b"\r\n" if repeated else head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None  # waitress's parser answers it, or the WebSocket path takes it
        finally:
            parsed.parser = None  # no reference cycle left for the garbage collector
        if not parsed.complete or parsed.version != "1.1":
            return None  # a body follows, or HTTP/1.0
        url = parsed.url
        if not url.startswith(b"/"):
            return None
        if repeated:
            base, keep = c.last_base, c.last_keep
        else:
            base, keep = self._header_environ(c, parsed.headers, block), parsed.keep
            c.last_block, c.last_base, c.last_keep = block, base, keep
        method = parsed.method.decode("latin-1")
        path, _, query = url.partition(b"?")
        raw = url.decode("latin-1")
        environ = dict(base)
        environ.update(REQUEST_METHOD=method, PATH_INFO=unquote_to_bytes(path).decode("latin-1"),
                       QUERY_STRING=query.decode("latin-1"), REQUEST_URI=raw, RAW_URI=raw)
        try:
            plan = self._plan(environ)
        except Exception:
            log.exception("planning %s %s failed", method, environ["PATH_INFO"])
            return None
        return None if plan is None else (plan, keep)

    @staticmethod
    def _header_environ(c: _Client, headers: list[tuple[bytes, bytes]], block: bytes) -> dict:
        """The environ's part that does not depend on the request line: the connection's and the headers', keyed as
        waitress keys them (duplicate headers joined with ', ', names with '_' dropped). It carries the header lines
        as a ProxiedRequest, so adapters/upstream_headers.py can reuse the container's header block too."""
        server = c.channel.server
        environ = {
            "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": server.server_name,
            "SERVER_PORT": str(server.effective_port), "REMOTE_ADDR": c.remote, "REMOTE_HOST": c.remote,
            "REMOTE_PORT": str(c.channel.addr[1]), "wsgi.url_scheme": "http", "grokemu.listener": c.listener,
        }
        ProxiedRequest(block).carry(environ)
        for name, value in headers:
            key = _environ_key(name)
            if key is None:
                continue
            text = value.strip(b" \t").decode("latin-1")
            old = environ.get(key)
            environ[key] = text if old is None else f"{old}, {text}"
        return environ

    def _send_client(self, c: _Client, data) -> None:
        if c.closed or not data:
            return
        if c.out:
            c.out += data
        else:
            try:
                sent = c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close_client(c)
                return
            if sent == len(data):
                return
            c.out += memoryview(data)[sent:]
            c.out_since = time.monotonic()
            self._set_client_events(c, writing=True)
        ex = c.exchange
        if ex is not None and len(c.out) > HIGH_WATER:
            self._set_upstream_reading(ex, False)  # the container waits until the caller takes its answer

    def _flush(self, c: _Client) -> None:
        if c.out:
            try:
                sent = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close_client(c)
                return
            if sent:
                del c.out[:sent]
                c.out_since = time.monotonic()
        if not c.out:
            if c.closing:
                self._close_client(c)
                return
            self._set_client_events(c, writing=False)
        if c.exchange is not None and len(c.out) <= HIGH_WATER // 2:
            self._set_upstream_reading(c.exchange, True)

    def _set_client_events(self, c: _Client, reading: bool | None = None, writing: bool | None = None) -> None:
        if reading is not None:
            c.reading = reading and not c.ended
        events = (_READ if c.reading else 0) | (_WRITE if (writing if writing is not None else bool(c.out)) else 0)
        if events == c.events or c.closed:
            return
        if events and c.events:
            self._selector.modify(c.sock, events, (self._client_event, c))
        elif events:
            self._selector.register(c.sock, events, (self._client_event, c))
        else:
            self._selector.unregister(c.sock)
        c.events = events

    def _close_client(self, c: _Client) -> None:
        if c.closed:
            return
        c.closed = True
        self._clients.discard(c)
        if c.events:
            self._selector.unregister(c.sock)
        ex = c.exchange
        if ex is not None:
            self._end(ex, reusable=False)
        try:
            c.sock.close()
        finally:
            self.streams.unpark()

    def _hand_off(self, c: _Client) -> None:
        """The request at the front of the caller's buffer leaves the loop: a stream thread serves it with the
        blocking relay, which brings the connection back when it stays open."""
        if c.events:
            self._selector.unregister(c.sock)
            c.events = 0
        self.handed_off += 1
        c.closed = True  # for the loop, until it comes back
        self._clients.discard(c)
        request_line = c.buf.split(b"\n", 1)[0][:8192]
        proxied = self._prefix in request_line
        if proxied and not self.streams.try_acquire():
            self._refuse_busy(c)
            return
        if not proxied:
            self.streams.acquire_unbounded()  # bounded by the parking place this connection holds
        c.sock.setblocking(True)
        tracked = TrackedSocket(c.sock.detach(), self.settings.stream_timeout,
                                f"relayed connection from {c.remote}")
        relay = Relay(self.takeover, c.channel, tracked, self.fast, self)
        self.streams.run(lambda: relay.serve_next(c.buf))

    def _refuse_busy(self, c: _Client) -> None:
        log.warning("refusing a proxied request from %s: %d streams open (max_streams)", c.remote,
                    self.streams.limit)
        answer = raw_answer(*self._failure(self.streams.refusal(), ""))
        try:
            c.sock.send(answer)
        except OSError:
            pass
        try:
            c.sock.close()
        finally:
            self.streams.unpark()

    # -- the container's side ---------------------------------------------------------------------------------------
    def _connect(self, ex: _Exchange) -> None:
        key = (ex.plan.cid, ex.plan.address)
        idle = self._idle.get(key)
        if idle and not ex.retried:
            up = idle.pop()
            if not idle:
                del self._idle[key]
            up.exchange, ex.up, ex.reused = ex, up, True
            self._send_request(ex)
            return
        family = socket.AF_INET6 if ":" in ex.plan.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(ex.plan.address)
        if err and err not in _IN_PROGRESS:
            sock.close()
            self._refused(ex)
            return
        up = _Upstream(sock, key)
        up.exchange, ex.up, ex.reused = ex, up, False
        if err:
            ex.connecting = True
            self._upstream_events(up, _WRITE)
        else:
            self._upstream_events(up, _READ)
            self._send_request(ex)

    def _upstream_events(self, up: _Upstream, events: int) -> None:
        if events == up.events:
            return
        if up.events and events:
            self._selector.modify(up.sock, events, (self._upstream_event, up))
        elif events:
            self._selector.register(up.sock, events, (self._upstream_event, up))
        else:
            self._selector.unregister(up.sock)
        up.events = events

    def _set_upstream_reading(self, ex: _Exchange, reading: bool) -> None:
        up = ex.up
        if up is None or ex.connecting:
            return
        self._upstream_events(up, (_READ if reading else 0) | (_WRITE if ex.unsent else 0))

    def _send_request(self, ex: _Exchange) -> None:
        data = ex.unsent or ex.plan.head
        up = ex.up
        assert up is not None  # a request is sent on the exchange's upstream
        try:
            sent = up.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._upstream_broke(ex)
            return
        ex.unsent = data[sent:]
        ex.since = time.monotonic()
        self._upstream_events(up, _READ | (_WRITE if ex.unsent else 0))

    def _upstream_event(self, up: _Upstream, mask: int) -> None:
        ex = up.exchange
        if ex is None:  # an idle kept-alive socket turned readable: the container closed it
            self._discard_idle(up)
            return
        if ex.connecting:
            err = up.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            ex.connecting = False
            if err:
                self._drop_upstream(ex)
                self._refused(ex)
                return
            self._send_request(ex)
            return
        if mask & _WRITE and ex.unsent:
            self._send_request(ex)
        if mask & _READ and not ex.finished:
            try:
                data = up.sock.recv(RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            ex.since = time.monotonic()
            if data:
                self._answer(ex, data)
            else:
                self._upstream_eof(ex)

    def _refused(self, ex: _Exchange) -> None:
        """Nothing was sent: the container is gone from its port (stopped meanwhile). The request goes back to
        the front of the caller's buffer and takes the full way, which looks at the container again."""
        c = ex.client
        ex.plan.refused()
        if ex.plan.recording is not None:
            ex.plan.recording.discard()  # the full way records it
        self._end(ex, reusable=False)
        c.buf = ex.head + c.buf
        self._hand_off(c)

    def _upstream_broke(self, ex: _Exchange) -> None:
        """The upstream socket failed before any byte of the answer: a kept-alive one the container closed while
        it sat in the pool is replaced once for an idempotent request; otherwise 502."""
        if not ex.retried and retry_on_stale(ex.plan.method, ex.reused, len(ex.rbuf)):
            self._drop_upstream(ex)
            ex.retried = True
            ex.unsent = b""
            self._connect(ex)
            return
        error = UpstreamFailed(f"Container {ex.plan.name} did not answer on {ex.plan.address[0]}:"
                               f"{ex.plan.address[1]}: the connection was closed")
        if ex.plan.explain is None:
            self._fail(ex, error)
            return
        # did the container end under it (out of memory, a signal)? Asking the daemon blocks: on a thread of its
        # own, the answer comes back through _woken; the sweep's proxy_request_timeout still bounds the exchange
        self._drop_upstream(ex)
        threading.Thread(target=self._explain, args=(ex, ex.plan.explain, error), name="grokemu-relay-explain",
                         daemon=True).start()

    def _explain(self, ex: _Exchange, explain: Callable[[], str | None], error: GrokemuError) -> None:
        try:
            reason = explain()
        except DockerUnavailable as gone:  # the daemon is gone: 503, as services/proxy.py `_explained` answers
            reason = None
            error = DockerUnavailable(f"Container {ex.plan.name} did not answer: {gone.message}", error.message)
        except Exception:
            log.exception("explaining a broken relayed request failed")
            reason = None
        if reason:
            error = UpstreamFailed(f"Container {ex.plan.name} did not answer: {reason}", error.message)
        with self._lock:
            self._explained.append((ex, error))
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # a wake-up is pending already, or the loop is closed

    def _upstream_eof(self, ex: _Exchange) -> None:
        if ex.status is None:
            self._upstream_broke(ex)
        elif ex.framing == "close":
            self._emit(ex, b"0\r\n\r\n")
            self._complete(ex, reusable=False)
        else:  # the answer broke off: only closing tells the caller
            c = ex.client
            self._end(ex, reusable=False)
            c.closing = True
            if not c.out:
                self._close_client(c)

    def _answer(self, ex: _Exchange, data: bytes) -> None:
        if ex.status is None:
            ex.rbuf += data
            while True:
                end = ex.rbuf.find(b"\r\n\r\n")
                if end < 0:
                    if len(ex.rbuf) > MAX_ANSWER_HEAD:
                        self._fail(ex, UpstreamFailed(f"Container {ex.plan.name} sent an answer head over "
                                                      f"{MAX_ANSWER_HEAD} bytes"))
                    return
                try:
                    shape = self._shape(ex.rbuf[:end], ex.plan.method == "HEAD", ex.keep)
                except (ConnectionError, ValueError) as e:
                    self._fail(ex, UpstreamFailed(f"Container {ex.plan.name} answered with no HTTP: {e}"))
                    return
                rest = ex.rbuf[end + 4:]
                if shape.informational:  # 1xx informational answers (103 Early Hints) are skipped
                    if shape.status == 101:
                        self._fail(ex, UpstreamFailed(f"Container {ex.plan.name} switched protocols unasked"))
                        return
                    ex.rbuf = rest
                    continue
                break
            ex.rbuf = b""
            ex.status, ex.framing, ex.remaining, ex.up_keep = shape.status, shape.framing, shape.length, shape.keep_up
            rec = ex.plan.recording
            if rec is not None:
                meta = shape.recorded
                if meta is None:  # once per shaped head: the inspector's redaction of its headers
                    meta = shape.recorded = rec.response_meta(shape.headers, shape.framing == "chunked")
                rec.answered(shape.status, meta)
            ex.answered = True
            ex.head_out = shape.head  # sent with the first body bytes
            if shape.framing == "chunked":
                ex.chunks = ChunkedDecoder()
            elif shape.framing == "none":
                self._emit(ex, b"")
                self._complete(ex, reusable=shape.keep_up and not rest)
                return
            data = rest
            if not data:
                if ex.framing == "length" and ex.remaining == 0:
                    self._emit(ex, b"")
                    self._complete(ex, reusable=ex.up_keep)
                elif not (ex.framing == "length" and ex.remaining <= HOLD_HEAD_FOR):
                    self._emit(ex, b"")  # the head now, the body as it comes
                # else a small body follows at once (an app that writes head and body apart): one write for both
                return
        self._answer_body(ex, data)

    def _shape(self, raw_head: bytes, head_method: bool, keep: bool) -> _Shape:
        """The container's answer head as the caller gets it, and its framing. A container repeats its heads byte
        for byte (but for Date and sizes), so the result is kept for the same head, method, keep-alive and second
        (the Date grokemu adds when the container sends none)."""
        date = http_date()
        key = (raw_head, head_method, keep, date)
        shape = self._shapes.get(key)
        if shape is None:
            shape = _shape_answer(raw_head, head_method, keep, date)
            if len(self._shapes) >= 256:  # bounded: sizes and dates change
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def _answer_body(self, ex: _Exchange, data: bytes) -> None:
        rec = ex.plan.recording
        if rec is not None:
            rec.body(data)  # takes a slice while its preview has room, counts the rest
        framing = ex.framing
        if framing == "length":
            if len(data) >= ex.remaining:
                extra = len(data) > ex.remaining
                self._emit(ex, data[:ex.remaining] if extra else data)
                ex.remaining = 0
                self._complete(ex, reusable=ex.up_keep and not extra)
            else:
                ex.remaining -= len(data)
                self._emit(ex, data)
        elif framing == "chunked":
            assert ex.chunks is not None  # set with the chunked framing
            try:
                end = ex.chunks.feed(data)
            except ValueError:
                self._upstream_broke_mid_answer(ex)
                return
            if end < 0:
                self._emit(ex, data)
            else:
                self._emit(ex, data[:end])
                self._complete(ex, reusable=ex.up_keep and end == len(data))
        elif framing == "close":
            self._emit(ex, b"%x\r\n" % len(data) + data + b"\r\n")
        else:  # bytes after a body-less answer: the container is not speaking HTTP/1.1 any more
            self._complete(ex, reusable=False)

    def _emit(self, ex: _Exchange, data: bytes) -> None:
        """Answer bytes for the caller; the head still held goes with them, in one write."""
        if ex.head_out:
            data, ex.head_out = ex.head_out + data, b""
        self._send_client(ex.client, data)

    def _upstream_broke_mid_answer(self, ex: _Exchange) -> None:
        c = ex.client
        self._end(ex, reusable=False)
        c.closing = True
        if not c.out:
            self._close_client(c)

    def _fail(self, ex: _Exchange, error) -> None:
        """grokemu's own error answer (nothing of the container's went out yet), then the connection closes."""
        c = ex.client
        target = ex.head.split(b" ", 2)[1].decode("latin-1", "replace")
        if ex.plan.recording is not None and not ex.answered:
            ex.plan.recording.finish(error.status, error.message)
        self._end(ex, reusable=False)
        if ex.answered:
            c.closing = True
            if not c.out:
                self._close_client(c)
            return
        if isinstance(error, GatewayTimeout):
            log.info("%s", error)
        self._send_client(c, raw_answer(*self._failure(error, target.split("?", 1)[0])))
        c.closing = True
        if not c.out and not c.closed:
            self._close_client(c)

    def _complete(self, ex: _Exchange, reusable: bool) -> None:
        c = ex.client
        self._end(ex, reusable)
        if not ex.keep:
            c.closing = True
            if not c.out:
                self._close_client(c)
            return
        self._next(c)

    def _end(self, ex: _Exchange, reusable: bool) -> None:
        """The exchange is over: the container's socket kept or closed, the plan told, the caller free."""
        if ex.finished:
            return
        ex.finished = True
        ex.client.exchange = None
        if ex.up is not None:
            if reusable and not ex.unsent:
                self._keep_idle(ex)
            else:
                self._drop_upstream(ex)
        try:
            ex.plan.done(ex.status)
        except Exception:
            log.exception("ending a relayed request failed")

    def _drop_upstream(self, ex: _Exchange) -> None:
        up, ex.up = ex.up, None
        if up is None:
            return
        up.exchange = None
        self._upstream_events(up, 0)
        up.sock.close()

    def _keep_idle(self, ex: _Exchange) -> None:
        up, ex.up = ex.up, None
        assert up is not None  # an answered exchange still holds its upstream
        up.exchange = None
        idle = self._idle.setdefault(up.key, [])
        if len(idle) >= MAX_IDLE_UPSTREAM:
            self._upstream_events(up, 0)
            up.sock.close()
            return
        self._upstream_events(up, _READ)  # watched while idle: readable means the container closed it
        idle.append(up)

    def _discard_idle(self, up: _Upstream) -> None:
        idle = self._idle.get(up.key)
        if idle is not None and up in idle:
            idle.remove(up)
            if not idle:
                del self._idle[up.key]
        self._upstream_events(up, 0)
        up.sock.close()

    # -- timeouts ---------------------------------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        s = self.settings
        for c in list(self._clients):
            ex = c.exchange
            if ex is not None:
                if c.out and now - c.out_since > s.stream_timeout:
                    log.info("closing the relayed connection from %s: it read nothing for %g s", c.remote,
                             s.stream_timeout)
                    self._close_client(c)
                elif ex.status is None and now - ex.since > s.proxy_request_timeout:
                    self._fail(ex, GatewayTimeout(f"Container {ex.plan.name} did not answer {ex.plan.method} within "
                                                  f"{s.proxy_request_timeout:g} s"))
                elif ex.status is not None and not c.out and now - ex.since > s.stream_timeout:
                    log.info("closing the relayed connection from %s: the container sent nothing for %g s",
                             c.remote, s.stream_timeout)
                    self._close_client(c)
            elif c.out:
                if now - c.out_since > s.stream_timeout:
                    self._close_client(c)
            elif c.head_since is not None:
                if now - c.head_since > s.header_timeout:
                    log.info("closing the connection from %s: no complete request head within %g s", c.remote,
                             s.header_timeout)
                    self._close_client(c)
            elif now - c.idle_since > s.channel_timeout:
                self._close_client(c)
