"""bind, build_server, run_forever, serve_on_thread / stop_server: waitress set up with grokemu's limits on
already-bound sockets. What it serves (the app, the takeover and the web layer's hooks) is put together by the
composition root, bootstrap.py."""
from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import MultiSocketServer
from waitress.task import ThreadedTaskDispatcher

from grokemu.http1 import RECV
from grokemu.server.channel import Preflight
from grokemu.server.listener import GrokemuServer
from grokemu.server.takeover import ConnectionTakeover

if TYPE_CHECKING:
    from grokemu.config import Settings

log = logging.getLogger("grokemu.server")

FD_RESERVE = 256  # descriptors kept for everything that is not a connection (SQLite, Docker, files, pipes)


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


def build_server(takeover: ConnectionTakeover, sockets: list[socket.socket], settings: Settings, *,
                 bridge_addresses: Iterable[str] = (), preflight: Preflight | None = None,
                 host_peers: Iterable[str] | None = None):
    """A waitress server (not yet running) on already-bound sockets, serving `takeover` (the app wrapped by the
    connection takeover; bootstrap.py builds both). `preflight` sees each request with a body once its head is in;
    connections on a socket bound to one of `bridge_addresses` are marked `grokemu.listener=bridge`. `host_peers`
    (grokemu in a container on the docker_network): on its main sockets, only connections from these addresses are
    "main", others "bridge"."""
    logging.getLogger("waitress").addFilter(_HandedOffFilter())
    adj = Adjustments(
        threads=settings.threads, max_request_body_size=settings.max_request_body_size, ident="grokemu",
        asyncore_use_poll=True,  # select() fails past descriptor 1024, and the process with it
        connection_limit=_descriptors_for(settings),
        channel_timeout=max(1, round(settings.channel_timeout)),
        cleanup_interval=1,  # the header and idle timeouts act within a second
        # a `docker push` layer or a big fetchProxy upload spills to disk, not memory
        inbuf_overflow=1024 * 1024,
        # big reads: waitress parses bodies in pure Python, 8 KiB at a time by default
        recv_bytes=RECV,
        # a streamed answer (a fetchProxy download) waits for the client past 1 MiB pending, instead of piling up to
        # 16 MiB per connection and spilling to a temp file at 1 MiB: measured 30+ MB RSS growth per 1 GiB
        # download, 2-6 MB with
        outbuf_high_watermark=1024 * 1024)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    bridge = {str(a) for a in bridge_addresses if a}
    socket_map: dict = {}
    peers = None if host_peers is None else frozenset({"127.0.0.1", "::1", *host_peers})
    servers = [GrokemuServer(takeover, socket_map, sock, dispatcher, adj, takeover=takeover, preflight=preflight,
                             listener="bridge" if sock.getsockname()[0] in bridge else "main",
                             host_peers=None if sock.getsockname()[0] in bridge else peers)
               for sock in sockets]
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(socket_map, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher,
                             servers[-1].log_info)


def run_forever(server, on_stop: Callable[[], None]) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop background work and close the listening socket."""

    def _terminate(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        on_stop()
        server.close()


def _run_on_loop(trigger, thunk) -> None:
    """Have the event loop run `thunk` on its thread. Not `trigger.pull_trigger(thunk)`: it queues the thunk, then
    writes to the trigger's pipe without its lock, so a loop already woken by another thread's pull can run the
    thunk (which closes the trigger) first, and the write fails with EBADF or lands on whatever took the
    descriptor's number (seen in the follow tests). The loop runs thunks only under `trigger.lock`: hold it."""
    with trigger.lock:
        if trigger._closed:  # the loop has closed everything already
            return
        trigger.thunks.append(thunk)
        trigger._physical_pull()


def serve_on_thread(server) -> threading.Thread:
    """Run `server` on a thread of its own (the test kit's in-process grokemu)."""
    thread = threading.Thread(target=server.run, name="grokemu-server", daemon=True)
    thread.start()
    return thread


def stop_server(server, thread: threading.Thread | None, sockets: list[socket.socket], timeout: float = 10) -> None:
    """Stop a server run by serve_on_thread, from any thread: the event loop closes every socket it has on its own
    thread (waitress's trigger runs the closing there), which ends its loop; then the workers and the relay loop
    stop. Connections already taken over (WebSockets, streams) are cut when their threads next touch them."""
    socket_map = getattr(server, "map", None) or getattr(server, "_map", None)
    trigger = getattr(server, "trigger", None) or next(
        (d for d in list((socket_map or {}).values()) if type(d).__name__ == "trigger"), None)
    if thread is not None and thread.is_alive() and trigger is not None:
        _run_on_loop(trigger, lambda: wasyncore.close_all(socket_map))
        thread.join(timeout)
    try:
        server.close()
    except OSError:
        pass
    server.task_dispatcher.shutdown(timeout=timeout)
    for sock in sockets:
        sock.close()
