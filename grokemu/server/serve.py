"""bind, create_server, run_forever: waitress set up with grokemu's limits on already-bound sockets; `prepare`: what
`grokemu up` serves (the app and its server on their sockets, Docker networking decided), which the test kit's
in-process server (grokemu/testing.py ThreadedGrokemu) runs on a thread with `Serving.start` / `Serving.stop`."""
from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import MultiSocketServer
from waitress.task import ThreadedTaskDispatcher

from grokemu.server.channel import Preflight
from grokemu.server.listener import GrokemuServer
from grokemu.server.takeover import ConnectionTakeover
from grokemu.web.context import app_context

if TYPE_CHECKING:
    from flask import Flask

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


def create_server(app, sockets: list[socket.socket], settings=None, *, bridge_addresses: Iterable[str] = (),
                  preflight: Preflight | None = None, threads: int | None = None,
                  max_request_body_size: int | None = None, streamed_prefixes: Iterable[str] = (),
                  host_peers: Iterable[str] | None = None):
    """A waitress server (not yet running) on already-bound sockets. Limits come from `settings` (by default the
    app's); `threads` / `max_request_body_size` override theirs. `preflight` sees each request with a body once its
    head is in; connections on a socket bound to one of `bridge_addresses` are marked `grokemu.listener=bridge`.
    Requests whose path starts with one of `streamed_prefixes` (fetchProxy's) run on stream threads, at most
    `max_streams` at once, and their big uploads are relayed as they arrive. `host_peers` (grokemu in a container on
    the docker_network): on its main sockets, only connections from these addresses are "main", others "bridge"."""
    from dataclasses import replace

    context = app_context(app)
    settings = settings or context.settings
    if threads is not None or max_request_body_size is not None:
        settings = replace(settings, threads=threads or settings.threads,
                           max_request_body_size=max_request_body_size or settings.max_request_body_size)
    logging.getLogger("waitress").addFilter(_HandedOffFilter())
    takeover = ConnectionTakeover(app, settings, tuple(streamed_prefixes))
    if takeover.streamed_prefixes and getattr(context, "guard", None) is not None:
        from grokemu.server.relay_loop import RelayLoop
        from grokemu.web.fast_proxy import FastProxy

        fast = FastProxy(context)  # fetchProxy on relayed connections, without Flask
        takeover.loop = RelayLoop(takeover, fast.plan, fast.failure, fast.handle, fast.PREFIX)
    context.takeover = takeover
    adj = Adjustments(
        threads=settings.threads, max_request_body_size=settings.max_request_body_size, ident="grokemu",
        asyncore_use_poll=True,  # select() fails past descriptor 1024, and the process with it
        connection_limit=_descriptors_for(settings),
        channel_timeout=max(1, round(settings.channel_timeout)),
        cleanup_interval=1,  # the header and idle timeouts act within a second
        # a `docker push` layer or a big fetchProxy upload spills to disk, not memory
        inbuf_overflow=1024 * 1024,
        # big reads: waitress parses bodies in pure Python, 8 KiB at a time by default
        recv_bytes=256 * 1024,
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


class ServeError(Exception):
    """grokemu cannot serve with these settings (the message says why); `code` is the exit code of `grokemu up`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class Serving:
    """The app and its waitress server on bound sockets, not yet serving. `settings` has the real port (port 0
    picks one) and the API URL containers are given; `docker_ok` says whether the daemon answered."""

    app: Flask
    server: Any  # waitress's server (waitress ships no types)
    settings: Settings
    sockets: list
    docker_ok: bool
    _thread: threading.Thread | None = None

    @property
    def context(self):
        return app_context(self.app)

    @property
    def port(self) -> int:
        return self.sockets[0].getsockname()[1]

    def run_forever(self) -> None:
        """`grokemu up`: serve in this thread until Ctrl-C or SIGTERM (the scheduler is started by the caller)."""
        run_forever(self.server, on_stop=self._on_stop)

    def _on_stop(self) -> None:
        self.context.scheduler.stop()
        if self.settings.remove_containers_on_exit:
            self.context.spawner.release_for_exit()

    def start(self) -> Serving:
        """Serve on a thread of its own, background work included (the in-process test server)."""
        self.context.scheduler.start()
        self._thread = threading.Thread(target=self.server.run, name="grokemu-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        """Stop serving from any thread: the event loop closes every socket it has on its own thread (waitress's
        trigger runs the closing there), which ends its loop; then the workers, the relay loop and background work
        stop. Connections already taken over (WebSockets, streams) are cut when their threads next touch them."""
        server = self.server
        socket_map = getattr(server, "map", None) or getattr(server, "_map", None)
        trigger = getattr(server, "trigger", None) or next(
            (d for d in list((socket_map or {}).values()) if type(d).__name__ == "trigger"), None)
        if self._thread is not None and self._thread.is_alive() and trigger is not None:
            _run_on_loop(trigger, lambda: wasyncore.close_all(socket_map))
            self._thread.join(timeout)
        self.context.scheduler.stop()
        try:
            server.close()
        except OSError:
            pass
        server.task_dispatcher.shutdown(timeout=timeout)
        for sock in self.sockets:
            sock.close()


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


def prepare(settings, orchestrator, *, clock=None, background: bool = True) -> Serving:
    """What `grokemu up` serves with `settings` and `orchestrator`: the Docker network set up when the settings ask
    for one, the sockets bound (the main one, and where containers reach the API: the Docker bridge gateway or the
    network's), the app created (app.py) and its server (create_server), ready to run. ServeError when it cannot be
    (the swarm is not usable, the network or the port cannot be had)."""
    from grokemu.app import create_app
    from grokemu.web import proxy

    docker_ok = orchestrator.ping()
    if docker_ok and settings.orchestrator == "swarm":
        problem = orchestrator.swarm_problem()
        if problem:  # e.g. "run `docker swarm init`": nothing could ever start, so say it now
            raise ServeError(problem, code=2)
    host_peers = None  # grokemu in a container on the docker_network: the peers that are the host (guard rules)
    guard_names: list[str] = []
    derived_api_host = None
    extra: list[str] = []
    if docker_ok and settings.docker_network:
        try:
            network = orchestrator.ensure_network({"grokemu.instance": settings.instance})
            me = orchestrator.own_container()
            if me is not None:
                # One socket for the host (the published port arrives from a network's gateway) and the containers
                # (any other peer on the network): the server tells them apart by peer (server/listener.py).
                own_ip, host_peers = orchestrator.join_network(me)
                derived_api_host = own_ip
                guard_names.append(own_ip or "")
            else:
                # grokemu on the host: containers reach it at the host's address on that network, a bridge listener.
                gateway = orchestrator.network_gateway(network)
                extra = [gateway] if gateway and gateway != settings.host else []
                derived_api_host = gateway
        except Exception as e:  # noqa: BLE001 - say what went wrong and stop: containers could not reach grokemu
            raise ServeError(f"cannot use Docker network {settings.docker_network!r}: {e}") from e
    else:
        # Containers reach the API at host.docker.internal, i.e. the Docker bridge gateway: listen there too
        # (reachable from containers and this host only; never 0.0.0.0).
        # (an orchestrator without a bridge, the in-memory one of grokemu's tests, has nothing more to listen on)
        bridge_gateway = getattr(orchestrator, "bridge_gateway", None)
        gateway = bridge_gateway() if docker_ok and bridge_gateway and not settings.container_api_url else None
        extra = [gateway] if gateway and gateway != settings.host else []
    try:
        sockets = bind(settings.host, settings.port, extra)
    except OSError as e:
        raise ServeError(f"cannot listen on {settings.host}:{settings.port}: {e}") from e
    port = sockets[0].getsockname()[1]
    if port != settings.port:  # --port 0: the URLs printed and handed to containers use the real port
        settings = replace(settings, port=port)
    if derived_api_host and not settings.container_api_url:
        settings = replace(settings, container_api_url=f"http://{derived_api_host}:{port}/api")
    try:
        app = create_app(settings, orchestrator=orchestrator, clock=clock, background=background,
                         bridge_addresses=tuple(extra + [n for n in guard_names if n]))
        server = create_server(app, sockets, settings, bridge_addresses=extra,
                               streamed_prefixes=(proxy.HTTP_PREFIX,), preflight=app_context(app).guard.preflight,
                               host_peers=host_peers)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return Serving(app, server, settings, sockets, docker_ok)
