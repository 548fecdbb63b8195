"""The serving composition root: what `grokemu up` and the test kit's in-process grokemu serve. It decides where
grokemu listens and what containers are told (plan_listeners), creates the app (app.py create_app) and hands the
server (grokemu/server/) what it calls of the web layer (WebHooks), so the server imports no view and nothing is
set on the app after it was built.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from flask import Flask

from grokemu.app import create_app
from grokemu.config import Settings
from grokemu.domain.ports import Orchestrator
from grokemu.server.channel import Preflight
from grokemu.server.serve import bind, build_server, run_forever, serve_on_thread, stop_server
from grokemu.server.takeover import ConnectionTakeover, WebHooks
from grokemu.web import errors, proxy
from grokemu.web import takeover as web_takeover
from grokemu.web.context import Context, app_context
from grokemu.web.fast_proxy import FastProxy
from grokemu.web.websocket import reject_websocket

log = logging.getLogger("grokemu.server")


def web_hooks(context: Context, fast_path: bool = True) -> WebHooks:
    """The web layer's parts the server calls (server/takeover.py WebHooks); `fast_path` False: no relay loop."""
    return WebHooks(render_error=errors.render, reject_websocket=reject_websocket,
                    takeover_key=web_takeover.ENVIRON_KEY,
                    fast_path=FastProxy(context) if fast_path else None)


def create_server(app: Flask, sockets: list[socket.socket], settings: Settings | None = None, *,
                  bridge_addresses: Iterable[str] = (), preflight: Preflight | None = None,
                  threads: int | None = None, max_request_body_size: int | None = None,
                  streamed_prefixes: Iterable[str] = (), host_peers: Iterable[str] | None = None):
    """`app`'s waitress server (not yet running) on already-bound sockets, behind the connection takeover. Limits
    come from `settings` (by default the app's); `threads` / `max_request_body_size` override theirs. Requests whose
    path starts with one of `streamed_prefixes` (fetchProxy's) run on stream threads, at most `max_streams` at once,
    their big uploads relayed as they arrive, and their keep-alive connections go to the relay loop. The rest as
    server/serve.py build_server. The takeover is `server.application` (waitress's name for what it serves)."""
    context = app_context(app)
    settings = settings or context.settings
    if threads is not None or max_request_body_size is not None:
        settings = replace(settings, threads=threads or settings.threads,
                           max_request_body_size=max_request_body_size or settings.max_request_body_size)
    takeover = ConnectionTakeover(app, settings, web_hooks(context), tuple(streamed_prefixes), gauges=context.gauges)
    server = build_server(takeover, sockets, settings, bridge_addresses=bridge_addresses, preflight=preflight,
                          host_peers=host_peers)
    server.application = takeover  # a MultiSocketServer has none of its own; a single server has it already
    return server


class ServeError(Exception):
    """grokemu cannot serve with these settings (the message says why); `code` is the exit code of `grokemu up`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ListenerPlan:
    """Where grokemu listens beside `host:port`, and how containers reach it.

    `extra_hosts`: more addresses to bind the same port on (the Docker bridge gateway, or the docker_network's
    gateway), bridge listeners; `host_peers`: grokemu in a container on the docker_network, the peers that are the
    host (None: not in a container); `api_host`: the address containers are given for the API (None: the
    settings' own); `guard_names`: more addresses the guard treats as grokemu's own on the bridge."""

    extra_hosts: tuple[str, ...] = ()
    host_peers: tuple[str, ...] | None = None
    api_host: str | None = None
    guard_names: tuple[str, ...] = ()


@runtime_checkable
class SwarmCheck(Protocol):
    """An orchestrator that can say why Swarm is not usable (adapters/swarm_orchestrator.py)."""

    def swarm_problem(self) -> str | None: ...


@runtime_checkable
class DockerNetworks(Protocol):
    """An orchestrator with Docker networks to serve on (adapters/docker_orchestrator/networks.py, the `docker_network`
    setting)."""

    def ensure_network(self, labels: dict[str, str]) -> dict: ...

    def network_gateway(self, attrs: dict) -> str | None: ...

    def own_container(self) -> Any: ...

    def join_network(self, container: Any) -> tuple[str | None, list[str]]: ...


def plan_listeners(settings: Settings, orchestrator: Orchestrator, docker_ok: bool) -> ListenerPlan:
    """The network topology `grokemu up` serves with. ServeError when the swarm or the network cannot be used."""
    if docker_ok and settings.orchestrator == "swarm" and isinstance(orchestrator, SwarmCheck):
        problem = orchestrator.swarm_problem()
        if problem:  # e.g. "run `docker swarm init`": nothing could ever start, so say it now
            raise ServeError(problem, code=2)
    if docker_ok and settings.docker_network:
        if not isinstance(orchestrator, DockerNetworks):
            raise ServeError(f"cannot use Docker network {settings.docker_network!r}: this orchestrator has none")
        try:
            network = orchestrator.ensure_network({"grokemu.instance": settings.instance})
            me = orchestrator.own_container()
            if me is not None:
                # One socket for the host (the published port arrives from a network's gateway) and the containers
                # (any other peer on the network): the server tells them apart by peer (server/listener.py).
                own_ip, host_peers = orchestrator.join_network(me)
                return ListenerPlan(host_peers=tuple(host_peers), api_host=own_ip or None,
                                    guard_names=(own_ip,) if own_ip else ())
            # grokemu on the host: containers reach it at the host's address on that network, a bridge listener.
            gateway = orchestrator.network_gateway(network)
            return ListenerPlan(extra_hosts=(gateway,) if gateway and gateway != settings.host else (),
                                api_host=gateway or None)
        except Exception as e:  # noqa: BLE001 - say what went wrong and stop: containers could not reach grokemu
            raise ServeError(f"cannot use Docker network {settings.docker_network!r}: {e}") from e
    # Containers reach the API at host.docker.internal, i.e. the Docker bridge gateway: listen there too (reachable
    # from containers and this host only; never 0.0.0.0). An orchestrator without a bridge (the in-memory one of
    # grokemu's tests, NoDaemon) has nothing more to listen on.
    bridge_gateway = getattr(orchestrator, "bridge_gateway", None)
    gateway = bridge_gateway() if docker_ok and bridge_gateway and not settings.container_api_url else None
    return ListenerPlan(extra_hosts=(gateway,) if gateway and gateway != settings.host else ())


@dataclass
class Serving:
    """The app and its waitress server on bound sockets, not yet serving. `settings` has the real port (port 0
    picks one) and the API URL containers are given; `docker_ok` says whether the daemon answered."""

    app: Flask
    server: Any  # waitress's server (waitress ships no types)
    settings: Settings
    sockets: list
    docker_ok: bool
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def context(self) -> Context:
        return app_context(self.app)

    @property
    def takeover(self) -> ConnectionTakeover:
        return self.server.application

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
        self._thread = serve_on_thread(self.server)
        return self

    def stop(self, timeout: float = 10) -> None:
        """Stop serving from any thread (server/serve.py stop_server), then background work."""
        thread, self._thread = self._thread, None
        stop_server(self.server, thread, self.sockets, timeout)
        self.context.scheduler.stop()


def prepare(settings: Settings, orchestrator: Orchestrator, *, clock=None, background: bool = True) -> Serving:
    """What `grokemu up` serves with `settings` and `orchestrator`: the Docker network set up when the settings ask
    for one (plan_listeners), the sockets bound (the main one, and where containers reach the API), the app created
    (app.py) and its server (create_server), ready to run. ServeError when it cannot be (the swarm is not usable,
    the network or the port cannot be had)."""
    docker_ok = orchestrator.ping()
    plan = plan_listeners(settings, orchestrator, docker_ok)
    try:
        sockets = bind(settings.host, settings.port, list(plan.extra_hosts))
    except OSError as e:
        raise ServeError(f"cannot listen on {settings.host}:{settings.port}: {e}") from e
    port = sockets[0].getsockname()[1]
    if port != settings.port:  # --port 0: the URLs printed and handed to containers use the real port
        settings = replace(settings, port=port)
    if plan.api_host and not settings.container_api_url:
        settings = replace(settings, container_api_url=f"http://{plan.api_host}:{port}/api")
    try:
        app = create_app(settings, orchestrator=orchestrator, clock=clock, background=background,
                         bridge_addresses=plan.extra_hosts + plan.guard_names)
        server = create_server(app, sockets, settings, bridge_addresses=plan.extra_hosts,
                               streamed_prefixes=(proxy.HTTP_PREFIX,), preflight=app_context(app).guard.preflight,
                               host_peers=plan.host_peers)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return Serving(app, server, settings, sockets, docker_ok)
