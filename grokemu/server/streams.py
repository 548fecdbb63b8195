"""Serving one request on a connection taken from waitress: the stream threads (StreamPool), a request body read
straight from the socket, and the standard library's wsgiref writing the answer."""
from __future__ import annotations

import io
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import cast
from wsgiref.handlers import SimpleHandler

from grokemu.domain.errors import Busy

log = logging.getLogger("grokemu.server")

STREAM_BLOCK = 1024 * 1024


class StreamPool:
    """At most `limit` streams at once (proxied requests served off the shared workers, relayed uploads), each on a
    thread of its own; threads are reused, and one idle for a minute ends."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self._busy = 0
        self._idle = 0
        self._queue: deque[Callable[[], None]] = deque()
        self._cv = threading.Condition()
        self._parked = 0  # relayed connections between requests (try_park)

    @property
    def busy(self) -> int:
        return self._busy

    def refusal(self) -> Busy:
        """What a request that needs a stream is told when all `limit` are taken (rendered by web/errors.py)."""
        return Busy(f"Too many proxied requests and streams at once ({self.limit}, the max_streams setting): "
                    f"try again later")

    def try_acquire(self) -> bool:
        with self._cv:
            if self._busy >= self.limit:
                return False
            self._busy += 1
            return True

    def release(self) -> None:
        with self._cv:
            self._busy -= 1

    def acquire_unbounded(self) -> None:
        """Take a slot back regardless of the limit (a relay ending without one, so the job's release balances)."""
        with self._cv:
            self._busy += 1

    def try_park(self) -> bool:
        """A relayed keep-alive connection waiting for its next request (server/relay.py) holds no stream slot, but
        one of `limit` parking places; False when they are all taken (the connection is then closed)."""
        with self._cv:
            if self._parked >= self.limit:
                return False
            self._parked += 1
            return True

    def unpark(self) -> None:
        with self._cv:
            self._parked -= 1

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



def close_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class SocketBody(io.RawIOBase):
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


def run_on_socket(app, environ, stdin, sock: socket.socket) -> None:
    """Serve one request on a connection grokemu took from waitress: the standard library's wsgiref writes the
    HTTP/1.1 answer; then the connection is closed."""
    try:
        # a BufferedWriter (typeshed says IOBase for a buffering it cannot see)
        out = cast(io.BufferedWriter, sock.makefile("wb", buffering=STREAM_BLOCK))
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
        close_socket(sock)


class _LogStream(io.TextIOBase):
    def write(self, text: str) -> int:
        if text.strip():
            log.error("%s", text.rstrip())
        return len(text)

