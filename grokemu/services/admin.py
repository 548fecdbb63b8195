"""Reset: drop every entity and everything grokemu created in Docker (moto's reset, DESIGN.md house rule 5)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from grokemu.config import Settings
from grokemu.domain.ports import Orchestrator, Store
from grokemu.services.auth import AuthService

log = logging.getLogger(__name__)


class AdminService:
    def __init__(self, store: Store, orchestrator: Orchestrator | None, settings: Settings, packages_root: Path,
                 registry=None, *, auth: AuthService):
        self._store = store
        self._auth = auth
        self._orchestrator = orchestrator
        self._settings = settings
        self._packages_root = packages_root
        self._registry = registry

    def labels(self) -> dict[str, str]:
        return {"grokemu.managed": "true", "grokemu.instance": self._settings.instance}

    def reset(self) -> dict:
        removed_containers = removed_images = 0
        docker_note = "ok"
        if self._orchestrator is not None and self._orchestrator.ping():
            for running in list(self._orchestrator.list_labelled(self.labels())):
                self._orchestrator.remove(running.id)
                removed_containers += 1
            removed_images = self._orchestrator.remove_images(self.labels())
        else:
            docker_note = "Docker daemon unreachable: nothing removed from Docker"
        entities = len(self._store.list_images()) + len(self._store.list_containers())
        # the containers are gone, so are their USER_API_KEYs (store rows and cached entries); users' own sessions
        # survive a reset (the logged-in grok CLI and browser keep working) and still expire by time
        revoked = self._auth.revoke_all_containers()
        self._store.reset()
        shutil.rmtree(self._packages_root, ignore_errors=True)
        self._packages_root.mkdir(parents=True, exist_ok=True)
        registry_reset = getattr(self._registry, "reset", None)
        if registry_reset:
            registry_reset()
        log.info("reset: %d entities, %d containers, %d images removed, %d container tokens revoked", entities,
                 removed_containers, removed_images, revoked)
        return {"entities": entities, "containers": removed_containers, "images": removed_images,
                "docker": docker_note}
