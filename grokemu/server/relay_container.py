"""The relay loop's container side (server/relay_loop.py): a relayed request sent on a kept-alive or fresh socket to
the container, its answer head re-written for the caller (relay_answer.py) and its body passed on as it comes, the
socket kept for the next request or closed, and grokemu's own error answer when the container fails it."""
from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable

from grokemu.domain.errors import DockerUnavailable, GatewayTimeout, GrokemuError
from grokemu.domain.upstream import KeptAliveSockets, UpstreamFailed
from grokemu.http1 import MAX_ANSWER_HEAD, RECV, ChunkedDecoder, retry_on_stale
from grokemu.server.channel import raw_answer
from grokemu.server.relay import http_date
from grokemu.server.relay_answer import CHUNKED, CLOSE, LENGTH, NONE, _caller_head, _CallerHead
from grokemu.server.relay_caller import _CallerSide
from grokemu.server.relay_state import (
    _READ,
    _WRITE,
    ANSWERING,
    CONNECTING,
    EXPLAINING,
    FINISHED,
    HOLD_HEAD_FOR,
    WAITING,
    _Exchange,
    _move,
    _Upstream,
)

log = logging.getLogger("grokemu.server")

_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY)


class _ContainerSide(_CallerSide):
    """The container's half of RelayLoop."""

    def _connect(self, ex: _Exchange) -> None:
        pool = ex.plan.pool  # the container's one pool, shared with the blocking relay (adapters/lean_upstream.py)
        kept = None if pool is None or ex.retried else self._take_kept(pool)  # a retry never takes a kept one
        if kept is not None:
            kept.exchange, ex.up, ex.reused = ex, kept, True
            self._send_request(ex)
            return
        family = socket.AF_INET6 if ":" in ex.plan.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(ex.plan.address)
        if err and err not in _IN_PROGRESS:
            sock.close()
            self._refused(ex)
            return
        up = _Upstream(sock, pool)
        up.exchange, ex.up, ex.reused = ex, up, False
        if err:
            _move(ex, CONNECTING)
            self._upstream_events(up, _WRITE)
        else:
            self._upstream_events(up, _READ)
            self._send_request(ex)

    @staticmethod
    def _take_kept(pool: KeptAliveSockets) -> _Upstream | None:
        """A kept-alive socket from the container's pool: first one the loop gave back (still registered, no system
        call), else one the blocking relay gave back (checked alive by the pool); None: there is none."""
        watched = pool.take_watched()
        if watched is not None:
            up = watched[1]
            assert isinstance(up, _Upstream)  # the loop gives its sockets back with their records
            return up
        loose = pool.take()
        if loose is None:
            return None
        loose.setblocking(False)
        return _Upstream(loose, pool)

    def _upstream_events(self, up: _Upstream, events: int) -> None:
        if events == up.events:
            return
        if up.events and events:
            self._selector.modify(up.sock, events, (self._upstream_event, up))
        elif events:
            self._selector.register(up.sock, events, (self._upstream_event, up))
        else:
            self._selector.unregister(up.sock)
        up.events = events

    def _set_upstream_reading(self, ex: _Exchange, reading: bool) -> None:
        up = ex.up
        if up is None or ex.state is CONNECTING:
            return
        self._upstream_events(up, (_READ if reading else 0) | (_WRITE if ex.unsent else 0))

    def _send_request(self, ex: _Exchange) -> None:
        data = ex.unsent or ex.plan.head
        up = ex.up
        assert up is not None  # a request is sent on the exchange's upstream
        try:
            sent = up.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._upstream_broke(ex)
            return
        ex.unsent = data[sent:]
        ex.since = time.monotonic()
        self._upstream_events(up, _READ | (_WRITE if ex.unsent else 0))

    def _upstream_event(self, up: _Upstream, mask: int) -> None:
        ex = up.exchange
        if ex is None:  # a watched idle socket turned readable: the container closed it (or its pool was closed)
            self._discard_idle(up)
            return
        if ex.state is CONNECTING:
            err = up.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._drop_upstream(ex)
                self._refused(ex)
                return
            _move(ex, WAITING)
            self._send_request(ex)
            return
        if mask & _WRITE and ex.unsent:
            self._send_request(ex)
        if mask & _READ and ex.state is not FINISHED:
            try:
                data = up.sock.recv(RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            ex.since = time.monotonic()
            if data:
                self._answer(ex, data)
            else:
                self._upstream_eof(ex)

    def _refused(self, ex: _Exchange) -> None:
        """Nothing was sent: the container is gone from its port (stopped meanwhile). The request goes back to
        the front of the caller's buffer and takes the full way, which looks at the container again."""
        c = ex.client
        ex.plan.refused()
        if ex.plan.recording is not None:
            ex.plan.recording.discard()  # the full way records it
        self._end(ex, reusable=False)
        c.buf = ex.head + c.buf
        self._hand_off(c)

    def _upstream_broke(self, ex: _Exchange) -> None:
        """The upstream socket failed before any byte of the answer: a kept-alive one the container closed while
        it sat in the pool is replaced once for an idempotent request; otherwise 502."""
        if not ex.retried and retry_on_stale(ex.plan.method, ex.reused, len(ex.rbuf)):
            self._drop_upstream(ex)
            ex.retried = True
            ex.unsent = b""
            self._connect(ex)
            return
        error = UpstreamFailed(f"Container {ex.plan.name} did not answer on {ex.plan.address[0]}:"
                               f"{ex.plan.address[1]}: the connection was closed")
        if ex.plan.explain is None:
            self._fail(ex, error)
            return
        # did the container end under it (out of memory, a signal)? Asking the daemon blocks: on a thread of its
        # own, the answer comes back through _woken; the sweep's proxy_request_timeout still bounds the exchange
        self._drop_upstream(ex)
        _move(ex, EXPLAINING)
        threading.Thread(target=self._explain, args=(ex, ex.plan.explain, error), name="grokemu-relay-explain",
                         daemon=True).start()

    def _explain(self, ex: _Exchange, explain: Callable[[], str | None], error: GrokemuError) -> None:
        try:
            reason = explain()
        except DockerUnavailable as gone:  # the daemon is gone: 503, as services/proxy.py `_explained` answers
            reason = None
            error = DockerUnavailable(f"Container {ex.plan.name} did not answer: {gone.message}", error.message)
        except Exception:
            log.exception("explaining a broken relayed request failed")
            reason = None
        if reason:
            error = UpstreamFailed(f"Container {ex.plan.name} did not answer: {reason}", error.message)
        with self._lock:
            self._explained.append((ex, error))
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # a wake-up is pending already, or the loop is closed

    def _upstream_eof(self, ex: _Exchange) -> None:
        if ex.state is not ANSWERING:
            self._upstream_broke(ex)
        elif ex.framing is CLOSE:
            self._emit(ex, b"0\r\n\r\n")
            self._complete(ex, reusable=False)
        else:  # the answer broke off: only closing tells the caller
            c = ex.client
            self._end(ex, reusable=False)
            self._close_when_written(c)

    def _answer(self, ex: _Exchange, data: bytes) -> None:
        if ex.state is not ANSWERING:
            ex.rbuf += data
            while True:
                end = ex.rbuf.find(b"\r\n\r\n")
                if end < 0:
                    if len(ex.rbuf) > MAX_ANSWER_HEAD:
                        self._fail(ex, UpstreamFailed(f"Container {ex.plan.name} sent an answer head over "
                                                      f"{MAX_ANSWER_HEAD} bytes"))
                    return
                try:
                    answer = self._cached_caller_head(ex.rbuf[:end], ex.plan.method == "HEAD", ex.keep)
                except (ConnectionError, ValueError) as e:
                    self._fail(ex, UpstreamFailed(f"Container {ex.plan.name} answered with no HTTP: {e}"))
                    return
                rest = ex.rbuf[end + 4:]
                if answer.informational:  # 1xx informational answers (103 Early Hints) are skipped
                    if answer.status == 101:
                        self._fail(ex, UpstreamFailed(f"Container {ex.plan.name} switched protocols unasked"))
                        return
                    ex.rbuf = rest
                    continue
                break
            ex.rbuf = b""
            ex.status, ex.framing, ex.remaining = answer.status, answer.framing, answer.length
            ex.up_keep = answer.keep_up
            rec = ex.plan.recording
            if rec is not None:
                meta = answer.recorded
                if meta is None:  # once per shaped head: the inspector's redaction of its headers
                    meta = answer.recorded = rec.response_meta(answer.headers, answer.framing is CHUNKED)
                rec.answered(answer.status, meta)
            _move(ex, ANSWERING)
            ex.head_out = answer.head  # sent with the first body bytes
            if answer.framing is CHUNKED:
                ex.chunks = ChunkedDecoder()
            elif answer.framing is NONE:
                self._emit(ex, b"")
                self._complete(ex, reusable=answer.keep_up and not rest)
                return
            data = rest
            if not data:
                if ex.framing is LENGTH and ex.remaining == 0:
                    self._emit(ex, b"")
                    self._complete(ex, reusable=ex.up_keep)
                elif not (ex.framing is LENGTH and ex.remaining <= HOLD_HEAD_FOR):
                    self._emit(ex, b"")  # the head now, the body as it comes
                # else a small body follows at once (an app that writes head and body apart): one write for both
                return
        self._answer_body(ex, data)

    def _cached_caller_head(self, raw_head: bytes, head_method: bool, keep: bool) -> _CallerHead:
        """The container's answer head as the caller gets it, and its framing. A container repeats its heads byte
        for byte (but for Date and sizes), so the result is kept for the same head, method, keep-alive and second
        (the Date grokemu adds when the container sends none)."""
        date = http_date()
        key = (raw_head, head_method, keep, date)
        answer = self._caller_heads.get(key)
        if answer is None:
            answer = _caller_head(raw_head, head_method, keep, date)
            if len(self._caller_heads) >= 256:  # bounded: sizes and dates change
                self._caller_heads.clear()
            self._caller_heads[key] = answer
        return answer

    def _answer_body(self, ex: _Exchange, data: bytes) -> None:
        rec = ex.plan.recording
        if rec is not None:
            rec.body(data)  # takes a slice while its preview has room, counts the rest
        framing = ex.framing
        if framing is LENGTH:
            if len(data) >= ex.remaining:
                extra = len(data) > ex.remaining
                self._emit(ex, data[:ex.remaining] if extra else data)
                ex.remaining = 0
                self._complete(ex, reusable=ex.up_keep and not extra)
            else:
                ex.remaining -= len(data)
                self._emit(ex, data)
        elif framing is CHUNKED:
            assert ex.chunks is not None  # set with the chunked framing
            try:
                end = ex.chunks.feed(data)
            except ValueError:
                self._upstream_broke_mid_answer(ex)
                return
            if end < 0:
                self._emit(ex, data)
            else:
                self._emit(ex, data[:end])
                self._complete(ex, reusable=ex.up_keep and end == len(data))
        elif framing is CLOSE:
            self._emit(ex, b"%x\r\n" % len(data) + data + b"\r\n")
        else:  # bytes after a body-less answer: the container is not speaking HTTP/1.1 any more
            self._complete(ex, reusable=False)

    def _emit(self, ex: _Exchange, data: bytes) -> None:
        """Answer bytes for the caller; the head still held goes with them, in one write."""
        if ex.head_out:
            data, ex.head_out = ex.head_out + data, b""
        self._send_client(ex.client, data)

    def _upstream_broke_mid_answer(self, ex: _Exchange) -> None:
        c = ex.client
        self._end(ex, reusable=False)
        self._close_when_written(c)

    def _fail(self, ex: _Exchange, error) -> None:
        """grokemu's own error answer (nothing of the container's went out yet), then the connection closes."""
        c = ex.client
        target = ex.head.split(b" ", 2)[1].decode("latin-1", "replace")
        answered = ex.state is ANSWERING  # bytes of the container's answer may have gone out already
        if ex.plan.recording is not None and not answered:
            ex.plan.recording.finish(error.status, error.message)
        self._end(ex, reusable=False)
        if answered:
            self._close_when_written(c)
            return
        if isinstance(error, GatewayTimeout):
            log.info("%s", error)
        self._send_client(c, raw_answer(*self._failure(error, target.split("?", 1)[0])))
        self._close_when_written(c)

    def _complete(self, ex: _Exchange, reusable: bool) -> None:
        c = ex.client
        self._end(ex, reusable)
        if not ex.keep:
            self._close_when_written(c)
            return
        self._next(c)

    def _end(self, ex: _Exchange, reusable: bool) -> None:
        """The exchange is over: the container's socket kept or closed, the plan told, the caller free."""
        if ex.state is FINISHED:
            return
        _move(ex, FINISHED)
        ex.client.exchange = None
        if ex.up is not None:
            if reusable and not ex.unsent:
                self._give_back(ex)
            else:
                self._drop_upstream(ex)
        try:
            ex.plan.done(ex.status)
        except Exception:
            log.exception("ending a relayed request failed")

    def _drop_upstream(self, ex: _Exchange) -> None:
        up, ex.up = ex.up, None
        if up is None:
            return
        up.exchange = None
        self._upstream_events(up, 0)
        up.sock.close()

    def _give_back(self, ex: _Exchange) -> None:
        """The socket of a cleanly ended exchange goes back to the container's pool, still watched by the loop
        (readable while idle means the container closed it), so the next request takes it without a system call."""
        up, ex.up = ex.up, None
        assert up is not None  # an answered exchange still holds its upstream
        up.exchange = None
        pool = up.pool
        if pool is None or not pool.give_watched(up.sock, up):
            self._upstream_events(up, 0)
            up.sock.close()
            return
        self._upstream_events(up, _READ)

    def _discard_idle(self, up: _Upstream) -> None:
        if up.pool is not None:
            up.pool.discard(up.sock)
        self._upstream_events(up, 0)
        up.sock.close()
