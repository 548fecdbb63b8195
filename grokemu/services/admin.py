"""Reset: drop every entity and everything grokemu created in Docker (moto's reset, docs/design.md house rule 5).

Every stateful service resets its own state (`reset()`); this one removes what grokemu created in Docker, empties
the store and then calls them all, so nothing from before a reset is served after it.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from grokemu.config import Settings
from grokemu.domain.labels import managed_labels
from grokemu.domain.ports import Orchestrator, PackageFiles, Store

if TYPE_CHECKING:
    from grokemu.services.auth import AuthService
    from grokemu.services.broker import BrokerService
    from grokemu.services.calls import CallService
    from grokemu.services.images import ImageService
    from grokemu.services.inspector import RequestInspector
    from grokemu.services.proxy import ProxyService
    from grokemu.services.registry import RegistryService
    from grokemu.services.spawner import Spawner

log = logging.getLogger(__name__)


class AdminService:
    def __init__(self, store: Store, orchestrator: Orchestrator | None, settings: Settings, *,
                 package_files: PackageFiles, registry: "RegistryService", auth: "AuthService",
                 images: "ImageService", spawner: "Spawner", proxy: "ProxyService", broker: "BrokerService",
                 calls: "CallService", inspector: "RequestInspector | None" = None):
        self._inspector = inspector
        self._broker = broker
        self._calls = calls
        self._store = store
        self._orchestrator = orchestrator
        self._settings = settings
        self._package_files = package_files
        self._registry = registry
        self._auth = auth
        self._images = images
        self._spawner = spawner
        self._proxy = proxy

    def labels(self) -> dict[str, str]:
        return managed_labels(self._settings.instance)

    def _stop_all(self, doomed: list) -> None:
        """Every running container gets its stop_timeout grace, all at once: a reset waits one grace, not one each."""
        running = [r for r in doomed if r.state == "running"]
        if not running:
            return
        with ThreadPoolExecutor(max_workers=min(16, len(running)), thread_name_prefix="grokemu-reset-stop") as pool:
            for done in [pool.submit(self._orchestrator.stop, r.id, self._settings.stop_timeout) for r in running]:
                try:
                    done.result()
                except Exception as e:  # removed next anyway (force)
                    log.warning("reset: stopping a container failed: %s", e)

    def reset(self) -> dict:
        removed_containers = removed_images = 0
        docker_note = "ok"
        if self._orchestrator is not None and self._orchestrator.ping():
            doomed = list(self._orchestrator.list_labelled(self.labels()))
            self._stop_all(doomed)
            for running in doomed:
                self._orchestrator.remove(running.id)
                removed_containers += 1
            removed_images = self._orchestrator.remove_images(self.labels())
            self._orchestrator.remove_networks(self.labels())  # the queue network, once its containers are gone
        else:
            docker_note = "Docker daemon unreachable: nothing removed from Docker"
        self._calls.reset()  # every caller gets its answer before the workers go
        self._broker.reset()  # its container went with the others: new credentials next time
        entities = len(self._store.list_images()) + len(self._store.list_containers())
        revoked = self._auth.reset()
        self._store.reset()
        self._package_files.reset()
        self._registry.reset()
        self._images.reset()
        # last: its generation moves on once the rows are gone, so no reader keeps a container from before
        self._spawner.reset()
        self._proxy.reset()  # its started-cache and upstream pools: a deleted container id is never served again
        if self._inspector is not None:
            self._inspector.reset()
        log.info("reset: %d entities, %d containers, %d images removed, %d container tokens revoked", entities,
                 removed_containers, removed_images, revoked)
        return {"entities": entities, "containers": removed_containers, "images": removed_images,
                "docker": docker_note}
