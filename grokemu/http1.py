"""HTTP/1.1 wire rules both the upstream adapter (adapters/http_upstream.py) and the server's relay loop
(server/relay_loop.py) follow: a leaf module, so the server does not import an adapter to read a container's answer.

Which headers are hop-by-hop, how a container's answer head parses and how its body is framed (length, chunked,
until close), with the connection's reuse.
"""
from __future__ import annotations

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
