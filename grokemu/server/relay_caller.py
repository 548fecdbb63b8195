"""The relay loop's caller side (server/relay_loop.py): a caller's connection read, its request heads parsed and
planned, the answer bytes written back at the caller's pace, the connection closed or handed to the blocking relay.
The container's side is relay_container.py; RelayLoop (relay_loop.py) joins both and runs them on its thread."""
from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from grokemu.domain.upstream import FastForward, ProxiedRequest
from grokemu.http1 import RECV, raw_answer
from grokemu.server.relay import Relay
from grokemu.server.relay_answer import _CallerHead
from grokemu.server.relay_state import (
    _READ,
    _WRITE,
    CLOSED,
    CLOSING,
    ENDED,
    HANDED_OFF,
    HIGH_WATER,
    MAX_PENDING,
    OPEN,
    _Client,
    _Exchange,
    _Head,
    _move,
)
from grokemu.server.watchdog import TrackedSocket

log = logging.getLogger("grokemu.server")

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


class _CallerSide:
    """The caller's half of RelayLoop: what it holds is set up by RelayLoop.__init__."""

    takeover: Any
    settings: Any
    streams: Any
    _plan: Callable[[dict], FastForward | None]
    _failure: Callable
    slow_path: Callable
    _selector: selectors.BaseSelector
    _clients: set[_Client]
    _explained: deque[tuple]
    _lock: threading.Lock
    _wake_w: socket.socket
    _prefix: bytes
    _caller_heads: dict[tuple, _CallerHead]
    forwarded: int
    handed_off: int

    # the container's side (relay_container.py) does these
    def _connect(self, ex: _Exchange) -> None:
        raise NotImplementedError

    def _end(self, ex: _Exchange, reusable: bool) -> None:
        raise NotImplementedError

    def _set_upstream_reading(self, ex: _Exchange, reading: bool) -> None:
        raise NotImplementedError

    def _client_event(self, c: _Client, mask: int) -> None:
        state = c.state
        if state is CLOSED or state is HANDED_OFF:  # an event of the same select, after it left
            return
        if mask & _WRITE:
            self._flush(c)
            if c.state is CLOSED:
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
                if c.state is OPEN:
                    _move(c, ENDED)
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
        while c.exchange is None and (c.state is OPEN or c.state is ENDED):
            buf = c.buf
            end = buf.find(b"\r\n\r\n") if buf else -1
            if (end + 4 if end >= 0 else len(buf)) > c.channel.adj.max_request_header_size:
                self._hand_off(c)  # waitress's parser answers 431
                return
            if end < 0:
                if c.state is ENDED:  # nothing complete is left to answer
                    self._close_when_written(c)
                    return
                if not buf:
                    c.idle_since = time.monotonic()
                elif c.head_since is None:
                    c.head_since = time.monotonic()
                if not c.events & _READ:
                    self._set_client_events(c, reading=True)
                return
            head = buf[:end + 4]
            planned = self._plan_request(c, head)
            if planned is None:
                self._hand_off(c)
                return
            plan, keep = planned
            c.buf = buf[end + 4:]
            c.head_since = None
            c.exchange = _Exchange(c, plan, head, keep)
            self.forwarded += 1
            self._connect(c.exchange)

    def _plan_request(self, c: _Client, head: bytes) -> tuple[FastForward, bool] | None:
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
        state = c.state
        if state is CLOSED or state is HANDED_OFF or not data:
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
            if c.state is CLOSING:
                self._close_client(c)
                return
            self._set_client_events(c, writing=False)
        if c.exchange is not None and len(c.out) <= HIGH_WATER // 2:
            self._set_upstream_reading(c.exchange, True)

    def _set_client_events(self, c: _Client, reading: bool | None = None, writing: bool | None = None) -> None:
        """Watch the caller's socket for what the loop wants of it now: `reading` (None: as it is; only an open
        connection is read), `writing` (None: while answer bytes wait)."""
        if reading is None:
            reading = bool(c.events & _READ)
        elif c.state is not OPEN:
            reading = False  # it ended, or is closing: nothing more is read
        events = (_READ if reading else 0) | (_WRITE if (writing if writing is not None else bool(c.out)) else 0)
        state = c.state
        if events == c.events or state is CLOSED or state is HANDED_OFF:
            return
        if events and c.events:
            self._selector.modify(c.sock, events, (self._client_event, c))
        elif events:
            self._selector.register(c.sock, events, (self._client_event, c))
        else:
            self._selector.unregister(c.sock)
        c.events = events

    def _close_when_written(self, c: _Client) -> None:
        """No more requests on this connection: it closes once the answer bytes waiting are written."""
        state = c.state
        if state is OPEN or state is ENDED:
            _move(c, CLOSING)
        elif state is not CLOSING:
            return  # closed or handed off already
        if not c.out:
            self._close_client(c)

    def _close_client(self, c: _Client) -> None:
        state = c.state
        if state is CLOSED or state is HANDED_OFF:
            return
        _move(c, CLOSED)
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
        self._clients.discard(c)
        request_line = c.buf.split(b"\n", 1)[0][:8192]
        proxied = self._prefix in request_line
        if proxied and not self.streams.try_acquire():
            _move(c, CLOSED)
            self._refuse_busy(c)
            return
        _move(c, HANDED_OFF)  # for the loop, until it comes back (as a new _Client)
        if not proxied:
            self.streams.acquire_unbounded()  # bounded by the parking place this connection holds
        c.sock.setblocking(True)
        tracked = TrackedSocket(c.sock.detach(), self.settings.stream_timeout,
                                f"relayed connection from {c.remote}")
        relay = Relay(self.takeover, c.channel, tracked, self.slow_path, self)
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
