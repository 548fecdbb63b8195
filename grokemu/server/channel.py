"""waitress's task and channel, changed for grokemu: TLS handshakes closed at once, `preflight` before a body is
read, big fetchProxy uploads handed to the takeover, refusals with a lingering close, a bounded wait on callers
that do not read."""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask, WSGITask

from grokemu.domain.errors import GrokemuError, RequestRefused
from grokemu.http1 import raw_answer

log = logging.getLogger("grokemu.server")

STREAM_BODIES_FROM = 1024 * 1024  # smaller bodies are simply buffered by waitress
REFUSAL_LINGER = 2.0  # seconds a refused connection still drains (and drops) what the caller sends, see _refuse
REFUSAL_DRAIN = 1024 * 1024  # ... and at most this many bytes

RawAnswer = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body: web/errors.py render's
Preflight = Callable[[dict], "RawAnswer | None"]


def render_error(server, error: GrokemuError, path: str) -> RawAnswer:
    """`error` as the answer to a request for `path`, by the one error renderer (web/errors.py render, handed to
    the takeover by bootstrap.py's WebHooks)."""
    return server.grokemu_takeover.hooks.render_error(error, path)


def run_preflight(server, environ: dict) -> RawAnswer | None:
    """The server's `preflight` on a request head whose body is not read yet: None to go on, else the refusal to
    write; a preflight that raises refuses with a 500 (the caller is told, the body is not read)."""
    preflight = server.grokemu_preflight
    if preflight is None:
        return None
    try:
        return preflight(environ)
    except Exception:
        log.exception("preflight failed for %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        return render_error(server, GrokemuError("grokemu could not check this request"),
                            environ.get("PATH_INFO") or "")


def parser_refusal(error) -> RequestRefused:
    """waitress's parser error (waitress.utilities.Error: 400, 413, 431, 501) as a domain error, for the renderer."""
    return RequestRefused(error.code, f"{error.reason}: {error.body}" if error.body else error.reason,
                          phrase=error.reason)


class RenderedErrorTask(ErrorTask):
    """waitress's answer to a request its parser refused (a head over max_request_header_size, a malformed line, a
    body over max_request_body_size), rendered as every other error (ApiError JSON, the OCI envelope under /v2)
    instead of waitress's text/plain."""

    def execute(self):
        status, headers, body = render_error(self.channel.server, parser_refusal(self.request.error),
                                             getattr(self.request, "path", "") or "")
        self.status = status
        self.response_headers.extend(h for h in headers if h[0].lower() != "content-length")
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GrokemuTask(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        environ["grokemu.listener"] = self.channel.server.listener_for(self.channel.addr)
        return environ


class GrokemuChannel(HTTPChannel):
    """waitress's channel with these changes:
    - a connection that opens with a TLS handshake is closed at once instead of waiting for an HTTP request line;
    - when a request head with a body is in: `preflight` may refuse it before any of the body is read, and a big
      fetchProxy upload leaves waitress (ConnectionTakeover.stream_request);
    - the time a request head started is kept, for the header timeout (GrokemuServer.maintenance);
    - a worker writing an answer through waitress to a caller that does not read gives up after `stream_timeout`
      (stock waitress waits forever, and never closes a connection with a request in progress).

    The Docker engine tries HTTPS first against every registry, localhost included, and falls back to plain HTTP
    only when that attempt fails (docs/registry.md §1). Stock waitress treats the ClientHello as the
    start of a request line and waits for the rest, so each `docker login`/`push`/`pull` stalls ~10 s until the
    engine gives up. Closing at once makes the fallback immediate."""

    task_class = GrokemuTask
    error_task_class = RenderedErrorTask
    # waitress's channel attributes this class assigns (waitress ships no types)
    request: Any
    requests: list[Any]
    sent_continue: bool
    close_when_flushed: bool
    connected: bool
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
                    if (not request.empty and not self.requests and not self.total_outbufs_len
                            and request.error is None and request.path.startswith(self.server.grokemu_streamed)
                            and self.server.grokemu_takeover.relay(self, request, bytes(data[n:]))):
                        # a fetchProxy request with nothing pending: the connection leaves waitress (server/relay.py)
                        self.request = None
                        return False
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
        refusal = None if self.server.grokemu_preflight is None else \
            run_preflight(self.server, GrokemuTask(self, request).get_environment())
        if refusal is not None:
            self.request = None
            request.close()
            if self.requests or self.total_outbufs_len:
                self.will_close = True  # an answer to a pipelined request is pending: no room to say more
            else:
                self._refuse(*refusal)
            return True
        if (not request.chunked and request.content_length >= STREAM_BODIES_FROM
                and request.path.startswith(self.server.grokemu_streamed) and not self.requests
                and not self.total_outbufs_len):
            # a big fetchProxy upload with nothing else pending on this connection: relay it as it arrives
            return self.server.grokemu_takeover.stream_request(self, request, rest[:request.content_length])
        return False

    # -- refusals: an answer, then Connection: close ------------------------------------------------------------
    def _refuse(self, status: str, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Write a refusal and close, without reading the body. Closing a socket with unread bytes makes the
        kernel send a reset, which can destroy the answer before the caller reads it; so, as nginx's lingering
        close, the write side is shut after the answer and what still arrives is dropped (never stored) for
        REFUSAL_LINGER seconds or REFUSAL_DRAIN bytes, whichever comes first, then the connection is closed."""
        self._refusing = True
        self._write_raw(raw_answer(status, headers, body))

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
        self._write_raw(raw_answer(status, headers, body))
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

