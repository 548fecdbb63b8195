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

import h11
from waitress.parser import HTTPRequestParser

from grokemu.http1 import RECV, raw_answer
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
        """Write one answer, framed by h11 (Content-Length kept and enforced, chunked when unsized, no body for
        HEAD, 204 and 304, `Connection: close` when the connection ends); Server and Date added, and the
        Content-Length of a body given whole, as waitress does. True when the connection stays open."""
        try:
            return _send_answer(self.sock, environ["REQUEST_METHOD"], version, keep, status, headers, body,
                                self.ident)
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


def _send_answer(sock, method: str, version: str, keep: bool, status: str, headers: list[tuple[str, str]],
                 body: Iterable[bytes], server: str, date: Callable[[], str] = http_date) -> bool:
    """The answer on `sock` (see Relay._write); True when the connection stays open. A body given whole goes out
    with the head in one write; a streamed one after the head, each piece as it comes. False when the body broke
    off before its Content-Length (only closing tells the caller then)."""
    names = {name.lower() for name, _ in headers}
    code, _, reason = status.partition(" ")
    if not (code.isdigit() and 200 <= int(code) <= 599):  # h11 (rightly) sends no 1xx as a final answer
        raise ValueError(f"the app answered with status {status[:40]!r}, not a final one")
    no_body = method == "HEAD" or code in ("204", "304")
    whole = body if isinstance(body, (list, tuple)) else None  # a body given whole, not streamed
    if whole is not None and not no_body and not names & {"content-length", "transfer-encoding"}:
        headers = headers + [("Content-Length", str(sum(len(b) for b in whole)))]
        names.add("content-length")
    if "server" not in names:
        headers = headers + [("Server", server)]
    if "date" not in names:
        headers = headers + [("Date", date())]
    # h11 frames the answer after the request it answers: only its method, version and keep-alive shape the
    # framing, so that is what h11 is told (waitress parsed the request). An unsized body on a connection that
    # closes goes until the close, as waitress sends it, not chunked: h11 does that for an HTTP/1.0 request.
    until_close = not keep and not no_body and not names & {"content-length", "transfer-encoding"}
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"%s / HTTP/%s\r\nHost: relay\r\n%s\r\n" % (
        method.encode("latin-1"), b"1.0" if until_close else version.encode("latin-1"),
        b"" if keep else b"Connection: close\r\n"))
    conn.next_event()
    head = conn.send(h11.Response(status_code=int(code), reason=reason.encode("latin-1"), headers=headers))
    left = None if no_body else _content_length(headers)
    if no_body:
        sock.sendall(head + conn.send(h11.EndOfMessage()))
        return conn.our_state is h11.DONE
    if whole is not None and len(whole) == 1 and left == len(whole[0]):  # the common small answer: one write
        sock.sendall(head + b"".join(_data(conn, whole[0])) + conn.send(h11.EndOfMessage()))
        return conn.our_state is h11.DONE
    sock.sendall(head)
    for data in body:
        if not data:
            continue
        if left is not None:
            data = data[:left]
            left -= len(data)
        pieces = _data(conn, data)
        if len(data) < 65536:
            sock.sendall(b"".join(pieces))  # small: one write, joining is cheap
        else:
            for piece in pieces:  # large: the chunk framing and the data apart, rather than copying the data
                sock.sendall(piece)
        if left == 0:
            break
    if left:
        return False
    sock.sendall(conn.send(h11.EndOfMessage()))
    return conn.our_state is h11.DONE


def _data(conn: h11.Connection, data: bytes) -> list[bytes]:
    """The wire bytes of one body piece (chunk framing around it, or itself), the data not copied."""
    return conn.send_with_data_passthrough(h11.Data(data=data)) or []


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return None


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
