"""The blocking relay (docs/design.md decision 2): one request on a keep-alive connection that left waitress after a
fetchProxy request, served on a stream thread of its own; the connection then goes (back) to the relay loop
(server/relay_loop.py), which serves the body-less fetchProxy requests to started containers itself and hands every
other request here.

- Request heads are parsed by waitress's own parser (HTTPRequestParser: the same limits, the same environ as every
  other request, built by GrokemuTask), pipelined requests included.
- A fetchProxy request goes to web/fast_proxy.py `FastProxy.handle` (the same guard call and ProxyService.forward as
  the Flask route: cold starts, bodies, every refusal); anything else (the dashboard, the API, a WebSocket upgrade)
  runs through the server's whole WSGI chain on this thread, so a browser that mixes requests on one connection
  keeps working.
- A request head with a body passes `preflight` (web/guard.py) before any of the body is read, as in waitress; a big
  fixed-length body is read from the socket as the container takes it, and the connection closes after it.
- Bounds: the thread holds a stream slot (the loop took it, or the takeover for the first request); the connection
  keeps its parking place (StreamPool.try_park) from the loop. A head not complete `header_timeout` seconds after
  its first byte is cut; a body or an answer that makes no progress for `stream_timeout` is cut (TrackedSocket's
  watchdog).
"""
from __future__ import annotations

import io
import logging
import select
import socket
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import TYPE_CHECKING

from waitress.parser import HTTPRequestParser

from grokemu.http1 import frame_answer, raw_answer
from grokemu.server.channel import (
    REFUSAL_DRAIN,
    REFUSAL_LINGER,
    STREAM_BODIES_FROM,
    GrokemuTask,
    parser_refusal,
    render_error,
    run_preflight,
)
from grokemu.server.streams import STREAM_BLOCK, SocketBody, close_socket

if TYPE_CHECKING:
    from grokemu.server.watchdog import TrackedSocket

log = logging.getLogger("grokemu.server")

RECV = 256 * 1024
IDLE_SLICE = 1.0  # seconds between looks at the clock while a connection waits for the rest of a request
class _Date:
    """The Date header, formatted once a second."""

    def __init__(self):
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


http_date = _Date()


class Relay:
    """Requests on a connection taken from waitress, served with blocking I/O on the calling (stream) thread.
    `takeover` is the ConnectionTakeover (its settings, WebSocket start); `fast(environ)` answers fetchProxy
    requests (None: not one, run the WSGI app); `loop` is the relay loop the connection goes to afterwards."""

    def __init__(self, takeover, channel, sock: TrackedSocket,
                 fast: Callable[[dict], tuple[str, list[tuple[str, str]], Iterable[bytes]] | None], loop):
        self.takeover = takeover
        self.channel = channel  # detached: only its server, address and adjustments are used (GrokemuTask)
        self.server = channel.server
        self.adj = channel.adj
        self.sock = sock
        self.fast = fast
        self.loop = loop
        self.app = self.server.application  # the server's whole WSGI chain
        self.ident = self.adj.ident
        self.settings = takeover.settings
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._handed_off = False  # a WebSocket took the socket: not closed here

    def run(self, request, rest: bytes) -> None:
        """The connection's first fetchProxy request, parsed by waitress; then the connection goes to the loop,
        which takes a parking place for it."""
        if self._serve_safely(request):
            self.loop.adopt(self.channel, self.sock, rest, parked=False)
        elif not self._handed_off:
            close_socket(self.sock)

    def serve_next(self, buf: bytes) -> None:
        """One request from the loop (its bytes start `buf`, the rest may still be on the socket); the connection
        holds a parking place, kept when it goes back to the loop and given up when it closes here."""
        back = False
        try:
            request, rest = self._next_request(buf)
            if request is not None and self._serve_safely(request):
                self.loop.adopt(self.channel, self.sock, rest, parked=True)
                back = True
        except OSError:
            pass
        finally:
            if not back:
                if not self._handed_off:
                    close_socket(self.sock)
                self.takeover.streams.unpark()

    def _serve_safely(self, request) -> bool:
        try:
            return self._serve(request)
        except OSError:
            return False  # the caller went away, or the watchdog cut it
        except Exception:
            log.exception("relayed connection from %s failed", self.channel.addr[0])
            return False

    def _next_request(self, buf: bytes):
        """The next complete request (its body buffered, or left on the socket when big) and the bytes after it;
        (None, b"") when the connection is to close."""
        request = HTTPRequestParser(self.adj)
        started = None
        while True:
            if buf:
                if started is None:
                    started = time.monotonic()
                in_head = not request.headers_finished
                n = request.received(buf)
                buf = buf[n:]
                if request.error is not None:
                    self._write_error(request)
                    return None, b""
                if in_head and request.headers_finished and not request.completed:
                    # the head is in and a body follows, none of it parsed yet: the same checks as waitress's channel
                    refusal = self._preflight(request)
                    if refusal is not None:
                        self._refuse(refusal)
                        return None, b""
                    if not request.chunked and request.content_length >= STREAM_BODIES_FROM:
                        request.grokemu_body = (buf[:request.content_length], request.expect_continue)
                        return request, b""  # read from the socket as the container takes it; nothing after it
                    if request.expect_continue:
                        self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if request.completed:
                    if request.empty:
                        request, started = HTTPRequestParser(self.adj), None
                        continue
                    return request, buf
                if buf:
                    continue
            data = self._recv(started)
            if not data:
                return None, b""
            buf = data

    def _recv(self, started: float | None) -> bytes:
        """Wait for bytes: idle (no head started) up to channel_timeout; a head in progress, or a body after it, up
        to header_timeout since its first byte."""
        idle_since = time.monotonic()
        while True:
            if self._poll.poll(IDLE_SLICE * 1000):
                return self.sock.recv(RECV)
            now = time.monotonic()
            if started is not None:
                if now - started > self.settings.header_timeout:
                    log.info("closing the connection from %s: no complete request head within %g s",
                             self.channel.addr[0], self.settings.header_timeout)
                    return b""
            elif now - idle_since > self.settings.channel_timeout:
                return b""

    # -- one request ----------------------------------------------------------------------------------------------
    def _environ(self, request) -> tuple[dict, str]:
        task = GrokemuTask(self.channel, request)
        environ = task.get_environment()
        environ.pop("waitress.client_disconnected", None)  # this connection is not waitress's any more
        return environ, task.version

    def _serve(self, request) -> bool:
        """Answer one request; True when the connection stays open for the next."""
        environ, version = self._environ(request)
        try:
            streamed = getattr(request, "grokemu_body", None)
            if streamed is not None:
                already, send_continue = streamed
                length = request.content_length
                environ["wsgi.input"] = io.BufferedReader(
                    SocketBody(already, self.sock, length - len(already), send_continue), STREAM_BLOCK)
            if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
                self._handed_off = True
                self.takeover.start_websocket(environ, self.sock)
                return False
            keep = version == "1.1" and "close" not in environ.get("HTTP_CONNECTION", "").lower()
            answer = self.fast(environ)
            if answer is None:
                return self._serve_app(environ, version, keep) and streamed is None
            status, headers, body = answer
            return self._write(environ, version, keep, status, headers, body) and streamed is None
        finally:
            request.close()

    def _serve_app(self, environ: dict, version: str, keep: bool) -> bool:
        started: list = []

        def start_response(status, headers, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return _no_write

        result = self.app(environ, start_response)
        if not started:  # a lazy app: the status comes with the first chunk
            chunks = iter(result)
            first = next(chunks, b"")
            body = _Prepended(first, chunks, result)
        else:
            body = result
        return self._write(environ, version, keep, started[0], started[1], body)

    def _write(self, environ: dict, version: str, keep: bool, status: str, headers: list[tuple[str, str]],
               body: Iterable[bytes]) -> bool:
        """Write one answer as waitress would frame it (http1.py frame_answer); True when the connection stays
        open."""
        try:
            sized = body if isinstance(body, (list, tuple)) else None
            framing = frame_answer(version, status, headers, environ["REQUEST_METHOD"], keep, sized,
                                   self.ident, http_date)
            sock = self.sock
            if framing.no_body:
                sock.sendall(framing.head)
                return framing.keep
            if isinstance(body, list) and len(body) == 1 and framing.length == len(body[0]):
                sock.sendall(framing.head + body[0])  # the common small answer: one write
                return framing.keep
            sock.sendall(framing.head)
            complete = _send_body(sock, body, framing.length, framing.chunked)
            return framing.keep and complete
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    # -- refusals -------------------------------------------------------------------------------------------------
    def _preflight(self, request):
        if self.server.grokemu_preflight is None:
            return None
        return run_preflight(self.server, self._environ(request)[0])

    def _refuse(self, refusal) -> None:

        self.sock.sendall(raw_answer(*refusal))
        try:  # a lingering close, as the channel's: the answer is not destroyed by a reset
            self.sock.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + REFUSAL_LINGER, 0
            while drained < REFUSAL_DRAIN and time.monotonic() < deadline:
                if not self._poll.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    break
                data = self.sock.recv(RECV)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass

    def _write_error(self, request) -> None:
        status, headers, body = render_error(self.server, parser_refusal(request.error),
                                             getattr(request, "path", "") or "")

        self.sock.sendall(raw_answer(status, headers, body))


def _send_body(sock, body: Iterable[bytes], length: int | None, chunked: bool) -> bool:
    """The body's chunks on `sock`, chunk-encoded or cut at `length`; False when it broke off before `length`
    (only closing the connection tells the caller then)."""
    sent = 0
    for data in body:
        if not data:
            continue
        if chunked and len(data) < 65536:
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")  # small: one write, joining is cheap
        elif chunked:  # large: three writes rather than copying the data into one
            sock.sendall(b"%x\r\n" % len(data))
            sock.sendall(data)
            sock.sendall(b"\r\n")
        else:
            if length is not None and sent + len(data) > length:
                data = data[:length - sent]
            sock.sendall(data)
            sent += len(data)
            if length is not None and sent >= length:
                break
    if chunked:
        sock.sendall(b"0\r\n\r\n")
        return True
    return length is None or sent >= length


def _no_write(_data: bytes) -> None:
    raise RuntimeError("the write() callable of start_response is not supported on a relayed connection")


class _Prepended:
    def __init__(self, first: bytes, rest, result):
        self._first, self._rest, self._result = first, rest, result

    def __iter__(self):
        yield self._first
        yield from self._rest

    def close(self):
        close = getattr(self._result, "close", None)
        if close is not None:
            close()
