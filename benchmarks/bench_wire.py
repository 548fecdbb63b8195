"""Container answer heads: grokemu's own parser (http1.parse_response_head + response_framing) against httptools'
response parser, and what the relay loop pays per request once it has seen a head (issue 19 item 2: httptools for
container answers "where it measures as fast").

    python benchmarks/bench_wire.py [--n 100000]

In process, one thread, a typical small answer head (5 headers, as Python's http.server sends them) and its body.
It prints microseconds per head for each way and the ratio, then the relay loop's cost for a head it already parsed
(server/relay_container.py `_cached_caller_head`: a container repeats its heads byte for byte within a second, so
the loop parses a head once per distinct head and second and looks it up otherwise). Numbers are printed whether or
not they favour a change.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grokemu.http1 import parse_response_head, response_framing  # noqa: E402
from grokemu.server.relay_container import _ContainerSide  # noqa: E402

HEAD = (b"HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.12.3\r\nDate: Thu, 04 Dec 2026 04:00:00 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: 16\r\nX-Request-Id: 5f1c")
BODY = b'{"result": "ok"}'


class _Headers:
    """httptools' callbacks, collecting what grokemu needs of a head: its header pairs."""

    __slots__ = ("pairs", "complete")

    def __init__(self) -> None:
        self.pairs: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.pairs.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


def per_call_us(work, n: int) -> float:
    work()
    start = time.perf_counter()
    for _ in range(n):
        work()
    return (time.perf_counter() - start) / n * 1e6


def ours() -> None:
    status, reason, version, raw = parse_response_head(HEAD)
    response_framing(version, raw)


def theirs() -> None:
    sink = _Headers()
    parser = httptools.HttpResponseParser(sink)
    parser.feed_data(HEAD + b"\r\n\r\n" + BODY)
    parser.get_status_code()
    parser.should_keep_alive()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    side = _ContainerSide.__new__(_ContainerSide)  # only its head cache is used
    side._caller_heads = {}
    a, b = per_call_us(ours, args.n), per_call_us(theirs, args.n)
    cached = per_call_us(lambda: side._cached_caller_head(HEAD, False, True), args.n)
    print(f"answer head, 5 headers: http1 parse_response_head + response_framing {a:.2f} us, "
          f"httptools HttpResponseParser {b:.2f} us: httptools/http1 {b / a:.2f}")
    print(f"relay loop, a head seen before (its cache): {cached:.2f} us per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
