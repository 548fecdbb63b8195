"""An in-memory Broker (the port of domain/ports.py) for the integration suite: records what grokemu publishes
and lets a test speak as the worker (`emit`). The real broker and worker are exercised by tests/e2e."""
from __future__ import annotations

import threading


class FakeBroker:
    def __init__(self, url: str = ""):
        self.url = url
        self.published: list[dict] = []
        self.revoked: list[str] = []
        self.queues: dict[str, int] = {}  # queue → consumers
        self.handler = None
        self.closed = False
        self._lock = threading.Lock()

    def publish_task(self, queue, task, call_id, call):
        with self._lock:
            self.published.append({"queue": queue, "task": task, "id": call_id, "call": call})

    def revoke(self, call_id):
        self.revoked.append(call_id)

    def consumers(self, queue):
        return self.queues.get(queue, 0)

    def listen(self, handler):
        self.handler = handler

    def wait_listening(self, timeout):
        return self.handler is not None

    def close(self):
        self.closed = True

    def emit(self, call_id, kind, body):
        self.handler(call_id, kind, body)


class ListChannel:
    """A FrameChannel that keeps what it was sent."""

    def __init__(self):
        self.frames: list = []
        self.gone = False

    def send_text(self, text):
        if self.gone:
            raise OSError("gone")
        self.frames.append(text)

    def send_binary(self, data):
        if self.gone:
            raise OSError("gone")
        self.frames.append(bytes(data))

    def texts(self, verb=""):
        return [f for f in self.frames if isinstance(f, str) and f.split(" ", 1)[-1].startswith(verb)]
