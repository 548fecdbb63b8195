"""One scheduler for all background work (docs/design.md decision 6).

Jobs are plain callables run in order on each pass. In production a daemon thread runs a pass every `interval`
seconds; tests call `run_once()` after moving the clock, so nothing in a test waits on wall time.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from grokemu.domain.clock import Clock
from grokemu.domain.errors import disk_full

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, clock: Clock, interval: float = 0.2):
        self._clock = clock
        self._interval = interval
        self._jobs: list[tuple[str, Callable[[], None]]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiting_for_disk: set[str] = set()  # jobs whose last pass met a full disk (logged once)
        self.passes = 0  # completed passes: the signed-in health shows it, so a test can wait for a step, not a time

    def add(self, name: str, job: Callable[[], None]) -> None:
        self._jobs.append((name, job))

    def run_once(self) -> None:
        for name, job in self._jobs:
            try:
                job()
            except Exception as e:  # one failing job must not stop the others or the loop
                if disk_full(e) is None:
                    log.exception("background job %r failed", name)
                elif name not in self._waiting_for_disk:
                    # every pass retries it: one line until it gets through, not a traceback 5 times a second
                    self._waiting_for_disk.add(name)
                    log.error("background job %r waits for disk space under the data directory: %s", name, e)
                continue
            if name in self._waiting_for_disk:
                self._waiting_for_disk.discard(name)
                log.info("background job %r got through: there is disk space again", name)
        self.passes += 1

    def start(self) -> None:
        if self._thread:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="grokemu-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self._interval)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
            self._thread = None
