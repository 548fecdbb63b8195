"""Reset: drop every entity and everything grokemu created in Docker (moto's reset, docs/design.md house rule 5).

This service removes what grokemu created in Docker, then runs the reset of every stateful service, which the
composition root added to `Resets` (services/resets.py: in order, so nothing from before a reset is served after it).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from grokemu.config import Settings
from grokemu.domain.labels import managed_labels
from grokemu.domain.ports import Orchestrator, Store
from grokemu.services.resets import Resets

log = logging.getLogger(__name__)


class AdminService:
    def __init__(self, store: Store, orchestrator: Orchestrator, settings: Settings, resets: Resets):
        self._store = store
        self._orchestrator = orchestrator
        self._settings = settings
        self._resets = resets

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
        if self._orchestrator.ping():
            doomed = list(self._orchestrator.list_labelled(self.labels()))
            self._stop_all(doomed)
            for running in doomed:
                self._orchestrator.remove(running.id)
                removed_containers += 1
            removed_images = self._orchestrator.remove_images(self.labels())
            self._orchestrator.remove_networks(self.labels())  # the queue network, once its containers are gone
        else:
            docker_note = "Docker daemon unreachable: nothing removed from Docker"
        entities = len(self._store.list_images()) + len(self._store.list_containers())
        results = self._resets.run()
        revoked = results.get("auth", 0)
        log.info("reset: %d entities, %d containers, %d images removed, %d container tokens revoked", entities,
                 removed_containers, removed_images, revoked)
        report: dict = {"entities": entities, "containers": removed_containers, "images": removed_images,
                        "docker": docker_note}
        if "failed" in results:
            report["failed"] = results["failed"]  # logged with their tracebacks; the other resets still ran
        return report
