"""create_app: the one place that wires adapters to services (house rule 2).

Tests pass fakes (an in-memory orchestrator, a manual clock); the CLI passes the real adapters. Services are built
in one direction: each gets what it uses through its constructor, and nothing is set after construction.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask
from flask_sock import Sock

from grokemu import __version__
from grokemu.adapters.amqp_broker import AmqpBroker
from grokemu.adapters.fs_blobs import FsBlobStore
from grokemu.adapters.fs_package_files import FsPackageFiles
from grokemu.adapters.http_upstream import HttpUpstreamPools
from grokemu.adapters.no_daemon import NoDaemon
from grokemu.adapters.sqlite_store import SqliteStore
from grokemu.adapters.websocket_upstream import WebSocketDialer
from grokemu.config import Settings
from grokemu.domain.clock import Clock, SystemClock
from grokemu.domain.ports import Broker, Orchestrator, Store
from grokemu.services.activity import ActivityTracker
from grokemu.services.admin import AdminService
from grokemu.services.auth import AuthService
from grokemu.services.broker import BrokerService
from grokemu.services.calls import CallService
from grokemu.services.container_logs import ContainerLogs
from grokemu.services.functions import FunctionRegistry
from grokemu.services.images import ImageService
from grokemu.services.inspector import RequestInspector
from grokemu.services.packages import PackageService
from grokemu.services.proxy import ProxyService
from grokemu.services.registry import RegistryService
from grokemu.services.resets import Resets, ResetStage
from grokemu.services.run_specs import RunSpecs
from grokemu.services.scheduler import Scheduler
from grokemu.services.spawner import Spawner
from grokemu.services.tokens import TokenService
from grokemu.web import admin, api, dashboard, functions, proxy, registry, ui
from grokemu.web.context import EXTENSION, Context
from grokemu.web.errors import register_error_handlers
from grokemu.web.guard import Guard

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, store: Store | None = None, orchestrator: Orchestrator | None = None,
               clock: Clock | None = None, background: bool = True, bridge_addresses: tuple[str, ...] = (),
               connect_broker: Callable[[str], Broker] = AmqpBroker) -> Flask:
    """`background=False` runs image validation inline when the scheduler runs (tests drive it with
    `ctx.scheduler.run_once()`); the CLI keeps it on a worker thread. `bridge_addresses`: the Docker bridge
    gateway addresses grokemu also listens on (containers call the API there; web/guard.py limits what they get).
    `connect_broker`: url → Broker (tests pass an in-memory one). No `orchestrator`: NoDaemon, an engine that is
    never reachable (every service then answers as it does when Docker is down)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clock = clock or SystemClock()
    orchestrator = orchestrator if orchestrator is not None else NoDaemon()
    store = store if store is not None else SqliteStore(settings.db_path)
    auth = AuthService(settings.dev_keys, store, clock, session_ttl=settings.session_ttl)
    tokens = TokenService(settings.data_dir / "keys", clock)
    registry_service = RegistryService(FsBlobStore(settings.data_dir / "registry"), clock)
    package_files = FsPackageFiles(settings.data_dir / "packages")
    activity = ActivityTracker(clock)
    inspector = RequestInspector(settings.inspector_size, settings.dev_keys, clock)
    activity.on_forget(inspector.forget)
    broker = BrokerService(settings, orchestrator, connect_broker)
    run_specs = RunSpecs(settings, store, auth, package_files, broker=broker)
    spawner = Spawner(store, orchestrator, clock, settings, auth=auth, activity=activity, run_specs=run_specs,
                      background=background, broker=broker)
    functions_registry = FunctionRegistry(store)
    calls = CallService(settings, store, clock, functions_registry, spawner, broker, activity, run_specs,
                        background=background, inspector=inspector)
    images = ImageService(store, orchestrator, clock, settings, spawner=spawner, package_files=package_files,
                          registry=registry_service, background=background)
    packages = PackageService(store, clock, package_files, images=images, spawner=spawner, settings=settings)
    proxy_service = ProxyService(spawner, activity, settings,
                                 http=HttpUpstreamPools(settings.threads, settings.proxy_request_timeout),
                                 websockets=WebSocketDialer(settings.proxy_request_timeout), inspector=inspector)
    activity.on_forget(proxy_service.forget)  # a deleted container's upstream sockets are closed
    resets = Resets()  # what admin reset empties, in this order within each stage (services/resets.py)
    resets.add("calls", calls, ResetStage.CALLERS)  # every caller gets its answer before the workers go
    resets.add("broker", broker, ResetStage.CALLERS)  # its container went with the others: new credentials next time
    resets.add("auth", auth, ResetStage.STATE)  # containers' USER_API_KEYs; reported as the number revoked
    resets.add("store", store, ResetStage.STATE)
    resets.add("package files", package_files, ResetStage.STATE)
    resets.add("registry", registry_service, ResetStage.STATE)
    resets.add("images", images, ResetStage.STATE)
    resets.add("inspector", inspector, ResetStage.STATE)  # the recorded requests of every container
    # readers last: the spawner's generation moves on once the rows are gone, so no reader keeps a container from
    # before; the proxy forgets its started-cache and upstream pools, so a deleted container id is never served
    resets.add("spawner", spawner, ResetStage.READERS)
    resets.add("activity", activity, ResetStage.READERS)
    resets.add("proxy", proxy_service, ResetStage.READERS)
    admin_service = AdminService(store, orchestrator, settings, resets)
    container_logs = ContainerLogs(store, orchestrator)
    # Startup sweeps, before any request: what a kill -9 left (staging folders, unreferenced package versions,
    # registry upload debris) goes; nothing that is resumable or referenced is touched.
    packages.sweep()
    registry_service.sweep()
    scheduler = Scheduler(clock, interval=settings.scheduler_interval)
    scheduler.add("validate images", images.process_pending)
    scheduler.add("reconcile containers", spawner.tick)
    scheduler.add("call deadlines", calls.tick)

    # static files (the dashboard's script and styles) ship in the package: web/static/ at /static/
    app = Flask("grokemu", static_folder="web/static")
    app.config["MAX_CONTENT_LENGTH"] = None
    sock = Sock(app)
    register_error_handlers(app)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(proxy.blueprint)
    # the WebSocket relay takes the raw socket from the server's connection takeover (web/proxy.py), so it is a
    # plain Flask websocket route rather than a flask-sock one
    app.register_blueprint(proxy.ws_blueprint)
    app.register_blueprint(functions.blueprint)
    app.register_blueprint(functions.ws_blueprint)
    app.register_blueprint(registry.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(ui.blueprint)
    app.register_blueprint(dashboard.blueprint)
    admin.register_websockets(sock)
    dashboard.register_websockets(sock)
    # after every blueprint: the guard classifies requests by the URL map's endpoints
    guard = Guard(settings, auth, app.url_map,
                  lambda environ, endpoint, args: registry.authorize(tokens, environ, endpoint, args),
                  bridge_addresses)
    guard.install(app)
    app.extensions[EXTENSION] = Context(
        settings=settings, store=store, clock=clock, orchestrator=orchestrator, auth=auth, tokens=tokens,
        registry=registry_service, package_files=package_files, activity=activity, spawner=spawner, images=images,
        packages=packages, scheduler=scheduler, proxy=proxy_service, admin=admin_service, guard=guard,
        broker=broker, functions=functions_registry, calls=calls, logs=container_logs, resets=resets,
        inspector=inspector)
    log.debug("grokemu %s app created (data dir %s)", __version__, settings.data_dir)
    return app
