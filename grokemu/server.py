"""waitress serves everything on one port; WebSockets are handed off to their own threads (DESIGN.md decision 2).

Stock waitress cannot serve flask-sock: simple-websocket needs the raw socket, and waitress's event loop owns every
connection. For a request with `Upgrade: websocket` the adapter below takes the connection away from waitress (a
dup of the socket, the original removed from the event loop and closed), puts it in blocking mode, exposes it as
`environ['werkzeug.socket']` and runs the Flask app for that request on a thread of its own. The waitress worker
returns at once, so open WebSockets never hold the worker threads that plain HTTP needs.
"""
from __future__ import annotations

import io
import logging
import signal
import socket
import threading
from typing import Callable
from wsgiref.handlers import SimpleHandler

import waitress
from waitress.channel import HTTPChannel
from waitress.task import WSGITask

log = logging.getLogger(__name__)


class WebSocketHandoff:
    """WSGI middleware: plain HTTP passes through; WebSocket upgrades leave waitress for a thread of their own."""

    def __init__(self, app: Callable):
        self.app = app
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open_websockets(self) -> int:
        return self._open

    @staticmethod
    def _detach(channel: HTTPChannel) -> socket.socket:
        """The connection, taken away from waitress: a blocking dup of its socket; waitress's own copy is removed
        from the event loop and closed, and the channel marked disconnected so its task writes nothing more."""
        sock = channel.socket.dup()
        sock.setblocking(True)
        channel.del_channel()  # the event loop stops reading and writing this connection
        channel.connected = False  # so the task writes no HTTP response of its own (it ends as 'disconnected')
        channel.socket.close()  # our dup keeps the connection open
        return sock

    def __call__(self, environ, start_response):
        if "waitress.client_disconnected" not in environ:
            return self.app(environ, start_response)
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            environ["grokemu.server"] = self  # lets a view answer a big download on the socket itself
            return self.app(environ, start_response)
        # waitress gives no public handle on the connection; the bound method it puts in the environ does.
        sock = self._detach(environ["waitress.client_disconnected"].__self__)
        ws_environ = dict(environ)
        ws_environ["werkzeug.socket"] = sock
        threading.Thread(target=self._serve, args=(ws_environ, sock), name="grokemu-websocket", daemon=True).start()
        # waitress insists on a status; with the channel marked disconnected it is never written.
        start_response("101 Switching Protocols", [])
        return []

    def stream_request(self, channel: HTTPChannel, request) -> None:
        """Take over a connection whose big fixed-length body is still arriving (a fetchProxy upload).

        waitress calls the app only once the whole body is in (spooled to a file), so receiving and forwarding would
        run one after the other. Instead, the connection leaves waitress as soon as the headers are in, and the
        app runs on its own thread reading the body straight from the socket while it forwards it; the standard
        library's wsgiref writes the answer. The connection closes after that one exchange."""
        environ = WSGITask(channel, request).get_environment()
        already = request.body_rcv.buf.get()  # what arrived with the headers
        send_continue = request.expect_continue and not channel.sent_continue
        sock = self._detach(channel)
        channel.request = None
        # the server's whole WSGI chain (waitress's proxy-header cleaning, then this middleware, then Flask)
        app = channel.server.application
        threading.Thread(target=self._serve_streamed, args=(app, environ, sock, already, send_continue),
                         name="grokemu-upload", daemon=True).start()

    def _serve_streamed(self, app, environ, sock: socket.socket, already: bytes, send_continue: bool) -> None:
        length = int(environ["CONTENT_LENGTH"])
        body = io.BufferedReader(_SocketBody(already, sock, length - len(already), send_continue), STREAM_BLOCK)
        environ["wsgi.input"] = body
        environ["wsgi.input_terminated"] = True
        environ.pop("waitress.client_disconnected", None)  # this connection is not waitress's any more
        _run_on_socket(app, environ, body, sock)

    @staticmethod
    def can_answer_directly(environ) -> bool:
        """Only when no pipelined request waits behind this one: the connection closes after a direct answer."""
        disconnected = environ.get("waitress.client_disconnected")
        return disconnected is not None and len(disconnected.__self__.requests) <= 1

    def answer_directly(self, environ, status: str, headers: list[tuple[str, str]], body) -> None:
        """Write a big streamed answer straight to the caller's socket from the calling (worker) thread, instead of
        through waitress's output buffers and event loop, then close the connection. The caller returns an empty
        body to waitress afterwards."""
        sock = self._detach(environ["waitress.client_disconnected"].__self__)

        def answer(env, start_response):
            start_response(status, headers)
            return body

        _run_on_socket(answer, dict(environ), io.BytesIO(), sock)

    def _serve(self, environ, sock: socket.socket) -> None:
        with self._lock:
            self._open += 1
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
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


STREAM_BLOCK = 1024 * 1024
STREAMED_PREFIX = "/api/docker/containers/proxy/"  # fetchProxy uploads: relayed while they arrive
STREAM_BODIES_FROM = 1024 * 1024  # smaller bodies are simply buffered by waitress


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
        pass  # the caller went away
    except Exception:
        log.exception("request to %s on a taken-over connection failed", environ.get("PATH_INFO"))
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


class _LogStream(io.TextIOBase):
    def write(self, text: str) -> int:
        if text.strip():
            log.error("%s", text.rstrip())
        return len(text)


class PlainHttpChannel(HTTPChannel):
    """waitress's channel with two changes: big fetchProxy uploads leave waitress once their headers are in
    (WebSocketHandoff.stream_request), and a connection that opens with a TLS handshake is closed at once instead of
    waiting for an HTTP request line.

    The Docker engine tries HTTPS first against every registry, localhost included, and falls back to plain HTTP
    only when that attempt fails (research/registry-protocol.md §1). Stock waitress treats the ClientHello as the
    start of a request line and waits for the rest, so each `docker login`/`push`/`pull` stalls ~10 s until the
    engine gives up. Closing at once makes the fallback immediate."""

    _first_bytes_seen = False

    def received(self, data):
        if not self._first_bytes_seen and data:
            self._first_bytes_seen = True
            if data[:1] == b"\x16":  # TLS record type 22: handshake
                self.will_close = True
                return False
        result = super().received(data)
        request = self.request
        if (request is not None and request.headers_finished and not request.completed and not request.chunked
                and request.content_length >= STREAM_BODIES_FROM and request.path.startswith(STREAMED_PREFIX)
                and not self.requests and not self.total_outbufs_len):
            # a big fetchProxy upload with nothing else pending on this connection: relay it as it arrives
            self.server.grokemu_handoff.stream_request(self, request)
            return False
        return result


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


def create_server(app, sockets: list[socket.socket], threads: int, max_request_body_size: int):
    """A waitress server (not yet running) on already-bound sockets."""
    logging.getLogger("waitress").addFilter(_HandedOffFilter())
    handoff = WebSocketHandoff(app)
    app.extensions["grokemu"].services["websockets"] = handoff
    server = waitress.create_server(handoff, sockets=sockets, threads=threads,
                                    max_request_body_size=max_request_body_size, ident="grokemu",
                                    # a `docker push` layer or a big fetchProxy upload spills to disk, not memory
                                    inbuf_overflow=1024 * 1024, channel_timeout=300,
                                    # big reads: waitress parses bodies in pure Python, 8 KiB at a time by default
                                    recv_bytes=256 * 1024,
                                    # a streamed answer (a fetchProxy download) waits for the client past 1 MiB
                                    # pending, instead of piling up to 16 MiB per connection and spilling to a
                                    # temp file at 1 MiB: measured 30+ MB RSS growth per 1 GiB download, 2-6 MB with
                                    outbuf_high_watermark=1024 * 1024)
    # Every listening socket gets the TLS-rejecting channel (a MultiSocketServer keeps them in `map`).
    socket_map = getattr(server, "map", None) or getattr(server, "_map", {})
    for dispatcher in list(socket_map.values()):
        if hasattr(dispatcher, "channel_class"):
            dispatcher.channel_class = PlainHttpChannel
            dispatcher.grokemu_handoff = handoff
    return server


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
