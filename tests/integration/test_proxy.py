"""fetchProxy / webSocketProxy against the in-memory orchestrator: no Docker. The fake orchestrator publishes every
container on the port of a small HTTP server started by the test (or the ws-echo sample's app, run in-process), so
the proxy really forwards over loopback. HTTP tests use the Flask test client; WebSocket tests run the real server
(waitress + the handoff) on an ephemeral port."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import socket
import threading
import time

import pytest
import requests
import websocket

from grokemu.app import create_app
from grokemu.web.context import app_context
from tests.fake_upstream import Upstream, add_container, proxy_url, status
from tests.helpers import wait_until

UNKNOWN = "00000000-0000-0000-0000-000000000000"  # CVMTests' unknown id
COLD = "X-Grokemu-Cold-Start-Ms"


@pytest.fixture
def started(ctx, upstream):
    cid = add_container(ctx, {"shutdown_timeout": 1})
    ctx.spawner.run(cid, "admin", await_start=True)
    return cid


# -- forwarding: paths, methods, bodies ------------------------------------------------------------------------------
def test_path_and_query_reach_the_container_as_encoded(client, token, started, upstream):
    resp = client.get(proxy_url(started, "/a%2Fb/c%20d?x=1&y=%2B&z"), headers={"Authorization": token})
    assert resp.status_code == 200
    assert upstream.last()["path"] == "/a%2Fb/c%20d?x=1&y=%2B&z"
    client.get(proxy_url(started, "?only=query"), headers={"Authorization": token})
    assert upstream.last()["path"] == "/?only=query"
    client.get(proxy_url(started), headers={"Authorization": token})
    assert upstream.last()["path"] == "/"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_is_forwarded(client, token, started, upstream, method):
    resp = client.open(proxy_url(started, "/echo"), method=method, data=b"payload" if method != "GET" else None,
                       headers={"Authorization": token, "Content-Type": "text/plain"})
    assert resp.status_code == 200 and resp.headers["X-Method"] == method
    assert upstream.last()["method"] == method


def test_head_is_forwarded_without_a_body(client, token, started, upstream):
    resp = client.head(proxy_url(started, "/bytes/1234"), headers={"Authorization": token})
    assert resp.status_code == 200 and resp.headers["Content-Length"] == "1234" and resp.get_data() == b""
    assert upstream.last()["method"] == "HEAD"


def test_multipart_body_and_its_boundary_are_forwarded_byte_exact(client, token, started, upstream):
    boundary = "----grokemuBoundary7MA4YWxkTrZu0gW"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.sdf\"\r\n"
            f"Content-Type: chemical/x-mdl-sdfile\r\n\r\n").encode() + bytes(range(256)) * 40 + \
        f"\r\n--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    resp = client.post(proxy_url(started, "/echo"), data=body,
                       headers={"Authorization": token, "Content-Type": content_type})
    assert resp.status_code == 200
    assert upstream.last()["body"] == body and upstream.header("Content-Type") == content_type
    assert resp.get_data() == body and resp.headers["Content-Type"] == content_type


def test_binary_and_gzip_request_bodies_are_not_touched(client, token, started, upstream):
    raw = gzip.compress(json.dumps({"rows": list(range(5000))}).encode())
    resp = client.put(proxy_url(started, "/echo"), data=raw, headers={
        "Authorization": token, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status_code == 200 and resp.get_data() == raw
    assert upstream.last()["body"] == raw and upstream.header("Content-Encoding") == "gzip"
    assert upstream.header("Content-Length") == str(len(raw))


def test_big_body_is_forwarded_in_blocks(client, token, started, upstream):
    blob = bytes(range(256)) * (6 * 4096)  # 6 MiB
    resp = client.post(proxy_url(started, "/echo"), data=blob,
                       headers={"Authorization": token, "Content-Type": "application/octet-stream"})
    assert resp.status_code == 200
    assert hashlib.sha256(upstream.last()["body"]).digest() == hashlib.sha256(blob).digest()
    assert hashlib.sha256(resp.get_data()).digest() == hashlib.sha256(blob).digest()


# -- answers: statuses, headers, bodies as they are ------------------------------------------------------------------
@pytest.mark.parametrize("code, reason", [(201, "Created"), (204, "No Content"), (404, "Not Found"),
                                          (500, "Internal Server Error"), (418, "I'm a Teapot")])
def test_status_and_headers_pass_through(client, token, started, code, reason):
    resp = client.get(proxy_url(started, f"/status/{code}"), headers={"Authorization": token})
    assert resp.status == f"{code} {reason}"  # the container's reason phrase, not werkzeug's
    assert resp.headers["X-Custom"] == "yes"
    assert resp.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert "api-error" not in resp.headers
    assert "Content-Type" not in resp.headers  # the container sent none; none is invented


def test_container_404_and_500_bodies_pass_through(client, token, started):
    """CVMTests: an unmapped path is the container's 404; an exception inside is its 500."""
    resp = client.get(proxy_url(started, "/boom"), headers={"Authorization": token})
    assert resp.status_code == 500 and resp.get_json() == {"error": "boom"}
    assert "datagrok-error" not in resp.get_json()


def test_gzip_answer_is_not_decoded(client, token, started):
    resp = client.get(proxy_url(started, "/gzip"), headers={"Authorization": token, "Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(resp.get_data()) == b'{"compressed": true}'


def test_redirect_is_passed_through_not_followed(client, token, started, upstream):
    resp = client.get(proxy_url(started, "/redirect"), headers={"Authorization": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/elsewhere"
    assert [s["path"] for s in upstream.seen].count("/elsewhere") == 0


def test_hop_by_hop_headers_are_dropped_both_ways(client, token, started, upstream):
    resp = client.get(proxy_url(started, "/hop"), headers={
        "Authorization": token, "Connection": "keep-alive, X-Private", "X-Private": "secret", "Keep-Alive": "300",
        "TE": "trailers", "Proxy-Authorization": "Basic eDp5", "X-Public": "fine"})
    sent = {k.lower() for k, _ in upstream.last()["headers"]}
    assert {"x-private", "keep-alive", "te", "proxy-authorization"}.isdisjoint(sent)
    assert upstream.header("X-Public") == "fine"
    assert upstream.header("Connection") in (None, "keep-alive")  # urllib3's own hop, not the caller's
    assert resp.headers.get("X-Kept") == "1"
    assert "X-Secret" not in resp.headers and "Keep-Alive" not in resp.headers


def test_grokemu_credentials_are_not_forwarded(client, token, started, upstream):
    client.get(proxy_url(started, "/"), headers={"Authorization": f"Bearer {token}"})
    assert upstream.header("Authorization") is None
    client.set_cookie("auth", token)
    client.set_cookie("theme", "dark")
    resp = client.get(proxy_url(started, "/"))  # the browser way: the auth cookie only
    assert resp.status_code == 200
    assert upstream.header("Cookie") == "theme=dark"
    assert upstream.header("Host") == f"127.0.0.1:{upstream.port}"
    assert upstream.header("User-Agent") is not None  # the caller's (werkzeug's), not one added by urllib3


@pytest.mark.parametrize("path", ["//evil.invalid:1/x", "/http://evil.invalid:1/", "/@evil.invalid:1/x",
                                  "/..%2F..%2Fetc"])
def test_the_path_never_chooses_the_host_or_port(client, token, started, upstream, path):
    resp = client.get(proxy_url(started, path), headers={"Authorization": token})
    assert resp.status_code == 200
    assert upstream.last()["path"].endswith(path.lstrip("/"))


def test_connections_to_the_container_are_reused(client, token, started, upstream):
    for _ in range(6):
        assert client.get(proxy_url(started, "/"), headers={"Authorization": token}).status_code == 200
    assert len({s["client_port"] for s in upstream.seen[-6:]}) == 1


# -- status rules ----------------------------------------------------------------------------------------------------
def test_unauthenticated_is_401(client, started):
    resp = client.get(proxy_url(started, "/"))
    assert resp.status_code == 401 and resp.get_json()["#type"] == "ApiError"


def test_unknown_container_is_404_with_datagrok_error(client, token, upstream):
    resp = client.get(proxy_url(UNKNOWN, "/square?number=2"), headers={"Authorization": token})
    assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/json"
    body = resp.get_json()
    assert body["#type"] == "ApiError" and UNKNOWN in body["datagrok-error"]


def test_stopped_container_not_on_demand_is_400(client, token, ctx, upstream, orchestrator):
    cid = add_container(ctx, {"on_demand": False})
    resp = client.get(proxy_url(cid, "/"), headers={"Authorization": token})
    assert resp.status_code == 400 and "not on_demand" in resp.get_json()["datagrok-error"]
    assert orchestrator.run_calls == 0 and upstream.seen == []


def test_a_stop_is_seen_by_the_next_request(client, token, ctx, started, orchestrator):
    """The proxy remembers a started container until any status changes: a stop right after a request counts."""
    assert client.get(proxy_url(started, "/"), headers={"Authorization": token}).status_code == 200
    ctx.spawner.stop(started, await_stop=True)
    resp = client.get(proxy_url(started, "/"), headers={"Authorization": token})
    assert resp.status_code == 400 and orchestrator.run_calls == 1


def test_on_demand_container_starts_and_the_waiting_answer_says_how_long(client, token, ctx, upstream,
                                                                          orchestrator):
    cid = add_container(ctx, {"on_demand": True, "shutdown_timeout": 1})
    resp = client.get(proxy_url(cid, "/square"), headers={"Authorization": token})
    assert resp.status_code == 200 and status(ctx, cid) == "started" and orchestrator.run_calls == 1
    assert int(resp.headers[COLD]) >= 0
    again = client.get(proxy_url(cid, "/square"), headers={"Authorization": token})
    assert again.status_code == 200 and COLD not in again.headers


def test_user_stopped_on_demand_container_is_started_again(client, token, ctx, upstream, orchestrator):
    """CVMTests: a user-stopped on_demand container is started by the next proxied request too."""
    cid = add_container(ctx, {"on_demand": True})
    ctx.spawner.run(cid, "admin", await_start=True)
    ctx.spawner.stop(cid, await_stop=True)
    assert status(ctx, cid) == "stopped by user"
    resp = client.get(proxy_url(cid, "/"), headers={"Authorization": token})
    assert resp.status_code == 200 and COLD in resp.headers and orchestrator.run_calls == 2


def test_idle_container_is_stopped_by_system_and_the_next_request_restarts_it(client, token, ctx, clock, upstream,
                                                                              orchestrator):
    cid = add_container(ctx, {"on_demand": True, "shutdown_timeout": 1})
    assert client.get(proxy_url(cid, "/"), headers={"Authorization": token}).status_code == 200
    clock.advance(50)
    assert client.get(proxy_url(cid, "/"), headers={"Authorization": token}).status_code == 200  # renews
    clock.advance(50)
    ctx.spawner.tick()
    assert status(ctx, cid) == "started"  # 50 s since the last request: not idle yet
    clock.advance(11)
    ctx.spawner.tick()
    assert status(ctx, cid) == "stopped by system"
    resp = client.get(proxy_url(cid, "/"), headers={"Authorization": token})
    assert resp.status_code == 200 and COLD in resp.headers and orchestrator.run_calls == 2


def test_unfinished_streamed_answer_keeps_the_container_up(client, token, ctx, clock, started, upstream):
    resp = client.get(proxy_url(started, "/stream"), headers={"Authorization": token}, buffered=False)
    chunks = iter(resp.response)
    assert next(chunks) == b"first"
    clock.advance(600)
    ctx.spawner.tick()
    assert status(ctx, started) == "started"  # ten idle minutes, but the answer is still streaming
    upstream.gate.set()
    assert b"".join(chunks) == b"second"
    resp.close()
    clock.advance(61)
    ctx.spawner.tick()
    assert status(ctx, started) == "stopped by system"


def test_container_not_answering_is_500_with_datagrok_error(client, token, ctx, orchestrator):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        orchestrator.fixed_host_port = s.getsockname()[1]  # nothing listens there once the socket is closed
    cid = add_container(ctx, {"on_demand": True})
    resp = client.get(proxy_url(cid, "/"), headers={"Authorization": token})
    assert resp.status_code == 500 and "did not answer" in resp.get_json()["datagrok-error"]
    assert resp.get_json()["#type"] == "ApiError"


# -- with a background spawner: cold starts that take real time ------------------------------------------------------
@pytest.fixture
def bg_app(settings, orchestrator, clock):
    # a wide proxy_request_timeout: the test below is about one start shared by all, not about how fast 50 threads run
    return create_app(dataclasses.replace(settings, proxy_request_timeout=120.0), orchestrator=orchestrator,
                      clock=clock, background=True)


def test_not_ready_within_proxy_request_timeout_is_504(settings, orchestrator, clock, upstream):
    app = create_app(dataclasses.replace(settings, proxy_request_timeout=0.3), orchestrator=orchestrator,
                     clock=clock, background=True)
    context = app_context(app)
    client = app.test_client()
    token = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"}).get_json()["token"]
    cid = add_container(context, {"on_demand": True})
    orchestrator.apps_ready = False  # the app inside never answers its probe
    started_at = time.monotonic()
    resp = client.get(proxy_url(cid, "/"), headers={"Authorization": token})
    assert resp.status_code == 504 and "not ready within 0.3 s" in resp.get_json()["datagrok-error"]
    assert time.monotonic() - started_at < 2
    assert status(context, cid) == "checking"  # the answer came while the start was still under way


def test_fifty_concurrent_requests_share_one_cold_start(bg_app, orchestrator, upstream, monkeypatch):
    context = app_context(bg_app)
    client = bg_app.test_client()
    token = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"}).get_json()["token"]
    cid = add_container(context, {"on_demand": True})
    orchestrator.apps_ready = False  # hold the start in `checking` until every request is waiting
    answers: list = [None] * 50
    waiting = threading.Semaphore(0)
    wait = context.spawner._wait

    def counted_wait(*args, **kwargs):  # a request is waiting for the start once it gets here
        waiting.release()
        return wait(*args, **kwargs)

    monkeypatch.setattr(context.spawner, "_wait", counted_wait)

    def call(i):
        r = bg_app.test_client().get(proxy_url(cid, f"/n/{i}"), headers={"Authorization": token})
        answers[i] = (r.status_code, r.headers.get(COLD), r.get_json())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for i in range(50):
        assert waiting.acquire(timeout=60), f"only {i} of 50 requests came to wait for the start"
    # the one start goes on in the background: run, then probe the app, which never answers yet
    wait_until(lambda: status(context, cid) == "checking", 60, "the shared start reached `checking`", interval=0.02)
    assert all(a is None for a in answers)
    orchestrator.apps_ready = True
    for t in threads:
        t.join(120)
    assert orchestrator.run_calls == 1
    assert [a and a[0] for a in answers] == [200] * 50
    assert all(a[1] is not None for a in answers)
    assert sorted(a[2]["path"] for a in answers) == sorted(f"/n/{i}" for i in range(50))


# -- the real server: WebSockets (and HTTP through waitress); `live` is in tests/conftest.py --------------------
@pytest.fixture
def live_upstream(live):
    """The live server with an on_demand container whose port is a test Upstream: (upstream, container id)."""
    up = Upstream()
    live.ctx.orchestrator.fixed_host_port = up.port
    yield up, add_container(live.ctx, {"on_demand": True})
    up.close()


def close_frame(ws) -> tuple[int, str]:
    """The next frame, which must be a close: (code, reason)."""
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE, (opcode, data)
    return int.from_bytes(data[:2], "big"), data[2:].decode()


def test_websocket_sends_connected_then_echoes_text_and_binary(live):
    cid = add_container(live.ctx, {"on_demand": True})
    ws = live.ws(cid)
    assert ws.recv() == "CONNECTED"
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send_binary(bytes(range(256)) * 1000)
    assert ws.recv() == bytes(range(256)) * 1000
    ws.send_frame(websocket.ABNF.create_frame("frag", websocket.ABNF.OPCODE_TEXT, fin=0))
    ws.send_frame(websocket.ABNF.create_frame("mented", websocket.ABNF.OPCODE_CONT, fin=1))
    assert ws.recv() == "fragmented"  # the container reassembled the caller's frames: passed through intact
    ws.close()
    assert live.ctx.orchestrator.run_calls == 1  # the on_demand container was started for it


def test_websocket_close_codes_pass_both_ways(live):
    cid = add_container(live.ctx, {"on_demand": True})
    ws = live.ws(cid)
    assert ws.recv() == "CONNECTED"
    ws.send("close 4321 container says bye")  # the container closes
    assert close_frame(ws) == (4321, "container says bye")
    ws = live.ws(cid)
    assert ws.recv() == "CONNECTED"
    ws.send_close(4100, b"caller leaves")  # the caller closes; the container answers with the same code
    assert close_frame(ws) == (4100, "caller leaves")


def test_websocket_path_without_leading_slash(live):
    """webSocketProxySync does not add the '/' that webSocketProxy adds (docs/datagrok-api.md §1.3): `<id>ws` means `<id>` + `/ws`."""
    cid = add_container(live.ctx, {"on_demand": True})
    ws = live.ws(cid, path="ws")
    assert ws.recv() == "CONNECTED"
    ws.send("x")
    assert ws.recv() == "x"
    ws.close()


def test_websocket_authenticates_with_a_header_too(live):
    cid = add_container(live.ctx, {"on_demand": True})
    ws = live.ws(cid, token=False, header=[f"Authorization: {live.token}"])
    assert ws.recv() == "CONNECTED"
    ws.close()


@pytest.mark.parametrize("case, code, fragment", [
    ("unauthenticated", 4401, "Not authenticated"),
    ("unknown", 4404, "not found"),
    ("stopped", 4400, "not on_demand"),
    ("not listening", 4500, "refused the WebSocket"),
    ("no websocket there", 4400, "answered 404"),
])
def test_websocket_failure_before_connected_closes_with_a_reason(live, case, code, fragment):
    cid = add_container(live.ctx, {"on_demand": case != "stopped"})
    path, token = "/ws", None
    if case == "unauthenticated":
        token = False
    elif case == "unknown":
        cid = UNKNOWN
    elif case == "not listening":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            live.ctx.orchestrator.fixed_host_port = s.getsockname()[1]
    elif case == "no websocket there":
        path = "/nowhere"
    ws = live.ws(cid, path=path, token=token)
    got_code, reason = close_frame(ws)
    assert got_code == code and fragment in reason, reason


def test_websocket_without_a_socket_answers_in_http(client, token, upstream):
    """The Flask test client cannot hand a socket over: the route still authenticates and checks the container."""
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version": "13"}
    url = f"/api/docker/containers/proxy-ws/{UNKNOWN}/ws"
    assert client.get(url, headers=upgrade).status_code == 401
    resp = client.get(url, headers={**upgrade, "Authorization": token})
    assert resp.status_code == 404 and resp.get_json()["datagrok-error"]


def test_open_websocket_keeps_the_container_up_past_shutdown_timeout(live, clock):
    cid = add_container(live.ctx, {"on_demand": True, "shutdown_timeout": 1})
    ws = live.ws(cid)
    assert ws.recv() == "CONNECTED"
    clock.advance(10 * 60)  # ten minutes without a frame
    live.ctx.spawner.tick()
    assert status(live.ctx, cid) == "started"
    ws.send("still there?")
    assert ws.recv() == "still there?"
    ws.close()
    deadline = time.time() + 5
    while live.takeover.open_websockets and time.time() < deadline:
        time.sleep(0.02)
    clock.advance(61)
    live.ctx.spawner.tick()
    deadline = time.time() + 5
    while status(live.ctx, cid) != "stopped by system" and time.time() < deadline:
        time.sleep(0.02)
    assert status(live.ctx, cid) == "stopped by system"


def test_open_websockets_do_not_take_http_worker_threads(live):
    """Open WebSockets, relayed to a container (proxy-ws) or served by grokemu itself (ws-echo), each run on a thread
    of their own: with many more sockets than waitress workers, plain HTTP and proxied requests are still served."""
    cid = add_container(live.ctx, {"on_demand": True})
    proxied = [live.ws(cid) for _ in range(6)]  # three times the two waitress workers
    own = [websocket.create_connection(f"ws://{live.host}/_grokemu/ws-echo", timeout=5,
                                       header=[f"Authorization: {live.token}"]) for _ in range(44)]
    try:
        assert [ws.recv() for ws in proxied] == ["CONNECTED"] * 6
        started_at = time.monotonic()
        r = requests.get(f"http://{live.host}/api/docker/containers/proxy/{cid}/health",
                         headers={"Authorization": live.token}, timeout=5)
        assert r.status_code == 200 and r.json() == {"result": "Healthy"}
        assert time.monotonic() - started_at < 2
        for _ in range(20):
            r = requests.get(f"http://{live.host}/_grokemu/health", headers={"Authorization": live.token}, timeout=5)
            assert r.status_code == 200
        assert r.json()["openWebSockets"] == 50
        for i, ws in enumerate(proxied + own):
            ws.send(f"m{i}")
        assert [ws.recv() for ws in proxied + own] == [f"m{i}" for i in range(50)]
    finally:
        for ws in proxied + own:
            ws.close()
    deadline = time.time() + 5
    while live.takeover.open_websockets and time.time() < deadline:
        time.sleep(0.05)
    assert live.takeover.open_websockets == 0


def test_through_waitress_chunked_upload_and_streamed_download(live, live_upstream):
    up, cid = live_upstream
    headers = {"Authorization": live.token, "Content-Type": "application/octet-stream"}
    blob = bytes(range(256)) * 40000  # ~10 MB, sent chunked: waitress de-chunks and spools it
    r = requests.post(f"http://{live.host}/api/docker/containers/proxy/{cid}/echo",
                      data=iter([blob[i:i + 65536] for i in range(0, len(blob), 65536)]), headers=headers,
                      timeout=30)
    assert r.status_code == 200 and r.content == blob
    assert up.header("Content-Length") == str(len(blob)) and up.last()["body"] == blob
    r = requests.get(f"http://{live.host}/api/docker/containers/proxy/{cid}/bytes/{20 * 2**20}",
                     headers=headers, stream=True, timeout=30)
    assert r.headers["Content-Length"] == str(20 * 2**20)
    assert sum(len(c) for c in r.iter_content(2**20)) == 20 * 2**20
    r = requests.get(f"http://{live.host}/api/docker/containers/proxy/{cid}/stream", headers=headers,
                     stream=True, timeout=30)
    up.gate.set()
    assert r.content == b"firstsecond" and r.headers.get("Transfer-Encoding") == "chunked"


def test_big_fixed_length_upload_is_relayed_while_it_arrives(live, live_upstream):
    """A body over 1 MiB with a Content-Length leaves waitress once its headers are in (server/takeover.py stream_request):
    the container gets it byte-exact and the caller the container's answer."""
    up, cid = live_upstream
    blob = bytes(range(256)) * 60000  # ~15 MB with a Content-Length
    r = requests.post(f"http://{live.host}/api/docker/containers/proxy/{cid}/echo?x=1", data=blob,
                      headers={"Authorization": live.token, "Content-Type": "application/x-test"}, timeout=30)
    assert r.status_code == 200 and r.content == blob
    assert r.headers.get(COLD) is not None  # the on_demand start happened on the streamed path
    assert up.last()["body"] == blob and up.last()["path"] == "/echo?x=1"
    assert up.header("Content-Type") == "application/x-test" and up.header("Content-Length") == str(len(blob))
    assert up.header("Authorization") is None
    # the connection it used is gone, the server is not: a plain request works
    assert requests.get(f"http://{live.host}/_grokemu/health", timeout=5).status_code == 200


def test_streamed_upload_honours_expect_100_continue_and_auth(live, live_upstream):
    up, cid = live_upstream
    address, port = live.host.split(":")
    size = 3 * 2**20
    head = (f"POST /api/docker/containers/proxy/{cid}/echo HTTP/1.1\r\nHost: {live.host}\r\n"
            f"Authorization: {live.token}\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection((address, int(port)), timeout=10) as s:
        s.sendall(head)
        assert s.recv(64).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"z" * size)
        answer = b""
        while chunk := s.recv(2**20):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK" and rest.endswith(b"z" * 1000)
    assert len(up.last()["body"]) == size
    # without credentials: 401 ApiError at once, before the body is read
    with socket.create_connection((address, int(port)), timeout=10) as s:
        s.sendall(head.replace(f"Authorization: {live.token}\r\n".encode(), b""))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    # waitress answers 100 Continue as soon as headers are in (as for every request); then the 401 comes at
    # once, without waiting for the body
    answer = answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["#type"] == "ApiError"


def test_pipelined_requests_behind_a_big_answer_are_not_lost(live, live_upstream):
    """A big sized answer is written by the worker thread and the connection closed after it, but only when no
    pipelined request waits behind it on that connection."""
    up, cid = live_upstream
    requests.get(f"http://{live.host}/api/docker/containers/proxy/{cid}/health",
                 headers={"Authorization": live.token}, timeout=10)  # start it first
    address, port = live.host.split(":")
    size = 2 * 2**20
    one = (f"GET /api/docker/containers/proxy/{cid}/bytes/{size} HTTP/1.1\r\nHost: localhost\r\n"
           f"Authorization: {live.token}\r\n\r\n").encode()
    two = (f"GET /api/docker/containers/proxy/{cid}/health HTTP/1.1\r\nHost: localhost\r\n"
           f"Authorization: {live.token}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((address, int(port)), timeout=10) as s:
        s.sendall(one + two)
        answer = b""
        while chunk := s.recv(2**20):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200") == 2 and len(answer) > size


# -- a container that ends under a request -----------------------------------------------------------------------------
def test_a_container_killed_under_a_request_is_explained_to_the_caller(client, token, ctx, orchestrator, upstream):
    cid = add_container(ctx, {"memory": 64})
    c = ctx.spawner.run(cid, "admin", await_start=True)
    assert client.get(proxy_url(cid, "/warm"), headers={"Authorization": token}).status_code == 200
    # the OOM killer ends the app while the request is in flight: the connection closes without an answer
    orchestrator.crash(c.docker_id, log="allocating 400 MB\n", oom_killed=True)
    resp = client.get(proxy_url(cid, "/hangup"), headers={"Authorization": token})
    assert resp.status_code == 500 and resp.get_json()["#type"] == "ApiError"
    message = resp.get_json()["message"]
    assert "killed for running out of memory: its limit is 64 MB (container.json `memory`)" in message
    assert "allocating 400 MB" in message
    assert status(ctx, cid) == "error"  # at once, not at the next watch
    assert ctx.store.get_container(cid).error in message


def test_a_broken_connection_of_a_running_container_is_not_blamed_on_an_exit(client, token, ctx, upstream):
    cid = add_container(ctx, {"memory": 64})
    ctx.spawner.run(cid, "admin", await_start=True)
    resp = client.get(proxy_url(cid, "/hangup"), headers={"Authorization": token})
    assert resp.status_code == 500 and "memory" not in resp.get_json()["message"]
    assert status(ctx, cid) == "started"
