"""Watchdogs over connections taken from waitress (server/takeover.py): a TrackedSocket is cut when an operation on
it waits too long without progress, so no caller that stops sending or reading can hold a thread forever."""
from __future__ import annotations

import logging
import socket
import threading
import time

log = logging.getLogger("grokemu.server")

WATCHDOG_TICK = 0.25  # seconds between watchdog passes over the connections taken from waitress


class _Watchdog:
    """One thread for the whole process: every TrackedSocket with an operation outstanding longer than its timeout
    without progress is shut down, which wakes up (with an error or EOF) whichever thread is blocked on it."""

    def __init__(self):
        self._sockets: set[TrackedSocket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, sock: TrackedSocket) -> None:
        with self._lock:
            self._sockets.add(sock)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="grokemu-watchdog", daemon=True)
                self._thread.start()

    def unwatch(self, sock: TrackedSocket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_TICK)
            now = time.monotonic()
            with self._lock:
                stalled = [s for s in self._sockets if s.stalled(now)]
            for s in stalled:
                s.cut()


WATCHDOG = _Watchdog()


class TrackedSocket(socket.socket):
    """A blocking socket that records progress: it is cut when an operation on it (a recv, a send) has waited
    `timeout` seconds since the last one started or moved bytes. `what` names it in the log.

    No lock on the hot path (a WebSocket relay calls it per frame): receiving and sending are counted apart, each
    by the one thread that receives or sends, and the time of the last event is a plain attribute store."""

    def __init__(self, fileno: int, timeout: float, what: str):
        super().__init__(fileno=fileno)
        self.setblocking(True)
        self.watch_timeout = timeout
        self.what = what
        self._receiving = 0
        self._sending = 0
        self._last = _now()
        self.was_cut = False
        WATCHDOG.watch(self)

    def stalled(self, now: float) -> bool:
        return bool(self._receiving or self._sending) and now - self._last > self.watch_timeout

    def cut(self) -> None:
        if self.was_cut:
            return
        self.was_cut = True
        log.info("closing %s: nothing moved for %g s", self.what, self.watch_timeout)
        try:
            socket.socket.shutdown(self, socket.SHUT_RDWR)
        except OSError:
            pass

    def recv(self, *args):
        self._receiving += 1
        self._last = _now()
        try:
            return _recv(self, *args)
        finally:
            self._receiving -= 1
            self._last = _now()

    def recv_into(self, *args):
        self._receiving += 1
        self._last = _now()
        try:
            return _recv_into(self, *args)
        finally:
            self._receiving -= 1
            self._last = _now()

    def send(self, *args):
        self._sending += 1
        self._last = _now()
        try:
            return _send(self, *args)
        finally:
            self._sending -= 1
            self._last = _now()

    def sendall(self, data, flags: int = 0) -> None:
        # send() by send(): every partial write counts as progress, so a slow reader is not cut, a stopped one is
        sent = self.send(data, flags)
        if sent < len(data):
            view = memoryview(data).cast("B")[sent:]
            while view:
                view = view[self.send(view, flags):]

    def close(self) -> None:
        WATCHDOG.unwatch(self)
        super().close()


_now = time.monotonic
_recv, _recv_into, _send = socket.socket.recv, socket.socket.recv_into, socket.socket.send
