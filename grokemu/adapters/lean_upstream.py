"""Body-less requests to plugin containers over kept-alive raw sockets (docs/design.md decision 2), the small-GET hot
path of adapters/http_upstream.py's HttpUpstreamPools.

urllib3 + http.client (its email-parser header parsing) cost half of grokemu's CPU per small proxied GET. A request
without a body is sent as one head, built once (upstream_headers.bodyless_request_head), on a socket kept alive per
container; the answer's head is parsed here, and its body passed on as it is (Content-Length, chunked or up to the
container's close). Same rules as the urllib3 path: the same forwarded headers, one retry of an idempotent request
on a kept-alive socket the container closed meanwhile (http1.retry_on_stale), the same errors (refused, read
timeout, broken answer).
"""
from __future__ import annotations

import logging
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator

from grokemu.adapters.upstream_headers import bodyless_request_head, response_headers
from grokemu.domain.errors import GatewayTimeout
from grokemu.domain.model import DockerContainer
from grokemu.domain.upstream import Forwarded, UpstreamFailed, UpstreamRefused
from grokemu.http1 import MAX_ANSWER_HEAD, ChunkedDecoder, parse_response_head, response_framing, retry_on_stale

log = logging.getLogger(__name__)

SMALL_BODY = 256 * 1024  # answers up to this size are read at once; bigger or unsized ones are streamed
STREAM_CHUNK = 1024 * 1024
UPSTREAM_RECV = 65536  # bytes asked of a container's socket for an answer's head and small body


class _Broken(Exception):
    """The socket failed (or was closed) after `answered` bytes of the answer: the one case http1.retry_on_stale
    judges."""

    def __init__(self, answered: int, cause: OSError):
        super().__init__(str(cause))
        self.answered = answered


class LeanPool:
    """Kept-alive sockets to one container address, and the body-less exchanges on them. It is the container's one
    pool (domain/upstream.py KeptAliveSockets): the server's relay loop takes its sockets from it and gives them back
    too, so a socket the blocking relay opened serves the loop's next request, and both kinds count towards one bound.

    Two kinds of idle socket, one rule for both (an idle socket that turns readable, EOF or bytes nobody asked for,
    is dead): a *loose* one nobody watches is polled when it is taken; a *watched* one stays registered with the
    relay loop while it rests here, so the loop sees the container close it, and taking it back costs the loop no
    system call. Only the loop takes watched sockets (its selector owns them); the blocking relay takes loose ones
    and opens a fresh socket when there is none. Part two of the rule, for a socket the container closes while a
    request is under way, is http1.retry_on_stale."""

    def __init__(self, key: tuple[str, int], size: int, timeout: float):
        self.key = key
        self._size = size
        self._timeout = timeout
        self._idle: deque[socket.socket] = deque()  # loose, newest last
        self._watched: dict[socket.socket, object] = {}  # socket -> its watcher's record, newest last
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> socket.socket | None:
        """The newest loose idle socket that still looks alive, or None."""
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                return None
            try:
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                readable = bool(poller.poll(0))
            except (OSError, ValueError):
                readable = True
            if not readable:
                return sock
            self._drop(sock)

    def take_watched(self) -> tuple[socket.socket, object] | None:
        """For the relay loop: the newest watched idle socket with the record it gave it back with, or None. The
        loop has removed every one it saw turn readable (`discard`), so this one is alive as far as anyone knows."""
        with self._lock:
            return self._watched.popitem() if self._watched else None

    def _drop(self, sock: socket.socket) -> None:
        log.debug("closed a kept-alive socket to %s:%s that the container closed while it was idle", *self.key)
        sock.close()

    def give(self, sock: socket.socket) -> None:
        """A loose socket whose exchange ended cleanly, back for the next request; closed when the pool is full or
        closed (the container moved to another port, or was forgotten)."""
        with self._lock:
            if not self._closed and len(self._idle) + len(self._watched) < self._size:
                self._idle.append(sock)
                return
        sock.close()

    def give_watched(self, sock: socket.socket, watcher: object) -> bool:
        """The relay loop's socket back, still registered with the loop; False: not kept (full or closed), and the
        loop closes it itself (only it can unregister it)."""
        with self._lock:
            if not self._closed and len(self._idle) + len(self._watched) < self._size:
                self._watched[sock] = watcher
                return True
        return False

    def discard(self, sock: socket.socket) -> None:
        """The relay loop saw a watched idle socket turn readable (the container closed it): no longer offered. The
        loop closes it."""
        with self._lock:
            self._watched.pop(sock, None)

    def close(self) -> None:
        """Close the idle sockets. A watched one is shut down rather than closed: the loop sees its EOF and closes it
        (a socket closed under the loop's selector would leave a stale registration)."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
            watched, self._watched = list(self._watched), {}
        for sock in idle:
            sock.close()
        for sock in watched:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _get(self) -> tuple[socket.socket, bool]:
        sock = self.take()  # loose sockets are the blocking relay's own: they keep their timeout
        if sock is not None:
            return sock, True
        sock = socket.create_connection(self.key, timeout=5.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._timeout)
        return sock, False

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
            except TimeoutError:
                sock.close()
                raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                     f"{self._timeout:g} s") from None
            except _Broken as e:
                sock.close()
                if not attempt and retry_on_stale(method, reused, e.answered):
                    continue
                raise UpstreamFailed(f"Container {c.name} did not answer on {self.key[0]}:{self.key[1]}: "
                                     f"{e}") from None
        raise AssertionError("unreachable")

    def _exchange(self, sock: socket.socket, reused: bool, method: str, head: bytes,
                  release: Callable[[], None]) -> Forwarded:
        answered = 0
        try:
            sock.sendall(head)
            buf = b""
            while True:  # skip 1xx informational answers (103 Early Hints)
                end = -1
                while end < 0:
                    data = sock.recv(UPSTREAM_RECV)
                    if not data:
                        if not answered and reused:
                            raise ConnectionError("the connection was closed")
                        raise ConnectionError("the container closed the connection mid-answer")
                    answered += len(data)
                    buf += data
                    end = buf.find(b"\r\n\r\n")
                    if end < 0 and len(buf) > MAX_ANSWER_HEAD:
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
                    data = sock.recv(max(UPSTREAM_RECV, length - len(buf)))
                    if not data:
                        raise ConnectionError("the container closed the connection mid-answer")
                    buf += data
                self._done(sock, keep and len(buf) == length)
                release()
                return Forwarded(status, reason, headers, [buf] if length else [])
            return Forwarded(status, reason, headers, _LeanBody(self, sock, buf, length, False, keep, release))
        except TimeoutError:
            raise
        except OSError as e:
            raise _Broken(answered, e) from None

    def _done(self, sock: socket.socket, reuse: bool) -> None:
        if reuse:
            self.give(sock)
        else:
            sock.close()


class _LeanBody:
    """A big, chunked or unsized answer read from the container's socket as the caller takes it; close() gives the
    socket back for reuse only when the body was read to its end, then calls `release`."""

    def __init__(self, pool: LeanPool, sock: socket.socket, buf: bytes, length: int | None, chunked: bool,
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
        self._chunks = ChunkedDecoder() if chunked else None
        self._extra = False

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
            return self._next_chunk()
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

    def _next_chunk(self) -> bytes:
        """The data of the chunks in the next bytes from the container (several chunks, or part of one)."""
        decoder = self._chunks
        assert decoder is not None  # a chunked body
        while True:
            if self._buf:
                data, self._buf = self._buf, b""
            else:
                data = self._recv()
                if not data:
                    self.close()
                    raise ConnectionError("the container closed the connection mid-chunk")
            pieces: list[bytes] = []
            try:
                end = decoder.feed(data, pieces)
            except ValueError as e:
                self.close()
                raise ConnectionError(f"the container's chunked answer is broken: {e}") from None
            if end >= 0:
                self._done = True
                self._extra = end < len(data)  # bytes after the body: the socket cannot be reused
            if pieces:
                return b"".join(pieces)
            if self._done:
                raise StopIteration

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._pool._done(self._sock, self._done and self._keep and not self._buf and not self._extra)
        finally:
            self._release()
