"""Answer heads and bodies as the relay loop passes them on (server/relay_loop.py): a container's answer head
re-written for the caller with the framing its body goes on with (`_caller_head`). Where a chunked body ends is
http1.ChunkedDecoder's."""
from __future__ import annotations

import enum

from grokemu.http1 import HOP_BY_HOP, parse_response_head, response_framing


class Framing(str, enum.Enum):
    """How the loop passes an answer's body on to the caller. A str, so it reads as its name in logs and tests."""

    LENGTH = "length"  # Content-Length bytes, counted
    CHUNKED = "chunked"  # passed through chunk for chunk (http1.ChunkedDecoder finds the end)
    CLOSE = "close"  # the body ends with the container's close: re-framed as chunked, the caller's connection kept
    NONE = "none"  # no body (HEAD, 204, 304, 1xx)


LENGTH, CHUNKED, CLOSE, NONE = Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE, Framing.NONE


class _CallerHead:
    """A container's answer head as the caller gets it, with the framing its body is passed on with (_caller_head)."""

    __slots__ = ("status", "informational", "framing", "length", "keep_up", "head", "headers", "recorded")

    def __init__(self, status: int, informational: bool, framing: Framing, length: int, keep_up: bool, head: bytes,
                 headers: tuple = ()):
        self.headers = headers  # (name, value) as the caller gets them, for the request inspector
        self.recorded: tuple | None = None  # the inspector's redacted view of them, worked out once (_record_head)
        self.status = status
        self.informational = informational
        self.framing = framing
        self.length = length
        self.keep_up = keep_up  # the container's connection can be reused after this answer
        self.head = head


def _caller_head(raw_head: bytes, head_method: bool, keep: bool, date: str) -> _CallerHead:
    """The caller's head for a container's answer head (status line and headers, no blank line): hop-by-hop headers
    and those named in Connection dropped, Server and Date added when missing, the framing the loop passes the body
    on with, and Connection: close when the caller does not keep the connection. ConnectionError: not HTTP, or an
    invalid Content-Length."""
    status, reason, version, raw = parse_response_head(raw_head)
    if 100 <= status < 200:
        return _CallerHead(status, True, NONE, 0, False, b"")
    length, chunked, keep_up = response_framing(version, raw)
    named = {t.strip().lower() for k, v in raw if k.lower() == "connection" for t in v.split(",")}
    lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
    has_server = has_date = False
    for name, value in raw:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or (chunked and lower == "content-length"):
            continue
        if lower == "server":
            has_server = True
        elif lower == "date":
            has_date = True
        lines.append(f"{name}: {value}")
    if not has_server:
        lines.append("Server: grokemu")
    if not has_date:
        lines.append(f"Date: {date}")
    if head_method or status in (204, 304):
        framing = NONE
    elif chunked:
        framing = CHUNKED
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        framing = LENGTH
    else:  # the body ends when the container closes: re-framed as chunked, the caller's connection kept
        framing = CLOSE
        keep_up = False
        lines.append("Transfer-Encoding: chunked")
    if not keep:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    headers = tuple(tuple(line.split(": ", 1)) for line in lines[1:])
    return _CallerHead(status, False, framing, length or 0, keep_up, head, headers)
