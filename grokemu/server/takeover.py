"""ConnectionTakeover: the WSGI middleware that takes connections away from waitress. WebSocket upgrades go to a
thread of their own; big fetchProxy uploads are relayed as they arrive; big answers are written on the socket
by the stream thread that produced them (docs/design.md decision 2)."""
from __future__ import annotations

import io
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from waitress.channel import HTTPChannel

from grokemu.config import Settings
from grokemu.domain.errors import Busy, GrokemuError
from grokemu.domain.upstream import FastForward
from grokemu.server.channel import GrokemuTask, RawAnswer
from grokemu.server.relay import Relay
from grokemu.server.relay_loop import RelayLoop
from grokemu.server.streams import STREAM_BLOCK, SocketBody, StreamPool, close_socket, run_on_socket
from grokemu.server.watchdog import TrackedSocket

log = logging.getLogger("grokemu.server")

class FastPath(Protocol):
    """fetchProxy without Flask on relayed connections (web/fast_proxy.py FastProxy)."""

    PREFIX: str

    def plan(self, environ: dict) -> FastForward | None: ...

    def handle(self, environ: dict) -> tuple[str, list[tuple[str, str]], Iterable[bytes]] | None: ...


class Gauges(Protocol):
    """Where the server reports the numbers the app shows (the signed-in health): web/context.py Gauges."""

    def add(self, name: str, read: Callable[[], object]) -> None: ...


@dataclass(frozen=True)
class WebHooks:
    """What the server calls of the web layer, handed in by the composition root (bootstrap.py), so the server
    imports no view, renderer or route: every error answer the server writes itself, rendered in the one place
    (web/errors.py render: a domain error and the request's path to status line, headers, body), WebSocket
    refusals as the views refuse (web/websocket.py reject_websocket: a close code and reason from a domain error),
    the environ key a view finds the takeover under (web/takeover.py), and the fetchProxy fast path (None: no
    relay loop)."""

    render_error: Callable[[GrokemuError, str], RawAnswer]
    reject_websocket: Callable[[dict, socket.socket, GrokemuError], None]
    takeover_key: str
    fast_path: FastPath | None = None


class ConnectionTakeover:
    """WSGI middleware that takes connections away from waitress: WebSocket upgrades leave for a thread of their
    own, big uploads to a `streamed_prefixes` route are relayed as they arrive (stream_request), complete requests
    to those routes run on stream threads (serve_proxied), and a view may write a big answer on the socket itself
    (answer_directly, through web/takeover.py's DirectAnswers) or have a stream thread write a long-lived one
    (answer_on_stream: a followed log). Plain HTTP passes through."""

    def __init__(self, app: Callable, settings: Settings | None, hooks: WebHooks,
                 streamed_prefixes: tuple[str, ...] = (), gauges: Gauges | None = None):
        self.app = app
        self.settings = settings or Settings()
        self.hooks = hooks
        self.streamed_prefixes = tuple(streamed_prefixes)
        self.streams = StreamPool(self.settings.max_streams)
        # the relay loop for keep-alive fetchProxy connections (server/relay_loop.py), when there is a fast path
        fast = hooks.fast_path if self.streamed_prefixes else None
        self.loop: RelayLoop | None = None if fast is None else \
            RelayLoop(self, fast.plan, hooks.render_error, fast.handle, fast.PREFIX)
        self._open = 0
        self._lock = threading.Lock()
        self._refusals = threading.BoundedSemaphore(32)  # WebSocket refusals being written at once
        if gauges is not None:
            gauges.add("openWebSockets", lambda: self.open_websockets)
            if self.loop is not None:
                gauges.add("relay", self.loop.stats)

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
            environ[self.hooks.takeover_key] = self  # lets a view answer a big download on the socket itself
            return self.app(environ, start_response)
        # waitress gives no public handle on the connection; the bound method it puts in the environ does.
        channel = environ["waitress.client_disconnected"].__self__
        sock = self._detach(channel, self.settings.websocket_idle_timeout,
                            f"WebSocket {environ.get('PATH_INFO')} from {environ.get('REMOTE_ADDR')}")
        self.start_websocket(environ, sock)
        # waitress insists on a status; with the channel marked disconnected it is never written.
        start_response("101 Switching Protocols", [])
        return []

    def start_websocket(self, environ, sock: TrackedSocket) -> None:
        """Serve a WebSocket upgrade on a connection taken from waitress (or from a relay), on a thread of its own;
        over `max_websockets`, accepted and closed with a reason."""
        sock.watch_timeout = self.settings.websocket_idle_timeout
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
            close_socket(sock)

    def _refuse_websocket(self, environ, sock: TrackedSocket) -> None:
        """Over `max_websockets`: accepted, then closed at once with 4503 and a reason (as web/proxy.py rejects), so
        the JS client says `Could not open WebSocket connection: <reason>`."""
        try:
            sock.settimeout(2.0)
            self.hooks.reject_websocket(environ, sock, Busy(
                f"Too many open WebSockets ({self.settings.max_websockets}, the max_websockets setting): close one "
                f"or try again later"))
        except OSError:
            pass
        finally:
            close_socket(sock)
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
        body = io.BufferedReader(SocketBody(already, sock, length - len(already), send_continue), STREAM_BLOCK)
        environ["wsgi.input"] = body
        environ["wsgi.input_terminated"] = True
        environ.pop("waitress.client_disconnected", None)  # this connection is not waitress's any more
        run_on_socket(app, environ, body, sock)

    def relay(self, channel: HTTPChannel, request, rest: bytes) -> bool:
        """A complete fetchProxy request on a connection with nothing else pending: the connection leaves waitress,
        this request is served on a stream thread (server/relay.py), and the connection then lives in the relay
        loop (server/relay_loop.py). False when no stream slot is free or there is no loop (waitress goes on as
        usual)."""
        if self.loop is None or not self.streams.try_acquire():
            return False
        sock = self._detach(channel, self.settings.stream_timeout,
                            f"relayed connection from {channel.addr[0]}")
        relay = Relay(self, channel, sock, self.loop.slow_path, self.loop)
        self.streams.run(lambda: relay.run(request, rest))
        return True

    def serve_proxied(self, channel: HTTPChannel) -> None:
        """A complete fetchProxy request: served on a stream thread, so waiting for a container or for a caller
        that reads slowly never holds a shared worker; over `max_streams`, 503 at once."""
        if self.streams.try_acquire():
            self.streams.run(channel.service)
            return
        request = channel.requests[0]
        log.warning("refusing %s %s: %d streams open (max_streams)", request.command, request.path,
                    self.streams.limit)
        channel.refuse_queued(*self.hooks.render_error(self.streams.refusal(), request.path))

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

        def answer(_env, start_response):
            start_response(status, headers)
            return body

        run_on_socket(answer, dict(environ), io.BytesIO(), sock)

    def answer_on_stream(self, environ, status: str, headers: list[tuple[str, str]], body) -> bool:
        """Like answer_directly, but the answer is written by a stream thread (one of `max_streams`), so a waitress
        worker is not held for as long as it lasts (a followed log: until the container stops or the caller leaves).
        Each chunk is flushed as it comes (waitress would hold small writes until 18000 bytes are pending); an empty
        chunk is the body's "nothing new", on which a caller that has closed its end stops the answer. The body has
        no length: it ends when the connection closes."""
        if not self.streams.try_acquire():
            return False
        sock = self._detach(environ["waitress.client_disconnected"].__self__, self.settings.stream_timeout,
                            f"stream to {environ.get('PATH_INFO')} for {environ.get('REMOTE_ADDR')}")

        def answer(_env, start_response):
            start_response(status, headers)
            return _until_caller_leaves(body, sock)

        environ = dict(environ)
        environ.pop("waitress.client_disconnected", None)  # this connection is not waitress's any more
        self.streams.run(lambda: run_on_socket(answer, environ, io.BytesIO(), sock))
        return True

    def _serve(self, environ, sock: socket.socket) -> None:
        try:
            result = self.app(environ, lambda _status, _headers, _exc_info=None: (lambda _data: None))
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
            close_socket(sock)


def _until_caller_leaves(body, sock: socket.socket):
    """`body`'s chunks, until it ends or, at one of its empty chunks, the caller has closed the connection."""
    try:
        for chunk in body:
            if not chunk and _caller_left(sock):
                return
            yield chunk
    finally:
        close = getattr(body, "close", None)
        if close:
            close()


def _caller_left(sock: socket.socket) -> bool:
    """True when the caller has closed its end (or the connection is broken); bytes it sent are left unread."""
    try:
        return socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
