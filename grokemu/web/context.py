"""The app context: every collaborator a view or a background job may use, one typed field each, built once by
`create_app` (app.py, house rule 2). A leaf module: it imports no blueprint and no factory, so every blueprint
imports `ctx` at the top.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from flask import Flask, current_app

if TYPE_CHECKING:
    from grokemu.config import Settings
    from grokemu.domain.clock import Clock
    from grokemu.domain.ports import Orchestrator, PackageFiles, Store
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
    from grokemu.services.resets import Resets
    from grokemu.services.scheduler import Scheduler
    from grokemu.services.spawner import Spawner
    from grokemu.services.tokens import TokenService
    from grokemu.web.guard import Guard

EXTENSION = "grokemu"


class ConnectionCount(Protocol):
    """What the app reads of the server's connection takeover (grokemu/server/): how many WebSockets it holds open."""

    @property
    def open_websockets(self) -> int: ...


@dataclass
class Context:
    """Everything a request handler or background job may need; one per app."""

    settings: Settings
    store: Store
    clock: Clock
    orchestrator: Orchestrator
    auth: AuthService
    tokens: TokenService
    registry: RegistryService
    package_files: PackageFiles
    activity: ActivityTracker
    spawner: Spawner
    images: ImageService
    packages: PackageService
    scheduler: Scheduler
    proxy: ProxyService
    admin: AdminService
    guard: Guard
    broker: BrokerService
    functions: FunctionRegistry
    calls: CallService
    logs: ContainerLogs
    resets: Resets
    inspector: RequestInspector
    started_at: float = field(default_factory=time.time)
    # the server's connection takeover, once a server serves this app (None under the Flask test client)
    takeover: ConnectionCount | None = None


def ctx() -> Context:
    """The context of the app serving the current request."""
    return current_app.extensions[EXTENSION]


def app_context(app: Flask) -> Context:
    """The context of `app`, outside a request (the CLI, the server, tests)."""
    return app.extensions[EXTENSION]
