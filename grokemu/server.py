"""waitress serves everything on one port; WebSockets are handed off to their own threads (DESIGN.md decision 2).

Stock waitress cannot serve flask-sock: simple-websocket needs the raw socket, and waitress's event loop owns every
connection. For a request with `Upgrade: websocket` the adapter below takes the connection away from waitress (a
dup of the socket, the original removed from the event loop and closed), puts it in blocking mode, exposes it as
`environ['werkzeug.socket']` and runs the Flask app for that request on a thread of its own. The waitress worker
returns at once, so open WebSockets never hold the worker threads that plain HTTP needs.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Callable

import waitress
from waitress.channel import HTTPChannel

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

    def __call__(self, environ, start_response):
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket" or "waitress.client_disconnected" not in environ:
            return self.app(environ, start_response)
        # waitress gives no public handle on the connection; the bound method it puts in the environ does.
        channel = environ["waitress.client_disconnected"].__self__
        sock = channel.socket.dup()
        sock.setblocking(True)
        channel.del_channel()  # the event loop stops reading and writing this connection
        channel.connected = False  # so the task writes no HTTP response of its own (it ends as 'disconnected')
        channel.socket.close()  # our dup keeps the connection open
        ws_environ = dict(environ)
        ws_environ["werkzeug.socket"] = sock
        threading.Thread(target=self._serve, args=(ws_environ, sock), name="grokemu-websocket", daemon=True).start()
        # waitress insists on a status; with the channel marked disconnected it is never written.
        start_response("101 Switching Protocols", [])
        return []

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


class PlainHttpChannel(HTTPChannel):
    """Closes a connection that opens with a TLS handshake instead of waiting for an HTTP request line.

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
        return super().received(data)


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
