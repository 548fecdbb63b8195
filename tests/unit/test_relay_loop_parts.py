"""The relay loop's pure parts (server/relay_loop.py, adapters/upstream_headers.py): how a container's answer head is
shaped for the caller, and the reused request header block of a body-less request, which must equal the one built
from scratch. Where a chunked body ends is tests/unit/test_http1_chunked.py."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from grokemu.adapters.upstream_headers import bodyless_request_head
from grokemu.domain.upstream import ProxiedRequest, proxied_request
from grokemu.server.relay_answer import _caller_head

DATE = "Sun, 29 Nov 2026 18:00:00 GMT"


def test_shape_drops_hop_by_hop_and_connection_named_headers_and_adds_server_and_date():
    shape = _caller_head(b"HTTP/1.1 201 Created\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
                          b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 3", False, True, DATE)
    assert (shape.status, shape.framing, shape.length, shape.keep_up) == (201, "length", 3, True)
    assert shape.head == (b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 3\r\n"
                          b"Server: grokemu\r\nDate: " + DATE.encode() + b"\r\n\r\n")


def test_shape_keeps_the_containers_server_and_date_and_says_close_when_the_caller_does():
    shape = _caller_head(b"HTTP/1.1 200 OK\r\nServer: app\r\nDate: then\r\nContent-Length: 0", False, False, DATE)
    assert shape.head == b"HTTP/1.1 200 OK\r\nServer: app\r\nDate: then\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("head, method_head, framing, keep_up", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9", False, "chunked", True),
    (b"HTTP/1.0 200 OK", False, "close", False),  # till the container closes: re-chunked for the caller
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2", False, "length", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2", False, "length", True),
    (b"HTTP/1.1 204 No Content", False, "none", True),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10", False, "none", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10", True, "none", True),
])
def test_shape_framing(head, method_head, framing, keep_up):
    shape = _caller_head(head, method_head, True, DATE)
    assert (shape.framing, shape.keep_up) == (framing, keep_up)
    if framing in ("chunked", "close"):
        assert shape.head.count(b"Transfer-Encoding: chunked") == 1 and b"Content-Length" not in shape.head


def test_shape_marks_informational_answers_and_refuses_what_is_not_http():
    assert _caller_head(b"HTTP/1.1 103 Early Hints\r\nLink: </a>", False, True, DATE).informational
    for bad in (b"SSH-2.0-OpenSSH", b"HTTP/1.1 \xb2\xb2\xb2 OK", b"HTTP/1.1 200 OK\r\nContent-Length: -1",
                b"HTTP/1.1 200 OK\r\nContent-Length: x", b"HTTP/1.1 200 OK\r\nContent-Length: \xb2"):
        with pytest.raises((ValueError, ConnectionError)):
            _caller_head(bad, False, True, DATE)


def _environ(raw: bytes | None, **headers) -> dict:
    environ = {"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", **headers}
    if raw is not None:
        ProxiedRequest(raw).carry(environ)
    return environ


def _head(address, method, target, environ, identity) -> bytes:
    # as the fast path passes it on (web/fast_proxy.py FastProxy.plan): the ProxiedRequest the relay loop carried
    return bodyless_request_head(address, method, target, environ, identity, proxied_request(environ))


def test_a_reused_request_header_block_equals_the_one_built_from_scratch():
    headers = {"HTTP_HOST": "localhost:8080", "HTTP_COOKIE": "auth=secret; theme=dark", "HTTP_AUTHORIZATION": "tok",
               "HTTP_ACCEPT": "*/*"}
    raw = b"Host: localhost:8080\r\nCookie: auth=secret; theme=dark\r\nAuthorization: tok\r\nAccept: */*\r\n\r\n"
    address = ("127.0.0.1", 32768)
    fresh = _head(address, "GET", "/a?x=1", _environ(None, **headers), "tok")
    first = _head(address, "GET", "/a?x=1", _environ(raw, **headers), "tok")
    again = _head(address, "DELETE", "/b", _environ(raw, **headers), "tok")
    assert first == fresh
    assert again == fresh.replace(b"GET /a?x=1 ", b"DELETE /b ")
    assert b"auth=secret" not in fresh and b"Authorization" not in fresh and b"X-User-Api-Key: tok" in fresh
    # what the block depends on besides the header lines: another identity, container, caller or an empty POST
    assert b"X-User-Api-Key: other" in _head(address, "GET", "/a", _environ(raw, **headers), "other")
    assert b"Host: 127.0.0.1:1\r\n" in _head(("127.0.0.1", 1), "GET", "/a", _environ(raw, **headers),
                                                            "tok")
    assert b"X-Forwarded-For: 10.0.0.9" in _head(
        address, "GET", "/a", {**_environ(raw, **headers), "REMOTE_ADDR": "10.0.0.9"}, "tok")
    assert b"Content-Length: 0" in _head(address, "POST", "/a", _environ(raw, **headers), "tok")


@settings(max_examples=300, deadline=None)
@given(head=st.one_of(st.binary(max_size=200),
                      st.builds(lambda status, lines: b"HTTP/1.1 " + status + b" X\r\n" + b"\r\n".join(lines),
                                st.binary(min_size=3, max_size=3),
                                st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")), max_size=5))),
       method_head=st.booleans(), keep=st.booleans())
def test_shape_of_any_answer_head_is_a_head_or_a_broken_answer(head, method_head, keep):
    try:
        shape = _caller_head(head, method_head, keep, DATE)
    except (ConnectionError, ValueError):
        return
    assert shape.informational or (shape.head.startswith(b"HTTP/1.1 ") and shape.head.endswith(b"\r\n\r\n"))
