"""waitress serves everything on one port; WebSockets, big uploads and proxied requests leave the shared worker
threads (DESIGN.md decision 2), and no number of idle, slow or non-reading connections can stall the API.

Stock waitress cannot serve flask-sock: simple-websocket needs the raw socket, and waitress's event loop owns every
connection. For a request with `Upgrade: websocket` the adapter below takes the connection away from waitress (a
dup of the socket, the original removed from the event loop and closed), puts it in blocking mode, exposes it as
`environ['werkzeug.socket']` and runs the Flask app for that request on a thread of its own. The waitress worker
returns at once, so open WebSockets never hold the worker threads that plain HTTP needs.

Resource limits (settings in config.py):
- waitress polls with poll(), not select(): no 1024-descriptor ceiling. At `connection_limit` open connections the
  connection idle the longest is closed to make room, so idle sockets can never keep a new caller out; an idle
  keep-alive connection is closed after `channel_timeout`, a request head not complete `header_timeout` seconds
  after its first byte is cut (slowloris).
- fetchProxy requests (`/api/docker/containers/proxy/...`) run on threads of their own, at most `max_streams` at
  once together with the streamed uploads; beyond that a proxied request gets 503 at once. The shared workers
  (`threads`) serve the rest of the API and never wait on a container or on a caller that does not read.
- Every connection taken from waitress has a watchdog (TrackedSocket): a WebSocket that carries nothing either way
  for `websocket_idle_timeout`, an upload or answer that makes no progress for `stream_timeout`, is cut. An answer
  still written through waitress (a chunked one, or one with pipelined requests behind it) is cut the same way.
- `preflight(environ)` (web/guard.py) sees every request that has a body as soon as its head is in, before waitress
  reads or spools any of it; its refusal is written with `Connection: close` and the body is never stored.
- `environ["grokemu.listener"]` says which listening socket the connection came in on: "bridge" for the Docker
  bridge gateway, "main" otherwise.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from typing import Callable, Iterable

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask
from wsgiref.handlers import SimpleHandler

log = logging.getLogger(__name__)

STREAM_BLOCK = 1024 * 1024
STREAMED_PREFIX = "/api/docker/containers/proxy/"  # fetchProxy: run off the shared workers; big uploads relayed
STREAM_BODIES_FROM = 1024 * 1024  # smaller bodies are simply buffered by waitress
WATCHDOG_TICK = 0.25  # seconds between watchdog passes over the connections taken from waitress
REFUSAL_LINGER = 2.0  # seconds a refused connection still drains (and drops) what the caller sends, see _refuse
REFUSAL_DRAIN = 1024 * 1024  # ... and at most this many bytes
FD_RESERVE = 256  # descriptors kept for everything that is not a connection (SQLite, Docker, files, pipes)

Preflight = Callable[[dict], "tuple[str, list[tuple[str, str]], bytes] | None"]


# -- watchdog over connections taken from waitress ---------------------------------------------------------------
class _Watchdog:
    """One thread for the whole process: every TrackedSocket with an operation outstanding longer than its timeout
    without progress is shut down, which wakes up (with an error or EOF) whichever thread is blocked on it."""

    def __init__(self):
        self._sockets: set[TrackedSocket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, sock: "TrackedSocket") -> None:
        with self._lock:
            self._sockets.add(sock)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="grokemu-watchdog", daemon=True)
                self._thread.start()

    def unwatch(self, sock: "TrackedSocket") -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_TICK)
            now = time.monotonic()
            with self._lock:
                stalled = [s for s in self._sockets if s.stalled(now)]
            for s in stalled:
                s.cut()


WATCHDOG = _Watchdog()


class TrackedSocket(socket.socket):
    """A blocking socket that records progress: it is cut when an operation on it (a recv, a send) has waited
    `timeout` seconds since the last one started or moved bytes. `what` names it in the log.

    No lock on the hot path (a WebSocket relay calls it per frame): receiving and sending are counted apart, each
    by the one thread that receives or sends, and the time of the last event is a plain attribute store."""

    def __init__(self, fileno: int, timeout: float, what: str):
        super().__init__(fileno=fileno)
        self.setblocking(True)
        self.watch_timeout = timeout
        self.what = what
        self._receiving = 0
        self._sending = 0
        self._last = _now()
        self.was_cut = False
        WATCHDOG.watch(self)

    def stalled(self, now: float) -> bool:
        return bool(self._receiving or self._sending) and now - self._last > self.watch_timeout

    def cut(self) -> None:
        if self.was_cut:
            return
        self.was_cut = True
        log.info("closing %s: nothing moved for %g s", self.what, self.watch_timeout)
        try:
            socket.socket.shutdown(self, socket.SHUT_RDWR)
        except OSError:
            pass

    def recv(self, *args):
        self._receiving += 1
        self._last = _now()
        try:
            return _recv(self, *args)
        finally:
            self._receiving -= 1
            self._last = _now()

    def recv_into(self, *args):
        self._receiving += 1
        self._last = _now()
        try:
            return _recv_into(self, *args)
        finally:
            self._receiving -= 1
            self._last = _now()

    def send(self, *args):
        self._sending += 1
        self._last = _now()
        try:
            return _send(self, *args)
        finally:
            self._sending -= 1
            self._last = _now()

    def sendall(self, data, flags: int = 0) -> None:
        # send() by send(): every partial write counts as progress, so a slow reader is not cut, a stopped one is
        sent = self.send(data, flags)
        if sent < len(data):
            view = memoryview(data).cast("B")[sent:]
            while view:
                view = view[self.send(view, flags):]

    def close(self) -> None:
        WATCHDOG.unwatch(self)
        super().close()


_now = time.monotonic
_recv, _recv_into, _send = socket.socket.recv, socket.socket.recv_into, socket.socket.send


# -- threads for streams: fetchProxy requests and relayed uploads --------------------------------------------------
class StreamPool:
    """At most `limit` streams at once (proxied requests served off the shared workers, relayed uploads), each on a
    thread of its own; threads are reused, and one idle for a minute ends."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self._busy = 0
        self._idle = 0
        self._queue: deque[Callable[[], None]] = deque()
        self._cv = threading.Condition()

    @property
    def busy(self) -> int:
        return self._busy

    def try_acquire(self) -> bool:
        with self._cv:
            if self._busy >= self.limit:
                return False
            self._busy += 1
            return True

    def release(self) -> None:
        with self._cv:
            self._busy -= 1

    def run(self, job: Callable[[], None]) -> None:
        """Run `job` on a stream thread; the caller holds a slot (try_acquire), released when the job ends."""
        with self._cv:
            self._queue.append(job)
            if len(self._queue) > self._idle:
                threading.Thread(target=self._worker, name="grokemu-stream", daemon=True).start()
            else:
                self._cv.notify()

    def _worker(self) -> None:
        while True:
            with self._cv:
                self._idle += 1
                try:
                    if not self._queue:
                        self._cv.wait(60.0)
                    if not self._queue:
                        return
                    job = self._queue.popleft()
                finally:
                    self._idle -= 1
            try:
                job()
            except BaseException:
                log.exception("stream failed")
            finally:
                self.release()


# -- WSGI middleware -------------------------------------------------------------------------------------------------
class WebSocketHandoff:
    """WSGI middleware: plain HTTP passes through; WebSocket upgrades leave waitress for a thread of their own."""

    def __init__(self, app: Callable, settings=None):
        from grokemu.config import Settings

        self.app = app
        self.settings = settings or Settings()
        self.streams = StreamPool(self.settings.max_streams)
        self._open = 0
        self._lock = threading.Lock()
        self._refusals = threading.BoundedSemaphore(32)  # WebSocket refusals being written at once

    @property
    def open_websockets(self) -> int:
        return self._open

    @staticmethod
    def _detach(channel: HTTPChannel, timeout: float, what: str) -> TrackedSocket:
        """The connection, taken away from waitress: a blocking, watched dup of its socket; waitress's own copy is
        removed from the event loop and closed, and the channel marked disconnected so its task writes nothing
        more."""
        fd = os.dup(channel.socket.fileno())
        channel.del_channel()  # the event loop stops reading and writing this connection
        channel.connected = False  # so the task writes no HTTP response of its own (it ends as 'disconnected')
        channel.socket.close()  # our dup keeps the connection open
        return TrackedSocket(fd, timeout, what)  # blocking only now that the event loop has let go of it

    def __call__(self, environ, start_response):
        if "waitress.client_disconnected" not in environ:
            return self.app(environ, start_response)
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            environ["grokemu.server"] = self  # lets a view answer a big download on the socket itself
            return self.app(environ, start_response)
        # waitress gives no public handle on the connection; the bound method it puts in the environ does.
        channel = environ["waitress.client_disconnected"].__self__
        sock = self._detach(channel, self.settings.websocket_idle_timeout,
                            f"WebSocket {environ.get('PATH_INFO')} from {environ.get('REMOTE_ADDR')}")
        ws_environ = dict(environ)
        ws_environ["werkzeug.socket"] = sock
        with self._lock:
            admitted = self._open < self.settings.max_websockets
            if admitted:
                self._open += 1
        if admitted:
            threading.Thread(target=self._serve, args=(ws_environ, sock), name="grokemu-websocket",
                             daemon=True).start()
        elif self._refusals.acquire(blocking=False):
            threading.Thread(target=self._refuse_websocket, args=(ws_environ, sock), name="grokemu-ws-refusal",
                             daemon=True).start()
        else:  # a flood of refused upgrades: no close reason for these
            _close(sock)
        # waitress insists on a status; with the channel marked disconnected it is never written.
        start_response("101 Switching Protocols", [])
        return []

    def _refuse_websocket(self, environ, sock: TrackedSocket) -> None:
        """Over `max_websockets`: accepted, then closed at once with 4503 and a reason (as web/proxy.py rejects), so
        the JS client says `Could not open WebSocket connection: <reason>`."""
        from grokemu.services.proxy import reject_websocket

        try:
            sock.settimeout(2.0)
            reject_websocket(environ, sock, 503, f"Too many open WebSockets ({self.settings.max_websockets}, the "
                                                 f"max_websockets setting): close one or try again later")
        except OSError:
            pass
        finally:
            _close(sock)
            self._refusals.release()

    def stream_request(self, channel: HTTPChannel, request, already: bytes) -> bool:
        """Take over a connection whose big fixed-length body is still arriving (a fetchProxy upload), if a stream
        slot is free (False: waitress buffers the body as usual).

        waitress calls the app only once the whole body is in (spooled to a file), so receiving and forwarding would
        run one after the other. Instead, the connection leaves waitress as soon as the headers are in, and the
        app runs on a stream thread reading the body straight from the socket while it forwards it; the standard
        library's wsgiref writes the answer. The connection closes after that one exchange."""
        if not self.streams.try_acquire():
            return False
        environ = GrokemuTask(channel, request).get_environment()
        send_continue = request.expect_continue and not channel.sent_continue
        sock = self._detach(channel, self.settings.stream_timeout,
                            f"upload to {request.path} from {environ.get('REMOTE_ADDR')}")
        channel.request = None
        # the server's whole WSGI chain (waitress's proxy-header cleaning, then this middleware, then Flask)
        app = channel.server.application
        self.streams.run(lambda: self._serve_streamed(app, environ, sock, already, send_continue))
        return True

    def _serve_streamed(self, app, environ, sock: socket.socket, already: bytes, send_continue: bool) -> None:
        length = int(environ["CONTENT_LENGTH"])
        body = io.BufferedReader(_SocketBody(already, sock, length - len(already), send_continue), STREAM_BLOCK)
        environ["wsgi.input"] = body
        environ["wsgi.input_terminated"] = True
        environ.pop("waitress.client_disconnected", None)  # this connection is not waitress's any more
        _run_on_socket(app, environ, body, sock)

    def serve_proxied(self, channel: HTTPChannel) -> None:
        """A complete fetchProxy request: served on a stream thread, so waiting for a container or for a caller
        that reads slowly never holds a shared worker; over `max_streams`, 503 at once."""
        if self.streams.try_acquire():
            self.streams.run(channel.service)
            return
        from grokemu.domain.errors import Busy
        from grokemu.web.errors import raw_error

        request = channel.requests[0]
        log.warning("refusing %s %s: %d streams open (max_streams)", request.command, request.path,
                    self.streams.limit)
        channel.refuse_queued(*raw_error(Busy(
            f"Too many proxied requests and streams at once ({self.streams.limit}, the max_streams setting): "
            f"try again later"), request.path))

    @staticmethod
    def can_answer_directly(environ) -> bool:
        """Only when no pipelined request waits behind this one: the connection closes after a direct answer."""
        disconnected = environ.get("waitress.client_disconnected")
        return disconnected is not None and len(disconnected.__self__.requests) <= 1

    def answer_directly(self, environ, status: str, headers: list[tuple[str, str]], body) -> None:
        """Write a big streamed answer straight to the caller's socket from the calling (stream) thread, instead of
        through waitress's output buffers and event loop, then close the connection. The caller returns an empty
        body to waitress afterwards. A caller that stops reading is cut after `stream_timeout`."""
        sock = self._detach(environ["waitress.client_disconnected"].__self__, self.settings.stream_timeout,
                            f"answer to {environ.get('PATH_INFO')} for {environ.get('REMOTE_ADDR')}")

        def answer(env, start_response):
            start_response(status, headers)
            return body

        _run_on_socket(answer, dict(environ), io.BytesIO(), sock)

    def _serve(self, environ, sock: socket.socket) -> None:
        try:
            result = self.app(environ, lambda status, headers, exc_info=None: (lambda data: None))
            close = getattr(result, "close", None)
            if close:
                close()
        except ConnectionError:
            pass  # flask-sock / simple-websocket signal a closed peer this way
        except Exception:
            log.exception("WebSocket handler failed on %s", environ.get("PATH_INFO"))
        finally:
            with self._lock:
                self._open -= 1
            _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _SocketBody(io.RawIOBase):
    """A request body: the bytes that came with the headers, then exactly `remaining` more from the socket."""

    def __init__(self, already: bytes, sock: socket.socket, remaining: int, send_continue: bool = False):
        self._already = memoryview(already)
        self._sock = sock
        self._remaining = remaining
        # `Expect: 100-continue` is answered when the app first reads the body, so a request refused before
        # that (401, 404) gets its answer without the caller sending the body first.
        self._send_continue = send_continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._already:
            n = min(len(buffer), len(self._already))
            buffer[:n] = self._already[:n]
            self._already = self._already[n:]
            return n
        if self._remaining <= 0:
            return 0
        if self._send_continue:
            self._send_continue = False
            self._sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        view = memoryview(buffer)[: min(len(buffer), self._remaining)]
        n = self._sock.recv_into(view)
        if n == 0:
            raise ConnectionResetError("the caller closed the connection before the body was complete")
        self._remaining -= n
        return n


def _run_on_socket(app, environ, stdin, sock: socket.socket) -> None:
    """Serve one request on a connection grokemu took from waitress: the standard library's wsgiref writes the
    HTTP/1.1 answer; then the connection is closed."""
    try:
        out = sock.makefile("wb", buffering=STREAM_BLOCK)
        handler = SimpleHandler(stdin, out, _LogStream(), environ, multithread=True, multiprocess=False)
        handler.os_environ = {}  # never mix the process environment into the request's (httpoxy)
        handler.origin_server = True
        handler.http_version = "1.1"
        handler.server_software = "grokemu"
        handler.run(app)
        out.flush()
    except OSError:
        pass  # the caller went away, or the watchdog cut it
    except Exception:
        log.exception("request to %s on a taken-over connection failed", environ.get("PATH_INFO"))
    finally:
        _close(sock)


class _LogStream(io.TextIOBase):
    def write(self, text: str) -> int:
        if text.strip():
            log.error("%s", text.rstrip())
        return len(text)


# -- waitress: task, channel, server -------------------------------------------------------------------------------
class GrokemuTask(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        environ["grokemu.listener"] = self.channel.server.grokemu_listener
        return environ


class PlainHttpChannel(HTTPChannel):
    """waitress's channel with these changes:
    - a connection that opens with a TLS handshake is closed at once instead of waiting for an HTTP request line;
    - when a request head with a body is in: `preflight` may refuse it before any of the body is read, and a big
      fetchProxy upload leaves waitress (WebSocketHandoff.stream_request);
    - the time a request head started is kept, for the header timeout (GrokemuServer.maintenance);
    - a worker writing an answer through waitress to a caller that does not read gives up after `stream_timeout`
      (stock waitress waits forever, and never closes a connection with a request in progress).

    The Docker engine tries HTTPS first against every registry, localhost included, and falls back to plain HTTP
    only when that attempt fails (research/registry-protocol.md §1). Stock waitress treats the ClientHello as the
    start of a request line and waits for the rest, so each `docker login`/`push`/`pull` stalls ~10 s until the
    engine gives up. Closing at once makes the fallback immediate."""

    task_class = GrokemuTask
    _first_bytes_seen = False
    _refusing = False  # a refusal is being written; then the connection lingers (see _refuse) and closes
    _linger_until = 0.0
    _drained = 0

    # received() is waitress 3's, plus the head-complete hook and the head start time.
    def received(self, data):
        if not data:
            return False
        if not self._first_bytes_seen:
            self._first_bytes_seen = True
            if data[:1] == b"\x16":  # TLS record type 22: handshake
                self.will_close = True
                return False
        with self.requests_lock:
            if self.will_close or self.close_when_flushed or self._refusing:
                return False
            while data:
                if self.request is None:
                    self.request = self.parser_class(self.adj)
                    self.request.grokemu_started = time.time()
                request = self.request
                in_head = not request.headers_finished
                n = request.received(data)
                if in_head and request.headers_finished and not request.completed:
                    # the head is in and a body follows, none of it parsed yet
                    if self._body_follows(request, data[n:]):
                        return False
                if (request.expect_continue and request.headers_finished and not self.requests
                        and not self.sent_continue):
                    self.send_continue()
                if request.completed:
                    self.sent_continue = False
                    if not request.empty:
                        self.requests.append(request)
                        if len(self.requests) == 1:
                            self.server.add_task(self)
                    self.request = None
                if n >= len(data):
                    break
                data = data[n:]
        return True

    def _body_follows(self, request, rest: bytes) -> bool:
        """True when this connection is done with: the request was refused or taken over."""
        preflight = self.server.grokemu_preflight
        if preflight is not None:
            try:
                refusal = preflight(GrokemuTask(self, request).get_environment())
            except Exception:
                log.exception("preflight failed for %s %s", request.command, request.path)
                refusal = ("500 Internal Server Error", [("Content-Type", "application/json")],
                           b'{"#type":"ApiError","message":"grokemu could not check this request"}')
            if refusal is not None:
                self.request = None
                request.close()
                if self.requests or self.total_outbufs_len:
                    self.will_close = True  # an answer to a pipelined request is pending: no room to say more
                else:
                    self._refuse(*refusal)
                return True
        if (not request.chunked and request.content_length >= STREAM_BODIES_FROM
                and request.path.startswith(STREAMED_PREFIX) and not self.requests and not self.total_outbufs_len):
            # a big fetchProxy upload with nothing else pending on this connection: relay it as it arrives
            return self.server.grokemu_handoff.stream_request(self, request, rest[:request.content_length])
        return False

    # -- refusals: an answer, then Connection: close ------------------------------------------------------------
    def _refuse(self, status: str, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Write a refusal and close, without reading the body. Closing a socket with unread bytes makes the
        kernel send a reset, which can destroy the answer before the caller reads it; so, as nginx's lingering
        close, the write side is shut after the answer and what still arrives is dropped (never stored) for
        REFUSAL_LINGER seconds or REFUSAL_DRAIN bytes, whichever comes first, then the connection is closed."""
        self._refusing = True
        self._write_raw(_raw_answer(status, headers, body))

    def _write_raw(self, data: bytes) -> None:
        with self.outbuf_lock:
            self.outbufs[-1].append(data)
            self.current_outbuf_count += len(data)
            self.total_outbufs_len += len(data)

    def refuse_queued(self, status: str, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Answer the complete request at the head of `requests` (not yet served) and close after it. Called with
        requests_lock held (waitress holds it around add_task)."""
        for request in self.requests:
            request.close()
        self.requests = []
        self._write_raw(_raw_answer(status, headers, body))
        self.close_when_flushed = True
        self.server.pull_trigger()

    def readable(self):
        if self._refusing:
            return bool(self._linger_until) and not self.will_close
        return super().readable()

    def writable(self):
        if self._refusing:
            return bool(self.total_outbufs_len) or self.will_close
        return super().writable()

    def handle_write(self):
        if not self._refusing:
            return super().handle_write()
        if self.total_outbufs_len and not self.will_close:
            self._flush_exception(self._flush_some)
        if not self.total_outbufs_len and not self._linger_until and not self.will_close:
            try:
                self.socket.shutdown(socket.SHUT_WR)
                self._linger_until = time.time() + REFUSAL_LINGER
            except OSError:
                self.will_close = True
        if self.will_close:
            self.handle_close()

    def handle_read(self):
        if not self._refusing:
            return super().handle_read()
        try:
            data = self.socket.recv(64 * 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._drained += len(data)
        if not data or self._drained > REFUSAL_DRAIN:
            self.handle_close()

    # -- a worker waiting for a caller that does not read ---------------------------------------------------------
    def _flush_outbufs_below_high_watermark(self):
        # waitress's, with a bounded wait: no progress for stream_timeout closes the connection
        if self.total_outbufs_len > self.adj.outbuf_high_watermark:
            with self.outbuf_lock:
                (_, exception) = self._flush_exception(self._flush_some, do_close=False)
                if exception:
                    self.server.pull_trigger()
                    self.outbuf_lock.wait(1.0)
                    return
                limit = self.server.grokemu_stream_timeout
                while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                    self.server.pull_trigger()
                    self.outbuf_lock.wait(1.0)
                    if self.connected and time.time() - self.last_activity > limit:
                        log.info("closing the connection from %s: it read nothing for %g s", self.addr[0], limit)
                        self.connected = False
                        self.will_close = True
                        self.server.pull_trigger()


def _raw_answer(status: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    skip = {"connection", "content-length", "transfer-encoding", "keep-alive"}
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class GrokemuServer(TcpWSGIServer):
    """A listening socket of waitress's, with the header timeout, eviction at the connection limit, a pause
    instead of a busy loop when descriptors run out, and fetchProxy requests routed to stream threads."""

    channel_class = PlainHttpChannel
    _accept_paused_until = 0.0
    _last_eviction_log = 0.0

    def __init__(self, application, map, sock, dispatcher, adj, *, handoff: WebSocketHandoff, listener: str,
                 preflight: Preflight | None):
        self.grokemu_handoff = handoff
        self.grokemu_listener = listener
        self.grokemu_preflight = preflight
        self.grokemu_header_timeout = handoff.settings.header_timeout
        self.grokemu_stream_timeout = handoff.settings.stream_timeout
        super().__init__(application, map, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def add_task(self, channel):
        request = channel.requests[0]
        if request.error is None and request.path.startswith(STREAMED_PREFIX):
            self.grokemu_handoff.serve_proxied(channel)
        else:
            super().add_task(channel)

    def maintenance(self, now):
        idle_cutoff = now - self.adj.channel_timeout
        head_cutoff = now - self.grokemu_header_timeout
        # a copy: handoffs on other threads remove channels
        for channel in list(self.active_channels.values()):
            if channel.will_close:
                continue
            request = channel.request
            if channel._refusing:
                if (channel._linger_until and now > channel._linger_until) or channel.last_activity < idle_cutoff:
                    channel.will_close = True
            elif not channel.requests and channel.last_activity < idle_cutoff:
                channel.will_close = True
            elif (request is not None and not request.headers_finished and not channel.requests
                  and getattr(request, "grokemu_started", now) < head_cutoff):
                log.info("closing the connection from %s: no complete request head within %g s",
                         channel.addr[0], self.grokemu_header_timeout)
                channel.will_close = True

    def readable(self):
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting or now < self._accept_paused_until:
            return False
        if len(self._map) >= self.adj.connection_limit:
            self._evict(now, len(self._map) - self.adj.connection_limit + 1)
            return False  # accepting again once the evicted connections are closed (next loop)
        return True

    def _evict(self, now: float, wanted: int) -> None:
        """Close the connections idle the longest (nothing being served or written) to make room for new ones:
        idle sockets, however many, never keep a caller out."""
        channels = [c for c in list(self._map.values()) if isinstance(c, PlainHttpChannel)]
        closing = sum(1 for c in channels if c.will_close or c.close_when_flushed or c._refusing)
        wanted -= closing
        if wanted <= 0:
            return
        idle = [c for c in channels if not (c.requests or c.total_outbufs_len or c.will_close
                                            or c.close_when_flushed or c._refusing)]

        def since(c):
            r = c.request
            return getattr(r, "grokemu_started", c.last_activity) if r is not None and not r.headers_finished \
                else c.last_activity

        idle.sort(key=since)
        for channel in idle[:wanted]:
            channel.will_close = True
        if idle and now - self._last_eviction_log > 10:
            self._last_eviction_log = now
            log.warning("%d connections open (connection_limit): closing the ones idle the longest", len(channels))

    def handle_accept(self):
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # out of descriptors: make room, and do not spin on a listening socket that stays readable
                now = time.time()
                self._accept_paused_until = now + 0.5
                self._evict(now, 1 + sum(1 for c in list(self._map.values())
                                         if getattr(c, "will_close", False)))
                if now - self._last_eviction_log > 10:
                    self._last_eviction_log = now
                    log.warning("cannot accept a connection: %s", e)
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)


class _HandedOffFilter(logging.Filter):
    """waitress logs every handed-off WebSocket as 'Client disconnected while serving': expected, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client disconnected while serving")


def bind(host: str, port: int, extra_hosts: list[str]) -> list[socket.socket]:
    """Listening sockets: `host:port` (port 0 picks one), then the same port on each extra address that can be
    bound (e.g. the Docker bridge gateway, so containers reach the API at host.docker.internal)."""
    main = socket.create_server((host, port), reuse_port=False)
    port = main.getsockname()[1]
    sockets = [main]
    for extra in extra_hosts:
        try:
            sockets.append(socket.create_server((extra, port)))
        except OSError as e:
            log.warning("cannot also listen on %s:%d (%s): containers will not reach the API there", extra, port, e)
    return sockets


def _descriptors_for(settings) -> int:
    """The connection limit the process's descriptor limit allows: the soft limit is raised (up to the hard one)
    to fit connection_limit plus two descriptors per WebSocket and stream (caller and container) plus a reserve."""
    others = 2 * settings.max_websockets + 2 * settings.max_streams + FD_RESERVE
    wanted = settings.connection_limit + others
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (ValueError, OSError):
                pass
    except ImportError:  # not on Unix
        return settings.connection_limit
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = max(32, soft - others)
        log.warning("only %d file descriptors: serving at most %d connections (connection_limit %d)", soft, limit,
                    settings.connection_limit)
        return limit
    return settings.connection_limit


def create_server(app, sockets: list[socket.socket], settings=None, *, bridge_addresses: Iterable[str] = (),
                  preflight: Preflight | None = None, threads: int | None = None,
                  max_request_body_size: int | None = None):
    """A waitress server (not yet running) on already-bound sockets. Limits come from `settings` (by default the
    app's); `threads` / `max_request_body_size` override theirs. `preflight` sees each request with a body once its
    head is in; connections on a socket bound to one of `bridge_addresses` are marked `grokemu.listener=bridge`."""
    from dataclasses import replace

    context = app.extensions["grokemu"]
    settings = settings or context.settings
    if threads is not None or max_request_body_size is not None:
        settings = replace(settings, threads=threads or settings.threads,
                           max_request_body_size=max_request_body_size or settings.max_request_body_size)
    logging.getLogger("waitress").addFilter(_HandedOffFilter())
    handoff = WebSocketHandoff(app, settings)
    context.services["websockets"] = handoff
    adj = Adjustments(
        threads=settings.threads, max_request_body_size=settings.max_request_body_size, ident="grokemu",
        asyncore_use_poll=True,  # select() fails past descriptor 1024, and the process with it
        connection_limit=_descriptors_for(settings),
        channel_timeout=max(1, round(settings.channel_timeout)),
        cleanup_interval=1,  # the header and idle timeouts act within a second
        # a `docker push` layer or a big fetchProxy upload spills to disk, not memory
        inbuf_overflow=1024 * 1024,
        # big reads: waitress parses bodies in pure Python, 8 KiB at a time by default
        recv_bytes=256 * 1024,
        # a streamed answer (a fetchProxy download) waits for the client past 1 MiB pending, instead of piling up to
        # 16 MiB per connection and spilling to a temp file at 1 MiB: measured 30+ MB RSS growth per 1 GiB
        # download, 2-6 MB with
        outbuf_high_watermark=1024 * 1024)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    bridge = {str(a) for a in bridge_addresses if a}
    socket_map: dict = {}
    servers = [GrokemuServer(handoff, socket_map, sock, dispatcher, adj, handoff=handoff, preflight=preflight,
                             listener="bridge" if sock.getsockname()[0] in bridge else "main")
               for sock in sockets]
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(socket_map, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher,
                             servers[-1].log_info)


def run_forever(server, on_stop: Callable[[], None]) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop background work and close the listening socket."""

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        on_stop()
        server.close()
