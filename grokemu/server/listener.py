"""GrokemuServer: one listening socket of waitress's, with grokemu's header timeout, eviction at the connection
limit, a pause when descriptors run out, and streamed routes sent to the takeover's stream threads."""
from __future__ import annotations

import errno
import logging
import time
from typing import TYPE_CHECKING

from waitress.server import TcpWSGIServer

from grokemu.server.channel import GrokemuChannel, Preflight

if TYPE_CHECKING:
    from grokemu.server.takeover import ConnectionTakeover

log = logging.getLogger("grokemu.server")


class GrokemuServer(TcpWSGIServer):
    next_channel_cleanup: float  # waitress's, assigned here too (waitress ships no types)
    """A listening socket of waitress's, with the header timeout, eviction at the connection limit, a pause
    instead of a busy loop when descriptors run out, and fetchProxy requests routed to stream threads."""

    channel_class = GrokemuChannel
    _accept_paused_until = 0.0
    _last_eviction_log = 0.0

    def __init__(self, application, map, sock, dispatcher, adj, *, takeover: ConnectionTakeover, listener: str,
                 preflight: Preflight | None, host_peers: frozenset[str] | None = None):
        # A socket shared by the host and containers (grokemu inside the compose stand, on the docker_network): a
        # connection from one of `host_peers` (loopback, the networks' gateways, i.e. the published port) is "main",
        # any other peer is a container and gets the bridge rules (web/guard.py).
        self.grokemu_host_peers = host_peers
        self.grokemu_takeover = takeover
        self.grokemu_streamed = takeover.streamed_prefixes  # routes served on stream threads, uploads relayed
        self.grokemu_listener = listener
        self.grokemu_preflight = preflight
        self.grokemu_header_timeout = takeover.settings.header_timeout
        self.grokemu_stream_timeout = takeover.settings.stream_timeout
        super().__init__(application, map, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def listener_for(self, addr) -> str:
        """"main" or "bridge" for a connection from `addr` (the peer's (ip, port))."""
        if self.grokemu_host_peers is None:
            return self.grokemu_listener
        peer = (addr[0] if isinstance(addr, (tuple, list)) and addr else str(addr or "")).removeprefix("::ffff:")
        return "main" if peer in self.grokemu_host_peers else "bridge"

    def close(self):
        super().close()
        if self.grokemu_takeover.loop is not None:  # its connections close with the server
            self.grokemu_takeover.loop.close()

    def add_task(self, channel):
        request = channel.requests[0]
        if request.error is None and request.path.startswith(self.grokemu_streamed):
            self.grokemu_takeover.serve_proxied(channel)
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
        channels = [c for c in list(self._map.values()) if isinstance(c, GrokemuChannel)]
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

