"""create_app: the one place that wires adapters to services (house rule 2).

Tests pass fakes (an in-memory orchestrator, a manual clock); the CLI passes the real adapters.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from flask_sock import Sock

from grokemu import __version__
from grokemu.config import Settings
from grokemu.domain.clock import Clock, SystemClock
from grokemu.domain.ports import Orchestrator, Store
from grokemu.services.auth import AuthService

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Everything a request handler or background job may need; one per app."""

    settings: Settings
    store: Store
    clock: Clock
    orchestrator: Orchestrator | None
    auth: AuthService
    started_at: float = field(default_factory=time.time)
    services: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # ctx.packages, ctx.images, ctx.spawner, ctx.registry, ...
        try:
            return self.__dict__["services"][name]
        except KeyError:
            raise AttributeError(name) from None


def ctx() -> Context:
    return current_app.extensions["grokemu"]


def create_app(settings: Settings, *, store: Store | None = None, orchestrator: Orchestrator | None = None,
               clock: Clock | None = None, background: bool = True, bridge_addresses: tuple[str, ...] = ()) -> Flask:
    """`background=False` runs image validation inline when the scheduler runs (tests drive it with
    `ctx.scheduler.run_once()`); the CLI keeps it on a worker thread. `bridge_addresses`: the Docker bridge
    gateway addresses grokemu also listens on (containers call the API there; web/guard.py limits what they get)."""
    from grokemu.adapters.sqlite_store import SqliteStore
    from grokemu.services.admin import AdminService
    from grokemu.services.images import ImageService
    from grokemu.services.packages import PackageService
    from grokemu.services.proxy import ProxyService
    from grokemu.services.registry import RegistryService
    from grokemu.services.scheduler import Scheduler
    from grokemu.services.spawner import Spawner
    from grokemu.services.tokens import TokenService
    from grokemu.web import admin, api, proxy, registry, ui
    from grokemu.web.guard import Guard
    from grokemu.web.errors import register_error_handlers

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clock = clock or SystemClock()
    store = store if store is not None else SqliteStore(settings.db_path)
    auth = AuthService(settings.dev_keys, store, clock, session_ttl=settings.session_ttl)
    context = Context(settings=settings, store=store, clock=clock, orchestrator=orchestrator, auth=auth)

    tokens = TokenService(settings.data_dir / "keys", clock)
    registry_service = RegistryService(settings.data_dir / "registry", clock)
    spawner = Spawner(store, orchestrator, clock, settings, auth=auth, background=background)
    images = ImageService(store, orchestrator, clock, settings, spawner=spawner, registry=registry_service,
                          background=background)
    packages = PackageService(store, clock, settings.data_dir / "packages", images=images, spawner=spawner,
                              settings=settings)
    spawner.packages = packages
    # Startup sweeps, before any request: what a kill -9 left (staging folders, unreferenced package versions,
    # registry upload debris) goes; nothing that is resumable or referenced is touched.
    packages.sweep()
    registry_service.sweep()
    scheduler = Scheduler(clock, interval=settings.scheduler_interval)
    scheduler.add("validate images", images.process_pending)
    scheduler.add("reconcile containers", spawner.tick)
    admin_service = AdminService(store, orchestrator, settings, settings.data_dir / "packages",
                                 registry=registry_service, auth=auth)
    context.services.update(tokens=tokens, registry=registry_service, images=images, spawner=spawner,
                            packages=packages, scheduler=scheduler, admin=admin_service,
                            proxy=ProxyService(spawner, settings))

    app = Flask("grokemu")
    app.config["MAX_CONTENT_LENGTH"] = None
    app.extensions["grokemu"] = context
    sock = Sock(app)
    register_error_handlers(app)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(proxy.blueprint)
    # the WebSocket relay takes the raw socket from the server's handoff itself (services/proxy.py), so it is a
    # plain Flask websocket route rather than a flask-sock one
    app.register_blueprint(proxy.ws_blueprint)
    app.register_blueprint(registry.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(ui.blueprint)
    admin.register_websockets(sock)
    # after every blueprint: the guard classifies requests by the URL map's endpoints
    guard = Guard(settings, auth, app.url_map,
                  lambda environ, endpoint, args: registry.authorize(tokens, environ, endpoint, args),
                  bridge_addresses)
    guard.install(app)
    context.services["guard"] = guard
    log.debug("grokemu %s app created (data dir %s)", __version__, settings.data_dir)
    return app
