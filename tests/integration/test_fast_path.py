"""The relay loop and the fetchProxy fast path (issue 14, server/relay.py, web/fast_proxy.py), on the real server:
a connection whose first request is a fetchProxy request leaves waitress and is served request after request on one
thread. These tests speak raw HTTP/1.1 on one socket, so they see what happens on that one connection."""
from __future__ import annotations

import json
import socket
import time

from tests.fake_upstream import proxy_url
from tests.helpers import RawReader, connect_raw, fast_containers, raw_request


def test_mixed_requests_on_one_keep_alive_connection(live):
    up, (a, b) = fast_containers(live)
    try:
        sock = connect_raw(live)
        reader = RawReader(sock)
        sock.sendall(raw_request(live, proxy_url(a, "/first?x=1"), live.token))
        status, headers, body = reader.answer()
        assert status == 200 and json.loads(body) == {"path": "/first?x=1"}
        assert headers.get("x-grokemu-cold-start-ms")  # the container was started for it
        # the API on the same (now relayed) connection: through the WSGI app
        sock.sendall(raw_request(live, "/api/users/current", live.token))
        status, _, body = reader.answer()
        assert status == 200 and json.loads(body)["login"] == "admin"
        # the dashboard page too
        sock.sendall(raw_request(live, "/", live.token, extra=f"Cookie: auth={live.token}\r\n"))
        status, headers, _ = reader.answer()
        assert status == 200 and headers["content-type"].startswith("text/html")
        # another container's proxied request
        sock.sendall(raw_request(live, proxy_url(b, "/second"), live.token))
        status, _, body = reader.answer()
        assert status == 200 and json.loads(body) == {"path": "/second"}
        # what the container saw: the caller's token as its identity, no grokemu credentials
        names = {k.lower(): v for k, v in up.last()["headers"]}
        assert names["x-user-api-key"] == live.token and "authorization" not in names
        # an error of grokemu's own on the relayed connection: ApiError JSON, connection kept
        sock.sendall(raw_request(live, proxy_url("00000000-0000-0000-0000-000000000000", "/x"), live.token))
        status, _, body = reader.answer()
        assert status == 404 and json.loads(body)["#type"] == "ApiError"
        sock.sendall(raw_request(live, proxy_url(a, "/third"), live.token))
        assert reader.answer()[0] == 200
        ports = [s["client_port"] for s in up.seen]
        assert ports[0] == ports[-1] and len(set(ports)) == 2  # one kept-alive upstream connection per container
        sock.close()
    finally:
        up.close()


def test_pipelined_requests_are_answered_in_order(live):
    up, (a, b) = fast_containers(live)
    try:
        sock = connect_raw(live)
        reader = RawReader(sock)
        batch = (raw_request(live, proxy_url(a, "/p1"), live.token) + raw_request(live, proxy_url(b, "/p2"), live.token)
                 + raw_request(live, "/api/users/current", live.token)
                 + raw_request(live, proxy_url(a, "/echo"), live.token, method="POST",
                            extra="Content-Type: text/plain\r\nContent-Length: 5\r\n") + b"hello"
                 + raw_request(live, proxy_url(a, "/p3"), live.token))
        sock.sendall(batch)
        answers = [reader.answer() for _ in range(5)]
        assert [s for s, _, _ in answers] == [200] * 5
        assert json.loads(answers[0][2]) == {"path": "/p1"} and json.loads(answers[1][2]) == {"path": "/p2"}
        assert json.loads(answers[2][2])["login"] == "admin"
        assert answers[3][2] == b"hello"
        assert json.loads(answers[4][2]) == {"path": "/p3"}
        sock.close()
    finally:
        up.close()


def test_a_caller_that_disconnects_mid_answer_releases_everything(live):
    up, (a,) = fast_containers(live, 1)
    try:
        sock = connect_raw(live)
        sock.sendall(raw_request(live, proxy_url(a, "/bytes/1000"), live.token))
        assert RawReader(sock).answer()[0] == 200  # the connection is relayed now
        sock.sendall(raw_request(live, proxy_url(a, f"/bytes/{64 * 1024 * 1024}"), live.token))
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset mid-answer
        takeover = live.takeover
        deadline = time.time() + 10
        while (takeover.streams.busy or live.ctx.activity.active(a)) and time.time() < deadline:
            time.sleep(0.05)
        assert takeover.streams.busy == 0 and live.ctx.activity.active(a) == 0
        # the server serves on
        sock = connect_raw(live)
        sock.sendall(raw_request(live, proxy_url(a, "/after"), live.token))
        assert RawReader(sock).answer()[0] == 200
        sock.close()
    finally:
        up.close()


def test_a_session_revoked_between_two_requests_is_refused_on_the_same_connection(live):
    up, (a,) = fast_containers(live, 1)
    try:
        token = live.ctx.auth.token_for("admin")
        sock = connect_raw(live)
        reader = RawReader(sock)
        sock.sendall(raw_request(live, proxy_url(a, "/one"), token))
        assert reader.answer()[0] == 200
        live.ctx.auth.revoke(token)
        sock.sendall(raw_request(live, proxy_url(a, "/two"), token))
        status, _, body = reader.answer()
        assert status == 401 and json.loads(body)["#type"] == "ApiError"
        assert [s["path"] for s in up.seen] == ["/one"]
        sock.close()
    finally:
        up.close()


def test_guard_rules_hold_on_a_relayed_connection(live):
    up, (a,) = fast_containers(live, 1)
    try:
        sock = connect_raw(live)
        reader = RawReader(sock)
        sock.sendall(raw_request(live, proxy_url(a, "/ok"), live.token))
        assert reader.answer()[0] == 200
        # a foreign Origin, a cross-site cookie-only request, a foreign Host: refused as through Flask
        sock.sendall(raw_request(live, proxy_url(a, "/x"), live.token, extra="Origin: http://evil.example\r\n"))
        assert reader.answer()[0] == 403
        sock.sendall(raw_request(live, proxy_url(a, "/x"), None,
                              extra=f"Cookie: auth={live.token}\r\nSec-Fetch-Site: cross-site\r\n"))
        assert reader.answer()[0] == 403
        sock.sendall(f"GET {proxy_url(a, '/x')} HTTP/1.1\r\nHost: attacker.example\r\n"
                     f"Authorization: {live.token}\r\n\r\n".encode())
        assert reader.answer()[0] == 403
        # a body over the route's limit: refused before it is read, connection closed
        sock.sendall(raw_request(live, proxy_url(a, "/echo"), live.token, method="POST",
                              extra=f"Content-Length: {2 ** 40}\r\n"))
        status, headers, _ = reader.answer()
        assert status == 413 and headers.get("connection") == "close"
        assert [s["path"] for s in up.seen] == ["/ok"]
        sock.close()
    finally:
        up.close()
