"""What admin reset empties, as a registry every stateful service is added to (moto's reset of every backend).

The composition root (app.py) adds each service right where it builds it, as it adds background jobs to the
scheduler, and tests/unit/test_resets.py fails when a service with a `reset` method is built but not added: a new
stateful service cannot be forgotten by reset (the bug that test_reset.py records: the proxy kept serving a
container reset had deleted).

Order is by stage, then by the order of adding:
- CALLERS: whoever waits on grokemu gets an answer first (queue calls end in Error before their workers go);
- STATE: the stored state (the store, package files, registry blobs, signing state, image queue);
- READERS: last, what caches or reads that state (the spawner's generation, the proxy's started-cache), so no
  reader keeps a container from before the reset.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from enum import IntEnum

log = logging.getLogger(__name__)


class ResetStage(IntEnum):
    CALLERS = 0
    STATE = 1
    READERS = 2


class Resets:
    def __init__(self) -> None:
        self._entries: list[tuple[ResetStage, int, str, Callable[[], object]]] = []
        self._owners: set[int] = set()  # id() of each service added, for `covers`

    def add(self, name: str, service: object, stage: ResetStage) -> None:
        """`service.reset()` runs at `stage`; whatever it returns is reported under `name`."""
        reset = getattr(service, "reset", None)
        if not callable(reset):
            raise TypeError(f"{name}: {type(service).__name__} has no reset()")
        self._entries.append((stage, len(self._entries), name, reset))
        self._owners.add(id(service))

    def covers(self, service: object) -> bool:
        return id(service) in self._owners

    @property
    def names(self) -> list[str]:
        return [name for _, _, name, _ in sorted(self._entries, key=lambda e: e[:2])]

    def run(self) -> dict[str, object]:
        """Every reset, in order; a failing one is logged and the rest still run (a half reset is worse)."""
        results: dict[str, object] = {}
        failed: list[str] = []
        for _, _, name, reset in sorted(self._entries, key=lambda e: e[:2]):
            try:
                results[name] = reset()
            except Exception:
                log.exception("reset of %s failed", name)
                failed.append(name)
        if failed:
            results["failed"] = failed
        return results
