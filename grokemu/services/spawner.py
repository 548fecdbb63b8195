"""grok_spawner's part (placeholder until the spawner issue lands): containers stay stopped."""
from __future__ import annotations

from grokemu.domain.model import DockerContainer, DockerImage


class Spawner:
    def __init__(self, store, orchestrator, clock, settings, auth):
        self._store = store

    def tick(self) -> None:
        pass

    def image_ready(self, image: DockerImage) -> None:
        pass

    def forget(self, container: DockerContainer) -> None:
        self._store.delete_container(container.id)
