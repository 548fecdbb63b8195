"""Container activity: when a container was last used and whether something is using it right now.

The proxy touches a container on every request and holds it while a WebSocket is open or a streamed response is
unfinished; the spawner reads the tracker to write `lastActive` and to decide idle shutdown. Kept apart from the
spawner's start/stop driving: activity is in memory only, and the spawner flushes it to the store on its tick.
A held container is never idle, so the idle clock never stops a container mid-use (Sablier #576 is that bug).
"""
from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from grokemu.domain.clock import Clock


class ActivityTracker:
    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._active: Counter[str] = Counter()  # open WebSockets / unfinished streamed responses
        self._touched: dict[str, float] = {}  # last activity, by container id (clock time)

    def touch(self, cid: str) -> None:
        self._touched[cid] = self._clock.now()

    @contextmanager
    def hold(self, cid: str) -> Iterator[None]:
        """An open WebSocket or an unfinished streamed response: activity for as long as it lasts."""
        with self._lock:
            self._active[cid] += 1
        self.touch(cid)
        try:
            yield
        finally:
            with self._lock:
                self._active[cid] -= 1
                if self._active[cid] <= 0:
                    del self._active[cid]
            self.touch(cid)

    def last_active(self, cid: str) -> float | None:
        """When the container was last touched, or None when never (since the start or the last reset)."""
        return self._touched.get(cid)

    def active(self, cid: str) -> int:
        """How many holds are open on the container."""
        return self._active.get(cid, 0)

    def is_idle(self, cid: str, since: float, shutdown_minutes: float | None, now: float) -> bool:
        """Idle shutdown is due: a `shutdown_timeout` is set, nothing holds the container, and neither `since` (the
        latest activity the caller knows of: the stored lastActive, the status change) nor a touch is within it."""
        if shutdown_minutes is None or self.active(cid) > 0:
            return False
        last = max(since, self._touched.get(cid, 0))
        return now - last >= float(shutdown_minutes) * 60

    def forget(self, cid: str) -> None:
        with self._lock:
            self._active.pop(cid, None)
        self._touched.pop(cid, None)

    def reset(self) -> None:
        """Admin reset: no container is touched or held any more (a hold still open releases harmlessly)."""
        with self._lock:
            self._active.clear()
        self._touched.clear()
