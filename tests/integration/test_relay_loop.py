"""The relay loop (server/relay_loop.py, issue 14) on the real server: what a caller sees on one keep-alive
connection once the connection lives in the loop and the loop forwards its requests itself. Covered: answer framings
(chunked with a trailer, ended by the container's close, HEAD / 204 / 304, streamed as it comes), headers both ways,
kept-alive upstream sockets and a container closing them, a container that is slow, hangs up or is gone, the loop's
timeouts (partial head, idle connection, stalled answer), pipelining with and without hand-offs, a malformed head
handed to waitress's parser, a slow reader of a big answer; a head over waitress's header limit (431) and a caller
that half-closes after its request (answered), as waitress does.

Every test first sends two proxied requests on its connection (`relayed`: the cold start and one more, both served
by the blocking relay); `_loop_served` records the requests the loop then forwarded itself."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time

import pytest
from waitress.adjustments import Adjustments

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.app import create_app
from grokemu.bootstrap import create_server
from grokemu.server import bind
from grokemu.web import proxy
from tests.fake_upstream import CHUNKED_PIECES, UNTIL_CLOSE_PIECES, proxy_url
from tests.helpers import WARM_UP, Live, RawAnswers, connect_raw, fast_containers, raw_request, relayed

SHORT = {"header_timeout": 1.0, "channel_timeout": 2.0, "proxy_request_timeout": 1.5, "stream_timeout": 2.0}


@pytest.fixture
def quick(tmp_path, settings, clock):
    """The real server as `live`, with short timeouts (SHORT)."""
    app = create_app(dataclasses.replace(settings, threads=2, **SHORT), orchestrator=MemoryOrchestrator(),
                     clock=clock, background=True)
    sockets = bind("127.0.0.1", 0, [])
    server = create_server(app, sockets, threads=2, max_request_body_size=2**31,
                           streamed_prefixes=(proxy.HTTP_PREFIX,))
    threading.Thread(target=server.run, daemon=True).start()
    yield Live(app, f"127.0.0.1:{sockets[0].getsockname()[1]}", 0, server.application)
    server.close()


def _loop_served(server) -> list[str]:
    """The paths (PATH_INFO) of the requests the relay loop forwards itself from now on: those FastProxy.plan gave a
    plan for. The others are handed to the blocking relay."""
    loop = server.takeover.loop
    served, plan = [], loop._plan

    def recording(environ):
        planned = plan(environ)
        if planned is not None:
            served.append(environ["PATH_INFO"])
        return planned

    loop._plan = recording
    return served



def _idle_discards(server) -> list[int]:
    """The local ports of the watched idle upstream sockets the loop closes from now on (readable while idle: the
    container closed them, or their pool was closed)."""
    loop = server.takeover.loop
    ports, discard = [], loop._discard_idle

    def recording(up):
        with contextlib.suppress(OSError):
            ports.append(up.sock.getsockname()[1])
        discard(up)

    loop._discard_idle = recording
    return ports


@pytest.fixture
def looped(live):
    """A connection in the loop on `live` (`relayed`): (upstream, container id, the paths the loop forwarded from
    now on, socket, answers); closed afterwards."""
    yield from _looped(live)


@pytest.fixture
def quick_looped(quick):
    yield from _looped(quick)


def _looped(server):
    up, (cid,) = fast_containers(server, 1)
    try:
        served = _loop_served(server)
        sock, answers = relayed(server, cid)
        yield up, cid, served, sock, answers
        sock.close()
    finally:
        up.close()


def _get(server, cid: str, path: str, method: str = "GET", extra: str = "") -> bytes:
    return raw_request(server, proxy_url(cid, path), server.token, method=method, extra=extra)


def _closed_after(sock: socket.socket, since: float, limit: float) -> float:
    """Seconds from `since` until the server closed `sock` (recv returned b""), which must happen within `limit`
    seconds, with no byte before it."""
    sock.settimeout(max(0.1, since + limit - time.monotonic()))
    assert sock.recv(65536) == b""
    return time.monotonic() - since


def _api_error(answer) -> dict:
    body = json.loads(answer.body)
    assert body["#type"] == "ApiError", body
    return body


def _eventually(check, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)


# -- answer framings -------------------------------------------------------------------------------------------------
def test_chunked_answer_passes_through_with_its_trailer(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/chunked"))
    got = answers.read()
    assert got.status == 200 and got.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in got.headers and "connection" not in got.headers
    assert got.body == b"hello world" and got.raw == b"".join(CHUNKED_PIECES)  # byte for byte, trailer included
    sock.sendall(_get(live, a, "/next"))
    after = answers.read()
    assert after.status == 200 and json.loads(after.body) == {"path": "/next"}
    assert served == [proxy_url(a, "/chunked"), proxy_url(a, "/next")]
    sock.close()


def test_answer_ended_by_the_containers_close_is_rechunked_and_the_connection_kept(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/until-close"))
    got = answers.read()
    assert got.status == 200 and got.headers["transfer-encoding"] == "chunked"
    assert "connection" not in got.headers  # the container's close is not the caller's
    assert got.body == b"".join(UNTIL_CLOSE_PIECES)
    sock.sendall(_get(live, a, "/next"))
    after = answers.read()
    assert after.status == 200 and json.loads(after.body) == {"path": "/next"}
    assert served == [proxy_url(a, "/until-close"), proxy_url(a, "/next")]
    sock.close()


def test_head_204_and_304_carry_no_body_and_repeated_set_cookies_arrive(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/bytes/1234", method="HEAD"))
    head = answers.read(body=False)
    assert head.status == 200 and head.headers["content-length"] == "1234"
    for code in (204, 304):
        sock.sendall(_get(live, a, f"/status/{code}"))
        got = answers.read(body=False)
        assert got.status == code and got.headers["x-custom"] == "yes"
        assert [v for k, v in got.pairs if k == "set-cookie"] == ["a=1; Path=/", "b=2; Path=/"]
        assert "transfer-encoding" not in got.headers and "content-length" not in got.headers
    # a body byte after any of them would break this answer's status line
    sock.sendall(_get(live, a, "/next"))
    after = answers.read()
    assert after.status == 200 and json.loads(after.body) == {"path": "/next"}
    assert answers.buf == b""
    assert served == [proxy_url(a, p) for p in ("/bytes/1234", "/status/204", "/status/304", "/next")]
    sock.close()


def test_answer_bytes_are_passed_on_as_the_container_sends_them(live, looped):
    up, a, served, sock, answers = looped
    sock.settimeout(3)
    sock.sendall(_get(live, a, "/stream"))  # "first", then "second" once the gate opens
    while b"5\r\nfirst\r\n" not in answers.buf:
        answers._fill()  # arrives while the container still holds the rest back
    assert answers.buf.startswith(b"HTTP/1.1 200 ")
    up.gate.set()
    got = answers.read()
    assert got.status == 200 and got.body == b"firstsecond"
    sock.sendall(_get(live, a, "/next"))
    assert json.loads(answers.read().body) == {"path": "/next"}
    assert served == [proxy_url(a, "/stream"), proxy_url(a, "/next")]
    sock.close()


# -- headers both ways -----------------------------------------------------------------------------------------------
def test_hop_by_hop_headers_dropped_and_credentials_replaced_by_the_callers_identity(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/hop", extra=f"Cookie: auth={live.token}; theme=dark\r\n"
                                             "Connection: keep-alive, X-Private\r\nX-Private: secret\r\n"
                                             "X-Forwarded-For: 10.1.2.3\r\n"))
    got = answers.read()
    assert got.status == 200 and got.body == b"ok" and got.headers["x-kept"] == "1"
    assert {"connection", "x-secret", "keep-alive"}.isdisjoint(got.headers)
    assert served == [proxy_url(a, "/hop")]
    seen = up.last()
    assert seen["path"] == "/hop"
    sent = {k.lower(): v for k, v in seen["headers"]}
    assert "authorization" not in sent and "x-private" not in sent
    assert sent["cookie"] == "theme=dark"  # grokemu's auth cookie removed, the app's own kept
    assert sent["x-user-api-key"] == live.token
    assert sent["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert sent["host"] == f"127.0.0.1:{up.port}"
    sock.close()


def test_path_and_query_reach_the_container_as_encoded(live, looped):
    up, a, served, sock, answers = looped
    target = "/a%2Fb/c%20d?x=1&y=%2B&z"
    sock.sendall(_get(live, a, target))
    got = answers.read()
    assert got.status == 200 and json.loads(got.body) == {"path": target}
    assert up.last()["path"] == target
    assert served == [proxy_url(a, "/a/b/c d")]  # PATH_INFO decoded, as waitress decodes it
    sock.close()


def test_bodyless_post_and_delete_are_forwarded_with_their_methods(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/echo", method="POST", extra="Content-Length: 0\r\n")
                 + _get(live, a, "/echo", method="DELETE"))
    post, delete = answers.read(), answers.read()
    assert (post.status, post.headers["x-method"], post.body) == (200, "POST", b"")
    assert (delete.status, delete.headers["x-method"], delete.body) == (200, "DELETE", b"")
    assert [(s["method"], s["body"]) for s in up.seen[-2:]] == [("POST", b""), ("DELETE", b"")]
    assert dict((k.lower(), v) for k, v in up.seen[-2]["headers"])["content-length"] == "0"
    assert served == [proxy_url(a, "/echo")] * 2
    sock.close()


# -- kept-alive upstream sockets -------------------------------------------------------------------------------------
def test_the_loop_reuses_the_socket_the_blocking_relay_kept(live, looped):
    up, a, served, sock, answers = looped
    relay_port = up.last()["client_port"]  # the second warm-up request, served by the blocking relay
    assert up.seen[-1]["path"] == WARM_UP[-1]
    sock.sendall(_get(live, a, "/through-the-loop"))
    got = answers.read()
    assert got.status == 200 and served == [proxy_url(a, "/through-the-loop")]
    assert up.last()["client_port"] == relay_port  # one pool per container: the relay's socket carried it


def test_upstream_sockets_are_reused_and_replaced_when_the_container_closes_them(live, looped):
    up, a, served, sock, answers = looped
    noticed = _idle_discards(live)

    def get(path: str) -> int:
        sock.sendall(_get(live, a, path))
        got = answers.read()
        assert got.status == 200 and json.loads(got.body) == {"path": path}
        assert up.last()["path"] == path
        return up.last()["client_port"]

    reused = {get(f"/r{i}") for i in range(4)}
    assert len(reused) == 1  # one upstream connection for all four
    assert get("/close-after") in reused  # announced as the last on that connection
    fresh = get("/after-close")
    assert fresh not in reused
    assert get("/drop-after") == fresh  # the container closes it unannounced right after answering
    replaced = get("/at-once")  # sent before or after the loop noticed: either way a new connection
    assert replaced != fresh
    assert get("/drop-after") == replaced
    # the loop notices the close while the socket rests watched in the pool: waited for, not slept
    _eventually(lambda: replaced in noticed)
    assert replaced in noticed
    last = get("/later")
    assert last != replaced
    paths = [s["path"] for s in up.seen]
    assert paths == [*WARM_UP, "/r0", "/r1", "/r2", "/r3", "/close-after", "/after-close", "/drop-after",
                     "/at-once", "/drop-after", "/later"]  # each exactly once
    assert served == [proxy_url(a, p) for p in paths[2:]]
    sock.close()


def test_the_loop_takes_the_socket_the_blocking_relay_left_in_the_containers_pool(live, looped):
    """The warm-up requests were answered by the blocking relay, which gave its socket back to the container's one
    pool: the loop's first request goes out on that socket rather than a new one."""
    up, a, served, sock, answers = looped
    blocking_relays = up.last()["client_port"]
    assert up.last()["path"] == WARM_UP[-1]
    sock.sendall(_get(live, a, "/first-in-loop"))
    assert answers.read().status == 200
    assert served == [proxy_url(a, "/first-in-loop")]  # the loop forwarded it, not the blocking relay
    assert up.last()["client_port"] == blocking_relays
    sock.close()


def test_an_answer_the_container_sent_unasked_never_reaches_the_next_request(live, looped):
    """A container writes a second answer right behind the first, unasked: the socket is not kept, and the next
    request, on this connection or from another caller, gets its own answer from a new upstream socket."""
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/smuggle"))
    got = answers.read()
    assert got.status == 200 and json.loads(got.body) == {"path": "/smuggle"}
    smuggling = up.last()["client_port"]
    for path in ("/after-smuggle", "/again"):
        sock.sendall(_get(live, a, path))
        got = answers.read()
        assert got.status == 200 and json.loads(got.body) == {"path": path}
        assert b"smuggled" not in got.body
    assert up.seen[-2]["client_port"] != smuggling
    assert served == [proxy_url(a, p) for p in ("/smuggle", "/after-smuggle", "/again")]
    sock.close()


def test_the_blocking_relay_does_not_keep_a_socket_with_an_unasked_answer_either(live, looped):
    """The same container behaviour on the blocking relay's side (each request the first on a new connection, which
    waitress serves): the next request gets its own answer."""
    up, a, served, sock, answers = looped
    for path in ("/smuggle", "/after-smuggle"):
        fresh = connect_raw(live)
        fresh.sendall(_get(live, a, path))
        got = RawAnswers(fresh).read()
        fresh.close()
        assert got.status == 200 and json.loads(got.body) == {"path": path}
    assert up.seen[-1]["client_port"] != up.seen[-2]["client_port"]
    assert served == []  # both went through the blocking relay


def test_a_closed_pool_takes_the_loops_resting_socket_with_it(live, looped):
    """The container is forgotten (or moved) while the loop's socket rests in its pool: the pool shuts it down, the
    loop closes it (or, when the pool closed before the socket came back, does not keep it), and the next request
    opens a new one."""
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/one"))
    assert answers.read().status == 200
    resting = up.last()["client_port"]
    live.ctx.proxy.forget(a)  # as when the container is deleted
    _eventually(lambda: resting in up.ended)
    assert resting in up.ended  # the container saw the socket end
    sock.sendall(_get(live, a, "/two"))
    assert answers.read().status == 200
    assert up.last()["client_port"] != resting
    sock.close()


# -- a container that fails -----------------------------------------------------------------------------------------
def test_a_container_that_does_not_answer_gets_504_and_the_server_serves_on(quick, quick_looped):
    up, a, served, sock, answers = quick_looped
    sock.sendall(_get(quick, a, "/sleep/3"))
    sent = time.monotonic()
    got = answers.read()
    waited = time.monotonic() - sent
    assert got.status == 504 and got.headers["connection"] == "close"
    assert "did not answer" in _api_error(got)["message"]
    assert SHORT["proxy_request_timeout"] - 0.1 <= waited < SHORT["proxy_request_timeout"] + 1.5
    _closed_after(sock, time.monotonic(), 1.0)
    assert served == [proxy_url(a, "/sleep/3")]
    _eventually(lambda: quick.ctx.activity.active(a) == 0)
    assert quick.ctx.activity.active(a) == 0
    again, _ = relayed(quick, a)
    again.close()


def test_a_container_that_hangs_up_without_answering_gets_500(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/hot"))  # the loop's upstream socket, kept alive for the next request
    assert answers.read().status == 200
    sock.sendall(_get(live, a, "/hangup"))
    sent = time.monotonic()
    got = answers.read()
    assert time.monotonic() - sent < 2.0
    assert got.status == 500 and got.headers["connection"] == "close"
    assert "connection was closed" in _api_error(got)["message"]
    _closed_after(sock, time.monotonic(), 1.0)
    # the kept-alive socket may have been closed by the container while idle: a GET is tried once more on a
    # fresh connection, which hangs up too
    assert [s["path"] for s in up.seen] == [*WARM_UP, "/hot", "/hangup", "/hangup"]
    assert served == [proxy_url(a, "/hot"), proxy_url(a, "/hangup")]


def test_a_container_gone_from_its_port_between_requests_gets_an_answer(live):
    up, (a,) = fast_containers(live, 1)
    try:
        served = _loop_served(live)
        sock = connect_raw(live)
        answers = RawAnswers(sock)
        for _ in range(3):  # as relayed, but no upstream connection stays open (the third through the loop)
            sock.sendall(_get(live, a, "/close-after"))
            assert answers.read().status == 200
        assert served == [proxy_url(a, "/close-after")]
        up.close()  # the port refuses connections; the container is still recorded as started
        sock.sendall(_get(live, a, "/next"))
        sent = time.monotonic()
        got = answers.read()
        assert time.monotonic() - sent < 4.0
        assert got.line.startswith("HTTP/1.1 ")
        assert 200 <= got.status < 300 or _api_error(got)  # grokemu answers 500 "connection refused" today
        assert [s["path"] for s in up.seen] == ["/close-after"] * 3
        sock.close()
    finally:
        up.close()


# -- the loop's own timeouts -----------------------------------------------------------------------------------------
def test_a_partial_request_head_is_cut_after_header_timeout(quick):
    up, (a,) = fast_containers(quick, 1)
    try:
        sock, _ = relayed(quick, a)
        sock.sendall(f"GET {proxy_url(a, '/x')} HTTP/1.1\r\nHost: {quick.host}\r\n".encode())
        waited = _closed_after(sock, time.monotonic(), SHORT["header_timeout"] + 2)
        assert waited >= SHORT["header_timeout"] - 0.1
        assert [s["path"] for s in up.seen] == WARM_UP
    finally:
        up.close()


def test_an_idle_relayed_connection_is_closed_after_channel_timeout(quick):
    up, (a,) = fast_containers(quick, 1)
    try:
        sock, _ = relayed(quick, a)
        waited = _closed_after(sock, time.monotonic(), SHORT["channel_timeout"] + 2)
        assert waited >= SHORT["channel_timeout"] - 0.2
        _eventually(lambda: quick.takeover.streams.busy == 0)
        assert quick.takeover.streams.busy == 0
    finally:
        up.close()


def test_an_answer_that_stalls_midway_is_cut_after_stream_timeout(quick, quick_looped):
    up, a, served, sock, answers = quick_looped
    sock.sendall(_get(quick, a, "/stall"))
    while b"5\r\nfirst\r\n" not in answers.buf:
        answers._fill()
    since = time.monotonic()
    assert answers.buf.startswith(b"HTTP/1.1 200 ") and answers.buf.endswith(b"5\r\nfirst\r\n")
    waited = _closed_after(sock, since, SHORT["stream_timeout"] + 1.5)
    assert waited >= SHORT["stream_timeout"] - 0.1
    assert served == [proxy_url(a, "/stall")]
    _eventually(lambda: quick.ctx.activity.active(a) == 0)
    assert quick.ctx.activity.active(a) == 0


# -- pipelining and malformed requests -------------------------------------------------------------------------------
def test_fifty_pipelined_requests_are_answered_in_order_then_closed(live, looped):
    up, a, served, sock, answers = looped
    paths = [f"/n/{i}" for i in range(50)]
    sock.sendall(b"".join(_get(live, a, p, extra="Connection: close\r\n" if i == 49 else "")
                          for i, p in enumerate(paths)))
    got = [answers.read() for _ in paths]
    assert [g.status for g in got] == [200] * 50
    assert [json.loads(g.body)["path"] for g in got] == paths
    assert [g.headers.get("connection") for g in got] == [None] * 49 + ["close"]
    _closed_after(sock, time.monotonic(), 2.0)
    assert answers.buf == b""
    assert served == [proxy_url(a, p) for p in paths]
    assert [s["path"] for s in up.seen] == WARM_UP + paths


def test_pipelined_hand_offs_between_loop_requests_keep_the_order(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/p1") + raw_request(live, "/api/users/current", live.token)
                 + _get(live, a, "/echo", method="POST", extra="Content-Type: text/plain\r\nContent-Length: 5\r\n")
                 + b"hello" + _get(live, a, "/p2") + _get(live, a, "/bytes/7", method="HEAD")
                 + _get(live, a, "/p3"))
    p1, user, echo, p2 = [answers.read() for _ in range(4)]
    head, p3 = answers.read(body=False), answers.read()
    assert json.loads(p1.body) == {"path": "/p1"} and json.loads(user.body)["login"] == "admin"
    assert echo.body == b"hello" and json.loads(p2.body) == {"path": "/p2"}
    assert head.status == 200 and head.headers["content-length"] == "7" and head.body == b""
    assert json.loads(p3.body) == {"path": "/p3"}
    assert served == [proxy_url(a, p) for p in ("/p1", "/p2", "/bytes/7", "/p3")]  # the POST was handed off
    assert [s["path"] for s in up.seen] == [*WARM_UP, "/p1", "/echo", "/p2", "/bytes/7", "/p3"]
    sock.close()


def test_a_malformed_request_head_gets_400_from_waitress(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(f"GET {proxy_url(a, '/x')} HTTP/1.1\r\nHost: {live.host}\r\nBad Header\r\n\r\n".encode())
    got = answers.read()
    assert got.status == 400 and got.line == "HTTP/1.1 400 Bad Request"
    _closed_after(sock, time.monotonic(), 2.0)
    assert served == [] and [s["path"] for s in up.seen] == WARM_UP


# -- a slow reader ---------------------------------------------------------------------------------------------------
def test_a_slow_reader_gets_a_big_answer_whole_and_everything_is_released(live):
    up, (a,) = fast_containers(live, 1)
    size, per_step, step = 16 * 2**20, 2**20, 0.08  # one MiB every 80 ms: about 1.3 s
    try:
        served = _loop_served(live)
        sock, answers = relayed(live, a)
        sock.sendall(_get(live, a, f"/bytes/{size}"))
        got = answers.read(body=False)
        assert got.status == 200 and got.headers["content-length"] == str(size)
        body, answers.buf = bytearray(answers.buf), b""
        started = time.monotonic()
        while len(body) < size:
            target = min(size, len(body) + per_step)
            while len(body) < target:
                data = sock.recv(min(256 * 1024, size - len(body)))
                assert data, f"closed after {len(body)} bytes"
                body += data
            time.sleep(step)
        assert time.monotonic() - started >= 1.0
        assert len(body) == size and body.count(b"x") == size
        sock.sendall(_get(live, a, "/next"))
        after = answers.read()
        assert after.status == 200 and json.loads(after.body) == {"path": "/next"}
        assert served == [proxy_url(a, f"/bytes/{size}"), proxy_url(a, "/next")]
        activity, streams = live.ctx.activity, live.takeover.streams
        _eventually(lambda: activity.active(a) == 0 and streams.busy == 0)
        assert activity.active(a) == 0 and streams.busy == 0
        sock.close()
    finally:
        up.close()


# -- the scenarios of issue 14, each through the loop ---------------------------------------------------------------
def test_mixed_loop_dashboard_and_api_requests_on_one_connection(live):
    """A proxied request the loop serves, the dashboard page and an API call (handed to the WSGI app), then another
    container's proxied request: all answered in order on one keep-alive connection."""
    up, (a, b) = fast_containers(live, 2)
    try:
        served = _loop_served(live)
        sock, answers = relayed(live, a)
        # b started and looked up once more, on this connection; b's start changed a status, so a is looked up once
        # more too (ProxyService keeps started containers until any status changes)
        for cid, path in [(b, "/first"), (b, "/warm"), (a, "/again")]:
            sock.sendall(_get(live, cid, path))
            assert answers.read().status == 200
        served.clear()
        sock.sendall(_get(live, a, "/one"))
        assert json.loads(answers.read().body) == {"path": "/one"}
        sock.sendall(raw_request(live, "/", None))
        page = answers.read()
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        sock.sendall(raw_request(live, "/api/users/current", live.token))
        me = answers.read()
        assert me.status == 200 and json.loads(me.body)["login"] == "admin"
        sock.sendall(_get(live, b, "/two"))
        assert json.loads(answers.read().body) == {"path": "/two"}
        assert served == [proxy_url(a, "/one"), proxy_url(b, "/two")]
        sock.close()
    finally:
        up.close()


def test_a_caller_reset_mid_answer_releases_the_container_and_the_loop_serves_on(live):
    up, (a,) = fast_containers(live, 1)
    try:
        served = _loop_served(live)
        sock, answers = relayed(live, a)
        sock.sendall(_get(live, a, f"/bytes/{64 * 2**20}"))
        assert answers.read(body=False).status == 200
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset with most of the answer still to come
        activity, streams = live.ctx.activity, live.takeover.streams
        _eventually(lambda: activity.active(a) == 0 and streams.busy == 0)
        assert activity.active(a) == 0 and streams.busy == 0
        assert served == [proxy_url(a, f"/bytes/{64 * 2**20}")]
        sock, answers = relayed(live, a)  # a new connection, into the loop again
        sock.sendall(_get(live, a, "/after"))
        assert json.loads(answers.read().body) == {"path": "/after"}
        assert served[-1] == proxy_url(a, "/after")
        sock.close()
    finally:
        up.close()


def test_a_session_revoked_between_two_loop_requests_refuses_the_second(live):
    up, (a,) = fast_containers(live, 1)
    try:
        served = _loop_served(live)
        token = live.ctx.auth.token_for("admin")
        sock, answers = relayed(live, a)
        sock.sendall(raw_request(live, proxy_url(a, "/one"), token))
        assert answers.read().status == 200
        live.ctx.auth.revoke(token)
        sock.sendall(raw_request(live, proxy_url(a, "/two"), token))
        refused = answers.read()
        assert refused.status == 401 and _api_error(refused)
        assert served == [proxy_url(a, "/one")]
        assert [s["path"] for s in up.seen] == WARM_UP + ["/one"]
        sock.close()
    finally:
        up.close()


# -- an attacker on a connection in the loop ------------------------------------------------------------------------
ATTACKS = {
    "a page on another origin": ("Authorization: {token}\r\nOrigin: http://evil.example\r\n", 403),
    "a cross-site request with the cookie alone": ("Cookie: auth={token}\r\nSec-Fetch-Site: cross-site\r\n", 403),
    "no credentials": ("", 401),
    "a made-up token": ("Authorization: not-a-session\r\n", 401),
    "the dev key as a token": ("Authorization: Dev admin\r\n", 401),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_attack_on_a_loop_connection_is_refused_before_the_container(live, attack):
    """The same refusals as through Flask, ApiError JSON, with the connection in the loop: nothing is forwarded and
    the container sees nothing; the caller's next honest request on the connection is served by the loop again."""
    up, (a,) = fast_containers(live, 1)
    extra, status = ATTACKS[attack]
    try:
        served = _loop_served(live)
        sock, answers = relayed(live, a)
        sock.sendall(raw_request(live, proxy_url(a, "/attack"), None, extra=extra.format(token=live.token)))
        refused = answers.read()
        assert refused.status == status and _api_error(refused)
        sock.sendall(_get(live, a, "/honest"))
        assert json.loads(answers.read().body) == {"path": "/honest"}
        assert served == [proxy_url(a, "/honest")]
        assert [s["path"] for s in up.seen] == WARM_UP + ["/honest"]
        sock.close()
    finally:
        up.close()


def test_a_foreign_host_on_a_loop_connection_is_refused(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(f"GET {proxy_url(a, '/x')} HTTP/1.1\r\nHost: attacker.example\r\n"
                 f"Authorization: {live.token}\r\n\r\n".encode())  # DNS rebinding
    refused = answers.read()
    assert refused.status == 403 and _api_error(refused)
    assert served == [] and [s["path"] for s in up.seen] == WARM_UP
    sock.close()


def test_a_session_expired_between_two_loop_requests_is_refused(live, looped, clock):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/one"))
    assert answers.read().status == 200
    clock.advance(live.ctx.settings.session_ttl + 1)
    sock.sendall(_get(live, a, "/two"))
    refused = answers.read()
    assert refused.status == 401 and _api_error(refused)
    assert served == [proxy_url(a, "/one")] and [s["path"] for s in up.seen] == WARM_UP + ["/one"]
    sock.close()


@pytest.fixture
def bridged(tmp_path, settings, clock):
    """The real server with a second listener on 127.0.0.2 marked as the Docker bridge gateway: (server, bridge
    port)."""
    app = create_app(dataclasses.replace(settings, threads=2), orchestrator=MemoryOrchestrator(), clock=clock,
                     background=True)
    sockets = bind("127.0.0.1", 0, ["127.0.0.2"])
    if len(sockets) < 2:
        pytest.skip("127.0.0.2 cannot be bound here")
    server = create_server(app, sockets, threads=2, bridge_addresses=["127.0.0.2"],
                           streamed_prefixes=(proxy.HTTP_PREFIX,))
    threading.Thread(target=server.run, daemon=True).start()
    yield Live(app, f"127.0.0.1:{sockets[0].getsockname()[1]}", 0, server.application), sockets[1].getsockname()[1]
    server.close()


def test_a_loop_connection_from_the_bridge_keeps_the_bridge_rules(bridged):
    """A container calling fetchProxy with its token is served, by the loop too; the dashboard, grokemu's controls
    and the dev-key login on that same connection are refused, whatever Host it claims."""
    live, port = bridged
    up, (a,) = fast_containers(live, 1)
    try:
        served = _loop_served(live)
        sock = socket.create_connection(("127.0.0.2", port), timeout=10)
        answers = RawAnswers(sock)

        def send(path: str, extra: str = "", method: str = "GET"):
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: host.docker.internal\r\n{extra}\r\n".encode())
            return answers.read()

        auth = f"Authorization: {live.token}\r\n"
        for path in WARM_UP + ["/looped"]:
            assert json.loads(send(proxy_url(a, path), auth).body) == {"path": path}
        assert served == [proxy_url(a, "/looped")]
        assert send("/", auth).status == 403
        assert send("/_grokemu/health", auth).status == 403
        login = send("/api/users/login/dev", "Authorization: Dev admin\r\nContent-Length: 0\r\n", method="POST")
        assert login.status == 403 and "token" not in json.loads(login.body)
        sock.close()
    finally:
        up.close()


# -- as waitress does ------------------------------------------------------------------------------------------------
def test_a_request_head_over_the_header_limit_gets_431(live, looped):
    up, a, served, sock, answers = looped
    limit = Adjustments.max_request_header_size  # create_server keeps waitress's default
    start = _get(live, a, "/big").removesuffix(b"\r\n")
    lines = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 60000) for i in range(4))
    head = start + lines + b"X-Last: " + b"q" * (limit - len(start) - len(lines) - len(b"X-Last: "))
    assert len(head) == limit  # all of it read, no blank line yet: the loop waits for the rest
    sock.sendall(head)
    loop = live.takeover.loop  # the rest is sent only once the loop holds all of this, so it comes as a second read
    _eventually(lambda: any(len(c.buf) >= limit for c in list(loop._clients)))
    assert any(len(c.buf) == limit for c in list(loop._clients))
    sock.sendall(b"q\r\n\r\n")  # the head complete now, over the limit
    got = answers.read()
    assert [s["path"] for s in up.seen] == WARM_UP and served == []
    assert got.status == 431


def test_a_caller_that_half_closes_after_its_request_still_gets_the_answer(live, looped):
    up, a, served, sock, answers = looped
    sock.sendall(_get(live, a, "/sleep/0.2", extra="Connection: close\r\n"))
    sock.shutdown(socket.SHUT_WR)  # nothing more to send; still reading
    got = answers.read()
    assert got.status == 200 and json.loads(got.body) == {"path": "/sleep/0.2"}
    assert served == [proxy_url(a, "/sleep/0.2")]


def test_a_container_killed_under_a_relayed_request_is_explained(live, looped):
    up, a, served, sock, answers = looped
    context = live.ctx
    sock.sendall(_get(live, a, "/hot"))
    assert answers.read().status == 200
    context.orchestrator.crash(context.store.get_container(a).docker_id, log="allocating 400 MB\n", oom_killed=True)
    sock.sendall(_get(live, a, "/hangup"))
    got = answers.read()
    assert got.status == 500 and got.headers["connection"] == "close"
    message = _api_error(got)["message"]
    assert "killed for running out of memory" in message and "allocating 400 MB" in message, message
    assert served == [proxy_url(a, "/hot"), proxy_url(a, "/hangup")]  # the loop sent it, and explained it
    assert context.store.get_container(a).status.value == "error"
