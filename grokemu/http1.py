"""HTTP/1.1 wire rules both the upstream adapters (adapters/http_upstream.py, adapters/lean_upstream.py) and the
server (server/relay_loop.py, server/relay.py) follow: a leaf module, so the server does not import an adapter to read
a container's answer.

Which headers are hop-by-hop, how a container's answer head parses and how its body is framed (length, chunked,
until close), with the connection's reuse; the one chunked decoder; the one stale-socket retry rule; the sizes the
readers share.
"""
from __future__ import annotations

from collections.abc import Iterable

RECV = 256 * 1024  # bytes asked of a socket at once by the relays
MAX_ANSWER_HEAD = 256 * 1024  # a container's answer head over this is refused (502)
MAX_CHUNK_LINE = 4096  # a chunk-size or trailer line over this is a broken answer
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})  # the methods replayed once on a stale kept-alive socket

# RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy Proxy-Connection; Host is set for the upstream hop.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "proxy-connection"})


def parse_response_head(head: bytes) -> tuple[int, str, str, list[tuple[str, str]]]:
    """(status, reason, version, headers) of a container's answer head (without its blank line); ConnectionError
    when it is not HTTP."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise ConnectionError(f"the container's answer is not HTTP: {lines[0][:80]!r}")
    raw: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and raw:  # obsolete line folding
            raw[-1] = (raw[-1][0], raw[-1][1] + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            raw.append((name.strip(), value.strip()))
    return int(code), reason, version, raw


def response_framing(version: str, raw: list[tuple[str, str]]) -> tuple[int | None, bool, bool]:
    """(Content-Length or None, chunked, whether the connection can be reused) of a container's answer head.
    ConnectionError (a broken answer) on a Content-Length that is not a number."""
    keep = version == "HTTP/1.1"
    length = None
    chunked = False
    for name, value in raw:
        lower = name.lower()
        if lower == "content-length":
            if not (value.isascii() and value.isdigit()):
                raise ConnectionError(f"the container's answer has an invalid Content-Length {value[:40]!r}")
            length = int(value)
        elif lower == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif lower == "connection":
            tokens = value.lower()
            if "close" in tokens:
                keep = False
            elif "keep-alive" in tokens and version == "HTTP/1.0":
                keep = True
    return length, chunked, keep


def retry_on_stale(method: str, reused: bool, answered_bytes: int) -> bool:
    """Whether a request whose upstream socket failed is sent once more on a fresh one: only when the socket was a
    kept-alive one (the container closed it while it sat idle), nothing of the answer came back, and the method is
    idempotent (bodies are never replayed: their senders do not call this). Callers retry at most once."""
    return reused and not answered_bytes and method in IDEMPOTENT


_HEX = b"0123456789abcdefABCDEF"


class ChunkedDecoder:
    """An incremental decoder of a chunked body (RFC 9112 §7.1), fed the bytes as they arrive: `feed` says where the
    body ends (trailers included), so a relay can pass the bytes through unchanged, and, given a list, appends the
    chunks' data to it. Strict chunk sizes (hex digits only: int() would take "-5", "0x5" and "1_0"), lines up to
    MAX_CHUNK_LINE bytes; the CRLF after a chunk's data is skipped unread, a bare LF ends a line."""

    __slots__ = ("state", "left", "line")

    def __init__(self):
        self.state = "size"  # "size": in a chunk-size line; "data": `left` bytes of data + CRLF; "trailer"
        self.left = 0
        self.line = b""

    def feed(self, data: bytes, out: list[bytes] | None = None) -> int:
        """The number of bytes of `data` that belong to the body; -1 while the body goes on past `data`. The data
        of the chunks goes to `out` when given. ValueError on a malformed body (what came before it is in `out`)."""
        i, n = 0, len(data)
        while i < n:
            if self.state == "data":
                take = min(self.left, n - i)
                if out is not None and self.left > 2:  # the chunk's data, without its CRLF
                    stop = i + min(take, self.left - 2)
                    if stop > i:
                        out.append(data[i:stop])
                self.left -= take
                i += take
                if self.left == 0:
                    self.state = "size"
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self.line += data[i:]
                if len(self.line) > MAX_CHUNK_LINE:
                    raise ValueError("a chunk line is too long")
                return -1
            line, self.line = (self.line + data[i:end]).rstrip(b"\r"), b""
            i = end + 1
            if self.state == "size":
                digits = line.split(b";", 1)[0].strip(b" \t")
                if not digits or digits.strip(_HEX):
                    raise ValueError(f"invalid chunk size {digits[:20]!r}")
                size = int(digits, 16)
                if size == 0:
                    self.state = "trailer"
                else:
                    self.state, self.left = "data", size + 2  # the data and its CRLF
            elif not line:  # the empty line after the trailers: the end
                return i
        return -1


def dechunk_preview(data: bytes) -> bytes:
    """The data of a chunked body's first bytes, as far as they go: stops quietly at the first malformed or missing
    byte (a preview of a body cut short, for the request inspector)."""
    out: list[bytes] = []
    try:
        ChunkedDecoder().feed(data, out)
    except ValueError:
        pass
    return b"".join(out)


def raw_answer(status: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A whole answer on a connection that closes after it (a refusal, an error answer the server writes itself):
    the status line, `headers` but the framing ones, Content-Length and `Connection: close`, then the body."""
    skip = {"connection", "content-length", "transfer-encoding", "keep-alive"}
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
