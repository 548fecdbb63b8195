"""The frames of one webSocketProxy session (services/inspector/), read off the bytes the relay passes each way."""
from __future__ import annotations

import time
from typing import Any, Protocol

from grokemu.domain.redaction import Redactor
from grokemu.services.inspector.entry import Entry
from grokemu.services.inspector.preview import _preview

MAX_FRAMES = 100  # WebSocket frames listed per session (all are counted)
FRAME_PREVIEW = 256  # bytes of each listed frame's payload
_OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}

_mono = time.monotonic


class _Ring(Protocol):
    """What a tap needs of the RequestInspector (rings.py, which imports this module, not the other way round)."""

    redactor: Redactor

    def touched(self, cid: str) -> None: ...



class WebSocketTap:
    """Frames of one webSocketProxy session, read off the bytes the relay passes each way (it never re-frames
    them): counts and sizes for every frame, the first MAX_FRAMES listed with a scrubbed preview of their payload,
    and the close code. Each direction is parsed by its own pump thread; the list is shared."""

    def __init__(self, inspector: _Ring, entry: Entry, secrets: tuple[bytes, ...]):
        self._inspector = inspector
        self._entry = entry
        self._secrets = secrets
        self._started = _mono()
        self.frames: list[dict[str, Any]] = []
        self.dropped = 0
        self.counts = {"sent": 0, "received": 0}
        self.close_code: int | None = None
        self.closed_by: str | None = None
        self.open = True
        self._sent = _FrameParser(self, "sent")  # caller -> container (masked)
        self._received = _FrameParser(self, "received")  # container -> caller

    def from_caller(self, data: bytes) -> None:
        self._entry.request_size += len(data)
        self._sent.feed(data)

    def from_container(self, data: bytes) -> None:
        self._entry.response_size += len(data)
        self._received.feed(data)

    def frame(self, direction: str, opcode: int, size: int, payload: bytes) -> None:
        self.counts[direction] += 1
        if opcode == 8 and self.close_code is None:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.closed_by = "caller" if direction == "sent" else "container"
        if len(self.frames) >= MAX_FRAMES:
            self.dropped += 1
            return
        preview = self._inspector.redactor.scrub(payload[:FRAME_PREVIEW], self._secrets, cut=size > FRAME_PREVIEW)
        shown = _preview(preview)
        self.frames.append({"direction": direction, "opcode": _OPCODES.get(opcode, str(opcode)), "size": size,
                            "data": shown["data"], "encoding": shown["encoding"]})
        self._inspector.touched(self._entry.container)

    def refused(self, status: int, message: str) -> None:
        """The container did not accept the upgrade: the session never opened."""
        self._entry.status = status
        self.close(message)

    def close(self, error: str | None = None) -> None:
        self.open = False
        self._entry.duration_ms = round((_mono() - self._started) * 1000, 3)
        if error:
            self._entry.error = self._inspector.redactor.text(error, self._secrets)
        self._inspector.touched(self._entry.container)

    def to_wire(self) -> dict[str, Any]:
        return {"open": self.open, "frames": list(self.frames), "framesSent": self.counts["sent"],
                "framesReceived": self.counts["received"], "closeCode": self.close_code, "closedBy": self.closed_by}


class _FrameParser:
    """Incremental RFC 6455 frame reader: keeps the header bytes and at most FRAME_PREVIEW payload bytes of the frame
    it is in; the rest of a payload is skipped by counting."""

    __slots__ = ("tap", "direction", "head", "opcode", "size", "mask", "payload", "left")

    def __init__(self, tap: WebSocketTap, direction: str):
        self.tap = tap
        self.direction = direction
        self.head = b""
        self.left = -1  # payload bytes still to come; -1: reading a header
        self.opcode = 0
        self.size = 0
        self.mask = b""
        self.payload = bytearray()

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self.left < 0:
                before = len(self.head)
                self.head += data[i:i + 14 - before]
                pos = self._header()
                if pos < 0:
                    return  # the header goes on in the next chunk (all of this one is in self.head)
                i += pos - before
                continue
            take = min(self.left, n - i)
            room = FRAME_PREVIEW - len(self.payload)
            if room > 0:
                self.payload += data[i:i + min(take, room)]
            self.left -= take
            i += take
            if self.left == 0:
                self._done()

    def _header(self) -> int:
        """The length of the frame header at the start of self.head, or -1 while it is incomplete."""
        h = self.head
        if len(h) < 2:
            return -1
        length, pos = h[1] & 0x7F, 2
        if length == 126:
            if len(h) < 4:
                return -1
            length, pos = int.from_bytes(h[2:4], "big"), 4
        elif length == 127:
            if len(h) < 10:
                return -1
            length, pos = int.from_bytes(h[2:10], "big"), 10
        if h[1] & 0x80:
            if len(h) < pos + 4:
                return -1
            self.mask, pos = h[pos:pos + 4], pos + 4
        else:
            self.mask = b""
        self.opcode, self.size, self.left = h[0] & 0x0F, length, length
        self.payload = bytearray()
        self.head = b""
        if length == 0:
            self._done()
        return pos

    def _done(self) -> None:
        payload = bytes(self.payload)
        if self.mask:
            payload = _unmask(payload, self.mask)
        self.tap.frame(self.direction, self.opcode, self.size, payload)
        self.left = -1
        self.payload = bytearray()


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    key = int.from_bytes((mask * (len(data) // 4 + 1))[:len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")
