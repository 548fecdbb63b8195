"""The relay loop (docs/design.md decision 2): every keep-alive connection that left waitress after a fetchProxy
request lives here, on one thread with one selector, and its body-less fetchProxy requests to a started container are
relayed without a thread, without a WSGI environ of waitress's and without Flask.

Why one loop and not a thread per connection: measured with 8 keep-alive clients, a thread per connection spent most
of grokemu's core on waitress's pure-Python parser, on environ and response building and on handing the GIL from
thread to thread; a selector loop answers each readable socket in turn with a few system calls per request.

Per request head (found by its blank line, parsed by httptools, the C parser of llhttp):
- a body-less HTTP/1.1 fetchProxy request that `plan` (web/fast_proxy.py FastProxy.plan: the guard, then
  ProxyService.fast_forward) accepts is sent to the container on a kept-alive upstream socket (from the container's
  one pool, shared with the blocking relay: adapters/lean_upstream.py LeanPool), and the answer
  passed back as it arrives: status, headers (hop-by-hop ones dropped, as everywhere) and body bytes unchanged, a
  chunked body passed through chunk for chunk, a body that ends with the container's close re-framed as chunked;
- what repeats is worked out once: header lines equal to the last ones on the connection are not parsed again
  (`_plan_request`), the container's header block for them is reused (upstream_headers.bodyless_request_head), and an
  answer head the container repeats is re-written for the caller once per second (`_cached_caller_head`); the guard and the container lookup run
  for every request;
- anything else leaves the loop for one request: the connection's bytes go to a stream thread running the blocking
  relay (server/relay.py: waitress's parser, the preflight, the whole WSGI app, WebSocket upgrades, cold starts,
  bodies, every refusal), which gives the connection back here afterwards when it stays open.

Bounds: a connection here holds one of `max_streams` parking places (StreamPool.try_park) for its whole life, a
hand-off additionally a stream slot while its thread runs. Buffers are bounded: at most MAX_PENDING bytes read ahead
of the request being answered, at most HIGH_WATER bytes of an answer waiting for a slow caller (the container is
not read meanwhile). Timeouts, checked every SWEEP seconds: idle `channel_timeout`; a request head not complete
`header_timeout` after its first byte; no answer head from the container within `proxy_request_timeout` (504); an
answer that makes no progress either way for `stream_timeout`.

The loop is split by side: relay_state.py (the records, their states and transition tables), relay_answer.py (answer
heads re-written for the caller, chunked bodies), relay_caller.py (the caller's side), relay_container.py (the
container's side); RelayLoop here joins them and runs them on its thread.
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from grokemu.domain.errors import GatewayTimeout
from grokemu.domain.upstream import FastForward
from grokemu.server.relay_container import _ContainerSide
from grokemu.server.relay_state import (
    _READ,
    ANSWERING,
    CLOSED,
    FINISHED,
    HANDED_OFF,
    SWEEP,
    _Client,
    _Upstream,
)
from grokemu.server.watchdog import WATCHDOG

log = logging.getLogger("grokemu.server")

__all__ = ["RelayLoop"]


class RelayLoop(_ContainerSide):
    """The loop and its thread (started with the first connection). `takeover` is the ConnectionTakeover (its
    settings and stream pool); `plan`, `failure`, `slow_path` and `prefix` are web/fast_proxy.py's
    FastProxy.plan, the one error renderer (web/errors.py render, through WebHooks), .handle and .PREFIX."""

    def __init__(self, takeover, plan: Callable[[dict], FastForward | None], failure: Callable, slow_path: Callable,
                 prefix: str):
        self.takeover = takeover
        self.settings = takeover.settings
        self.streams = takeover.streams
        self._plan = plan
        self._failure = failure  # (GrokemuError, path) -> (status, headers, body): grokemu's own error answers
        self.slow_path = slow_path  # FastProxy.handle: the blocking relay's way for what the loop hands off
        self._selector = selectors.DefaultSelector()
        self._incoming: deque[tuple] = deque()
        self._explained: deque[tuple] = deque()  # (exchange, reason or None) from explaining threads
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, _READ, (self._woken, None))
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._prefix = prefix.encode("latin-1")  # fetchProxy's path prefix: other request lines are handed off
        self._closing = False
        self._caller_heads: dict = {}  # answer heads re-written for the caller (_cached_caller_head)
        self.forwarded = 0  # requests the loop sent to a container itself (the signed-in health shows these)
        self.handed_off = 0  # requests handed to the blocking relay

    @property
    def connections(self) -> int:
        return len(self._clients)

    def stats(self) -> dict[str, int]:
        """What the signed-in health shows of the loop (reported through the app's gauges)."""
        return {"connections": self.connections, "forwarded": self.forwarded, "handedOff": self.handed_off}

    # -- connections arriving --------------------------------------------------------------------------------------
    def adopt(self, channel, sock, rest: bytes, *, parked: bool) -> None:
        """Take a connection (a TrackedSocket from the takeover or the blocking relay) into the loop, with the bytes
        already read after its last request. `parked`: it holds a parking place already (it is coming back from a
        hand-off); otherwise one is taken, and without one free the connection is closed (it is idle)."""
        if self._closing or (not parked and not self.streams.try_park()):
            sock.close()
            if parked:
                self.streams.unpark()
            return
        WATCHDOG.unwatch(sock)  # the loop keeps its own time
        plain = socket.socket(fileno=sock.detach())
        plain.setblocking(False)
        listener = channel.server.listener_for(channel.addr)
        with self._lock:
            if self._closing:  # closed meanwhile
                plain.close()
                self.streams.unpark()
                return
            self._incoming.append((plain, channel, rest, listener))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="grokemu-relay-loop", daemon=True)
                self._thread.start()
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already

    def close(self) -> None:
        """Stop the loop and close its connections (the server is closing)."""
        with self._lock:
            self._closing = True
            running = self._thread is not None
        if running:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass
        else:
            self._shut()

    def _shut(self) -> None:
        for c in list(self._clients):
            self._close_client(c)
        registered = self._selector.get_map()  # None once closed (a second close)
        for key in list(registered.values() if registered is not None else ()):  # watched idle sockets in pools
            up = key.data[1]
            if isinstance(up, _Upstream) and up.exchange is None:
                self._discard_idle(up)
        with self._lock:
            incoming, self._incoming = list(self._incoming), deque()
        for plain, *_ in incoming:
            plain.close()
            self.streams.unpark()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _woken(self, _unused, _mask) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            with self._lock:
                if not self._explained:
                    break
                ex, error = self._explained.popleft()
            state = ex.client.state
            if ex.state is not FINISHED and state is not CLOSED and state is not HANDED_OFF:
                self._fail(ex, error)
        while True:
            with self._lock:
                if not self._incoming:
                    return
                plain, channel, rest, listener = self._incoming.popleft()
            c = _Client(plain, channel, rest, listener)
            self._clients.add(c)
            c.events = _READ
            self._selector.register(plain, _READ, (self._client_event, c))
            self._next(c)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP
        select = self._selector.select
        while not self._closing:
            for key, mask in select(SWEEP):
                handler, obj = key.data
                try:
                    handler(obj, mask)
                except Exception:  # a bug must not stop every relayed connection: that one closes, the rest go on
                    log.exception("relay loop error")
                    self._abandon(obj)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SWEEP
                try:
                    self._sweep(now)
                except Exception:
                    log.exception("relay loop error in the timeout sweep")
        self._shut()

    def _abandon(self, obj) -> None:
        """Close what an event handler that failed was working on (its caller's connection, or an idle socket)."""
        try:
            if isinstance(obj, _Client):
                self._close_client(obj)
            elif isinstance(obj, _Upstream):
                if obj.exchange is not None:
                    self._close_client(obj.exchange.client)
                else:
                    self._discard_idle(obj)
        except Exception:
            log.exception("relay loop error while closing")

    # -- timeouts ---------------------------------------------------------------------------------------------------
    def _sweep(self, now: float) -> None:
        s = self.settings
        for c in list(self._clients):
            ex = c.exchange
            if ex is not None:
                if c.out and now - c.out_since > s.stream_timeout:
                    log.info("closing the relayed connection from %s: it read nothing for %g s", c.remote,
                             s.stream_timeout)
                    self._close_client(c)
                elif ex.state is not ANSWERING and now - ex.since > s.proxy_request_timeout:
                    self._fail(ex, GatewayTimeout(f"Container {ex.plan.name} did not answer {ex.plan.method} within "
                                                  f"{s.proxy_request_timeout:g} s"))
                elif ex.state is ANSWERING and not c.out and now - ex.since > s.stream_timeout:
                    log.info("closing the relayed connection from %s: the container sent nothing for %g s",
                             c.remote, s.stream_timeout)
                    self._close_client(c)
            elif c.out:
                if now - c.out_since > s.stream_timeout:
                    self._close_client(c)
            elif c.head_since is not None:
                if now - c.head_since > s.header_timeout:
                    log.info("closing the connection from %s: no complete request head within %g s", c.remote,
                             s.header_timeout)
                    self._close_client(c)
            elif now - c.idle_since > s.channel_timeout:
                self._close_client(c)
