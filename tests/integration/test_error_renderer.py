"""Every error answer grokemu writes comes from the one renderer (web/errors.py render, house rule 6), whichever way
it goes out: a Flask view, the guard's preflight, a preflight that failed, waitress's parser refusing a head (on a
waitress connection and on one the blocking relay serves), a full stream pool (waitress's side and the relay
loop's), the fast path's errors (a domain error, an unexpected exception), the relay loop's own failure answer, and
the WebSocket upgrade's 400.

The renderer is wrapped before the server is built (bootstrap.py hands it to the server through WebHooks): the
wrapper adds a marker header, so an answer carrying it was rendered there and nowhere else; every body is then
checked to be Datagrok's ApiError, the same keys on every path."""
from __future__ import annotations

import dataclasses
import json
import socket
import threading

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.app import create_app
from grokemu.bootstrap import create_server
from grokemu.server import bind
from grokemu.web import errors, proxy
from grokemu.web.context import app_context
from tests.fake_upstream import proxy_url
from tests.helpers import Live, RawAnswers, connect_raw, fast_containers, raw_request, relayed, wait_until

MARK = ("X-Test-Renderer", "web/errors.py")
API_ERROR_KEYS = {"#type", "message", "innerMessage", "code", "datagrok-error"}


@pytest.fixture
def rendered(monkeypatch):
    """Every (error class, path) the one renderer rendered from now on; its answers carry MARK."""
    calls: list[tuple[str, str]] = []
    real = errors.render

    def spy(e, path, blueprint=None):
        calls.append((type(e).__name__, path))
        status, headers, body = real(e, path, blueprint)
        return status, headers + [MARK], body

    monkeypatch.setattr(errors, "render", spy)
    return calls


@pytest.fixture
def server(rendered, tmp_path, settings, clock):
    """The real server as `grokemu up` builds it (the guard's preflight included), with the renderer wrapped; a
    request with `X-Boom` makes the preflight raise."""
    app = create_app(dataclasses.replace(settings, threads=2, proxy_request_timeout=5.0, max_streams=4),
                     orchestrator=MemoryOrchestrator(), clock=clock, background=True)
    guard = app_context(app).guard

    def preflight(environ):
        if "HTTP_X_BOOM" in environ:
            raise RuntimeError("boom")
        return guard.preflight(environ)

    sockets = bind("127.0.0.1", 0, [])
    srv = create_server(app, sockets, threads=2, streamed_prefixes=(proxy.HTTP_PREFIX,), preflight=preflight)
    threading.Thread(target=srv.run, daemon=True).start()
    yield Live(app, f"127.0.0.1:{sockets[0].getsockname()[1]}", 0, srv.application)
    srv.close()


def _api_error(got, status: int) -> dict:
    """The answer is `status`, marked as the renderer's, framed to close, with the ApiError shape."""
    assert got.status == status, (got.line, got.body)
    assert (MARK[0].lower(), MARK[1]) in got.pairs, got.pairs
    assert got.headers["content-type"] == "application/json" and got.headers["api-error"] == "true"
    assert int(got.headers["content-length"]) == len(got.body)
    body = json.loads(got.body)
    assert set(body) == API_ERROR_KEYS and body["#type"] == "ApiError" and body["code"] == status, body
    assert body["datagrok-error"] == body["message"] and body["message"], body
    return body


def _fresh(live) -> tuple[socket.socket, RawAnswers]:
    sock = connect_raw(live)
    return sock, RawAnswers(sock)


def test_a_view_and_the_preflight_render_through_it(server, rendered):
    sock, answers = _fresh(server)
    sock.sendall(raw_request(server, "/api/docker/containers/nope", server.token))
    assert "not found" in _api_error(answers.read(), 404)["message"].lower()
    sock.close()
    # the guard refuses a publish without credentials before its body is read
    sock, answers = _fresh(server)
    sock.sendall(f"POST /api/packages/dev/acme HTTP/1.1\r\nHost: {server.host}\r\nContent-Length: 10\r\n\r\n".encode())
    _api_error(answers.read(), 401)
    sock.settimeout(5)
    assert sock.recv(1) == b""  # closed after the refusal, the body never read
    sock.close()
    assert ("NotFound", "/api/docker/containers/nope") in rendered
    assert ("Unauthorized", "/api/packages/dev/acme") in rendered


def test_a_preflight_that_fails_renders_a_500_on_waitress_and_on_the_relay(server, rendered):
    sock, answers = _fresh(server)
    sock.sendall(f"POST /api/packages/dev/acme HTTP/1.1\r\nHost: {server.host}\r\nX-Boom: 1\r\nContent-Length: 10\r\n\r\n"
                 .encode())
    assert _api_error(answers.read(), 500)["message"] == "grokemu could not check this request"
    sock.close()
    up, (cid,) = fast_containers(server, 1)
    try:
        sock, answers = relayed(server, cid)  # the loop hands a request with a body to the blocking relay
        sock.sendall(raw_request(server, proxy_url(cid, "/x"), server.token, method="POST",
                                 extra="X-Boom: 1\r\nContent-Length: 4\r\n"))
        assert _api_error(answers.read(), 500)["message"] == "grokemu could not check this request"
        sock.close()
    finally:
        up.close()
    assert rendered.count(("GrokemuError", "/api/packages/dev/acme")) == 1
    assert rendered.count(("GrokemuError", proxy_url(cid, "/x"))) == 1


def test_a_head_waitress_refuses_is_rendered_on_waitress_and_on_the_relay(server, rendered):
    sock, answers = _fresh(server)
    sock.sendall(f"GET /api/info/server HTTP/1.1\r\nHost: {server.host}\r\nBad Header\r\n\r\n".encode())
    got = answers.read()
    # waitress's status line, as before (HTTP/1.0: the head never parsed far enough); the body is the ApiError
    assert got.line == "HTTP/1.0 400 Bad Request"
    assert _api_error(got, 400)["message"] == "Bad Request: Invalid header"
    sock.close()
    up, (cid,) = fast_containers(server, 1)
    try:
        sock, answers = relayed(server, cid)
        sock.sendall(f"GET {proxy_url(cid, '/x')} HTTP/1.1\r\nHost: {server.host}\r\nBad Header\r\n\r\n".encode())
        got = answers.read()
        assert got.line == "HTTP/1.1 400 Bad Request"
        assert _api_error(got, 400)["message"] == "Bad Request: Invalid header"
        sock.close()
    finally:
        up.close()
    # waitress's parser stops before it keeps the path: rendered for no path (the ApiError, not the OCI envelope)
    assert [c for c in rendered if c[0] == "RequestRefused"] == [("RequestRefused", "")] * 2


def test_a_full_stream_pool_is_rendered_by_waitress_and_by_the_relay_loop(server, rendered):
    up, (cid,) = fast_containers(server, 1)
    streams = server.takeover.streams
    try:
        looped, loop_answers = relayed(server, cid)  # a connection in the loop, before the pool fills
        wait_until(lambda: streams.busy == 0, 10, "the blocking relay gave its stream back")
        taken = 0
        while streams.try_acquire():
            taken += 1
        assert taken > 0 and streams.busy == streams.limit  # every slot is taken
        sock, answers = _fresh(server)  # waitress's side: ConnectionTakeover.serve_proxied refuses
        sock.sendall(raw_request(server, proxy_url(cid, "/x"), server.token))
        assert "max_streams" in _api_error(answers.read(), 503)["message"]
        sock.close()
        # the loop hands a request with a body off, and there is no stream for it: RelayLoop._refuse_busy
        looped.sendall(raw_request(server, proxy_url(cid, "/y"), server.token, method="POST",
                                   extra="Content-Length: 2\r\n") + b"{}")
        assert "max_streams" in _api_error(loop_answers.read(), 503)["message"]
        looped.close()
        for _ in range(taken):
            streams.release()
    finally:
        up.close()
    assert [c for c in rendered if c[0] == "Busy"] == [("Busy", proxy_url(cid, "/x")), ("Busy", "")]


def test_the_fast_path_and_the_relay_loop_render_their_failures(server, rendered, monkeypatch):
    up, (cid,) = fast_containers(server, 1)
    try:
        sock, answers = relayed(server, cid)
        sock.sendall(raw_request(server, proxy_url(cid, "/hangup"), server.token))  # the loop's own failure
        assert "connection was closed" in _api_error(answers.read(), 500)["message"]
        sock.close()
        sock, answers = relayed(server, cid)
        sock.sendall(raw_request(server, proxy_url("nope", "/x"), server.token))  # FastProxy.handle: a domain error
        _api_error(answers.read(), 404)
        sock.close()
        sock, answers = relayed(server, cid)

        def broken(*_args, **_kwargs):
            raise RuntimeError("something no one expected")

        monkeypatch.setattr(server.ctx.proxy, "forward", broken)  # FastProxy.handle: an unexpected exception
        sock.sendall(raw_request(server, proxy_url(cid, "/y"), server.token, method="POST",
                                 extra="Content-Length: 2\r\n") + b"{}")
        body = _api_error(answers.read(), 500)
        assert body["message"] == "Internal error: something no one expected" and body["innerMessage"] == "RuntimeError"
        sock.close()
    finally:
        up.close()
    assert ("UpstreamFailed", proxy_url(cid, "/hangup")) in rendered
    assert ("NotFound", proxy_url("nope", "/x")) in rendered
    assert ("GrokemuError", proxy_url(cid, "/y")) in rendered


def test_a_bad_websocket_upgrade_is_rendered(server, rendered):
    sock, answers = _fresh(server)
    sock.sendall(f"GET /api/docker/containers/proxy-ws/nope/ws HTTP/1.1\r\nHost: {server.host}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nAuthorization: {server.token}\r\n\r\n".encode())  # no Sec-WebSocket-Key
    assert _api_error(answers.read(), 400)["message"].startswith("Bad WebSocket upgrade: ")
    sock.close()
    assert [c for c in rendered if c[0] == "BadRequest"] == [("BadRequest", "/api/docker/containers/proxy-ws/nope/ws")]
