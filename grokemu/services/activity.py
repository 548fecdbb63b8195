"""Container activity: when a container was last used and whether something is using it right now.

The proxy touches a container on every request and holds it while a WebSocket is open or a streamed response is
unfinished; the spawner reads the tracker to write `lastActive` and to decide idle shutdown. Kept apart from the
spawner's start/stop driving: activity is in memory only, and the spawner flushes it to the store on its tick.
A held container is never idle, so the idle clock never stops a container mid-use (Sablier #576 is that bug).

It also keeps what the dashboard shows beyond Datagrok's view: per-container proxy numbers (requests
answered, the last one's status and time, the last cold start), and a subscriber list told whenever a container,
an image or those numbers change (the spawner's `_notify`, the image status writes, the proxy), so the live feed
(web/dashboard.py) pushes updates instead of polling. Subscribers must be quick and must not raise.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from grokemu.domain.clock import Clock


@dataclass(frozen=True)
class ProxyStats:
    """What fetchProxy saw of one container since grokemu started (or the last reset)."""

    requests: int = 0
    last_status: int | None = None
    last_at: float | None = None  # clock time the last request was answered
    last_cold_start_ms: float | None = None  # the last request that had to wait for a start

    def to_wire(self) -> dict:
        return {"requests": self.requests, "lastStatus": self.last_status, "lastAt": self.last_at,
                "lastColdStartMs": self.last_cold_start_ms}


class ActivityTracker:
    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._active: Counter[str] = Counter()  # open WebSockets / unfinished streamed responses
        self._touched: dict[str, float] = {}  # last activity, by container id (clock time)
        self._stats: dict[str, ProxyStats] = {}
        self._subscribers: list[Callable[[str], None]] = []
        self._forgetters: list[Callable[[str], None]] = []  # told when a container is deleted (the inspector)

    # -- change notification (the dashboard's live feed) ---------------------------------------------------------
    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(kind)` ("container", "image", "stats") on every change; returns the unsubscriber."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    def changed(self, kind: str) -> None:
        """A container, an image or the proxy numbers changed: tell the subscribers (never raises)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(kind)
            except Exception:  # a subscriber's bug must not break a status write
                pass

    # -- proxy numbers ---------------------------------------------------------------------------------------------
    def record_request(self, cid: str, status: int, cold_start_ms: float | None) -> None:
        """fetchProxy answered a request for the container (services/proxy.py, where the answer is returned)."""
        with self._lock:
            old = self._stats.get(cid, ProxyStats())
            self._stats[cid] = ProxyStats(
                requests=old.requests + 1, last_status=status, last_at=self._clock.now(),
                last_cold_start_ms=old.last_cold_start_ms if cold_start_ms is None else round(cold_start_ms, 1))
        self.changed("stats")

    def stats(self, cid: str) -> ProxyStats:
        return self._stats.get(cid, ProxyStats())

    def touch(self, cid: str) -> None:
        self._touched[cid] = self._clock.now()

    @contextmanager
    def hold(self, cid: str) -> Iterator[None]:
        """An open WebSocket or an unfinished streamed response: activity for as long as it lasts."""
        self.begin_hold(cid)
        try:
            yield
        finally:
            self.end_hold(cid)

    def begin_hold(self, cid: str) -> None:
        """`hold` without a with-block (the relay loop's requests end in a callback); end_hold ends it."""
        with self._lock:
            self._active[cid] += 1
        self.touch(cid)

    def end_hold(self, cid: str) -> None:
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

    def on_forget(self, callback: Callable[[str], None]) -> None:
        """Call `callback(cid)` when a container is deleted (what else keeps per-container memory drops it)."""
        self._forgetters.append(callback)

    def forget(self, cid: str) -> None:
        with self._lock:
            self._active.pop(cid, None)
            self._stats.pop(cid, None)
        self._touched.pop(cid, None)
        for callback in self._forgetters:
            callback(cid)

    def reset(self) -> None:
        """Admin reset: no container is touched or held any more (a hold still open releases harmlessly)."""
        with self._lock:
            self._active.clear()
            self._stats.clear()
        self._touched.clear()
