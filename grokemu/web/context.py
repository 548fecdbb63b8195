"""The app context: every collaborator a view or a background job may use, one typed field each, built once by
`create_app` (app.py, house rule 2). A leaf module: it imports no blueprint and no factory, so every blueprint
imports `ctx` at the top.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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


class Gauges:
    """Numbers the server reports about itself for the app to show (the signed-in health): the server adds a reader
    per name when it is built around the app (server/takeover.py), a metrics registry's pattern, so the app holds
    no reference to the server and nothing is set on it afterwards. Under the Flask test client there are none."""

    def __init__(self) -> None:
        self._readers: dict[str, Callable[[], object]] = {}

    def add(self, name: str, read: Callable[[], object]) -> None:
        self._readers[name] = read

    def read(self, name: str, default: object = None) -> object:
        reader = self._readers.get(name)
        return default if reader is None else reader()


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
    gauges: Gauges = field(default_factory=Gauges)


def ctx() -> Context:
    """The context of the app serving the current request."""
    return current_app.extensions[EXTENSION]


def app_context(app: Flask) -> Context:
    """The context of `app`, outside a request (the CLI, the server, tests)."""
    return app.extensions[EXTENSION]
