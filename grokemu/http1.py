"""HTTP/1.1 wire rules both the upstream adapter (adapters/http_upstream.py) and the server's relay loop
(server/relay_loop.py) follow: a leaf module, so the server does not import an adapter to read a container's answer.

Which headers are hop-by-hop, how a container's answer head parses and how its body is framed (length, chunked,
until close), with the connection's reuse.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

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


_NO_BODY_STATUS = ("1", "204", "304")  # 1xx, 204 and 304 answers never have a body (RFC 9112 §6.3)


class AnswerFraming(NamedTuple):
    head: bytes  # the status line and header lines, with the blank line
    length: int | None  # Content-Length, or None: chunked, or until close
    chunked: bool
    no_body: bool  # HEAD, 1xx, 204, 304
    keep: bool  # the connection stays open after this answer


def frame_answer(version: str, status: str, headers: list[tuple[str, str]], method: str, keep: bool,
                 sized_body: Sequence[bytes] | None, server: str, date: Callable[[], str]) -> AnswerFraming:
    """How an answer the WSGI app gave is framed on the wire, as waitress frames it: Content-Length kept (or
    counted from a body given whole, `sized_body`), chunked when unsized on a connection that stays open, else
    `Connection: close`; Server and Date added when the app set none."""
    length = None
    has_date = has_server = False
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            length = int(value)
        elif lower == "date":
            has_date = True
        elif lower == "server":
            has_server = True
        elif lower == "connection" and value.lower() == "close":
            keep = False
    no_body = method == "HEAD" or status.startswith(_NO_BODY_STATUS)
    if length is None and not no_body and sized_body is not None:
        length = sum(len(b) for b in sized_body)
        headers = headers + [("Content-Length", str(length))]
    chunked = length is None and not no_body and keep
    lines = [f"HTTP/{version} {status}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if not has_server:
        lines.append(f"Server: {server}")
    if not has_date:
        lines.append(f"Date: {date()}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if not keep:
        lines.append("Connection: close")
    return AnswerFraming(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), length, chunked, no_body, keep)


def raw_answer(status: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A whole answer on a connection that closes after it (a refusal, an error answer the server writes itself):
    the status line, `headers` but the framing ones, Content-Length and `Connection: close`, then the body."""
    skip = {"connection", "content-length", "transfer-encoding", "keep-alive"}
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
