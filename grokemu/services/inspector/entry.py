"""One entry in a container's ring that is not a fetchProxy exchange (those are rings.Recording): a webSocketProxy
session, filled in by its WebSocketTap while it is open, or a finished queue-function call."""
from __future__ import annotations

from typing import Any, Protocol

from grokemu.services.inspector.preview import _preview


class _SessionFrames(Protocol):
    """What a WebSocket session adds to its entry (websocket.WebSocketTap; typed here so this module stays below
    the one that imports it)."""

    dropped: int

    def to_wire(self) -> dict[str, Any]: ...


class Entry:
    """One recorded exchange; immutable once in the ring, except a WebSocket session's while it is open."""

    __slots__ = ("seq", "time", "container", "kind", "method", "path", "status", "duration_ms", "cold_start_ms",
                 "request_headers", "response_headers", "request_body", "request_size", "request_cut",
                 "response_body", "response_size", "response_cut", "response_decoded", "error", "ws")

    def __init__(self, seq: int, time_: float, container: str, kind: str, method: str, path: str):
        self.seq = seq
        self.time = time_
        self.container = container
        self.kind = kind
        self.method = method
        self.path = path
        self.status: int | str | None = None
        self.duration_ms: float | None = None
        self.cold_start_ms: float | None = None
        self.request_headers: tuple = ()
        self.response_headers: tuple = ()
        self.request_body: bytes = b""
        self.request_size = 0
        self.request_cut = False  # the preview is not the whole body
        self.response_cut = False
        self.response_body: bytes | None = b""  # None: an encoding grokemu does not decode (no preview)
        self.response_size = 0
        self.response_decoded: str | None = None  # the Content-Encoding decoded for the preview
        self.error: str | None = None  # grokemu's own failure (no answer from the container)
        self.ws: _SessionFrames | None = None

    def to_wire(self) -> dict[str, Any]:
        request_body = _preview(self.request_body)
        response_body = _preview(self.response_body) if self.response_body is not None else \
            {"encoding": None, "data": None}
        out: dict[str, Any] = {
            "id": self.seq, "time": self.time, "container": self.container, "kind": self.kind,
            "method": self.method, "path": self.path, "status": self.status, "durationMs": self.duration_ms,
            "coldStartMs": self.cold_start_ms,
            "requestHeaders": [list(h) for h in self.request_headers],
            "responseHeaders": [list(h) for h in self.response_headers],
            "requestBody": request_body["data"], "requestBodyEncoding": request_body["encoding"],
            "requestSize": self.request_size,
            "responseBody": response_body["data"], "responseBodyEncoding": response_body["encoding"],
            "responseSize": self.response_size, "responseDecoded": self.response_decoded,
            "truncated": self.request_cut or self.response_cut,
            "error": self.error,
        }
        if self.ws is not None:
            out.update(self.ws.to_wire())
            out["truncated"] = out["truncated"] or self.ws.dropped > 0
        return out
