"""Fuzzing request heads on a connection in the relay loop (server/relay_loop.py): whatever method, path, version and
headers arrive, the caller gets an HTTP answer below 500 (from the container, or grokemu's 4xx), never a hang or
a dropped connection without an answer, the loop serves on, and nothing stays held (no idle hold, no stream slot).
A credential is sent in half the examples, so the guard's refusals are fuzzed too."""
from __future__ import annotations

import socket
import time

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.fake_upstream import proxy_url
from tests.helpers import fast_containers, relayed

FUZZ = hsettings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# anything but CR and LF, which would end the head or the line early (a different request, not a stranger one)
FIELD = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=30).map(str.encode)
METHODS = st.sampled_from([b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"POST", b"PUT", b"PATCH", b"TRACE", b"get",
                           b"CONNECT", b"BREW", b""])
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.10", b"HTTX/1.1", b""])
SPECIAL = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade",
                           b"Expect", b"Origin", b"Cookie", b"Authorization", b"Sec-Fetch-Site", b"X-Forwarded-For",
                           b"X-User-Api-Key", b"Te", b"Keep-Alive"])


def _read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends for one request head until it has sent a whole head, or closed."""
    data = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@FUZZ
@given(method=METHODS, suffix=FIELD, version=VERSIONS,
       headers=st.lists(st.tuples(st.one_of(SPECIAL, TOKEN, FIELD), FIELD), max_size=8),
       authenticated=st.booleans())
def test_random_request_heads_on_a_relayed_connection(live, method, suffix, version, headers, authenticated):
    up, (cid,) = fast_containers(live, 1)
    try:
        sock, _ = relayed(live, cid)
        target = proxy_url(cid, "/fz/").encode() + suffix.replace(b" ", b"%20")
        lines = [method + b" " + target + b" " + version, b"Host: " + live.host.encode()]
        if authenticated:
            lines.append(b"Authorization: " + live.token.encode())
        lines += [name + b": " + value for name, value in headers]
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        answer = _read_answer(sock)
        assert answer.startswith(b"HTTP/1."), answer[:200]
        status = int(answer.split(b" ", 2)[1])
        assert 100 <= status < 500, answer[:1000]
        sock.close()
        activity, streams = live.ctx.activity, live.takeover.streams
        deadline = time.monotonic() + 5
        while (activity.active(cid) or streams.busy) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert activity.active(cid) == 0 and streams.busy == 0
    finally:
        up.close()
