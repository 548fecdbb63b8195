"""How the blocking relay frames an app's answer (server/relay.py `_send_answer`, h11 underneath): one right head for
each case of length, chunking, body-less answers and the connection's reuse, and the body bytes after it."""
from __future__ import annotations

import pytest

from grokemu.server.relay import _send_answer


class _Sock:
    def __init__(self):
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def _frame(status="200 OK", headers=(), method="GET", keep=True, body=None, version="1.1"):
    """(head, body bytes, keep) as they went out."""
    sock = _Sock()
    kept = _send_answer(sock, method, version, keep, status, list(headers), body if body is not None else iter([]),
                        "grokemu", lambda: "DATE")
    wire = b"".join(sock.writes)
    head, _, rest = wire.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest, kept, sock.writes


def test_a_body_given_whole_is_counted_and_the_connection_stays():
    head, rest, keep, writes = _frame(headers=[("Content-Type", "text/plain")], body=[b"ab", b"c"])
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nServer: grokemu\r\n"
                    b"Date: DATE\r\n\r\n")
    assert (rest, keep) == (b"abc", True)


def test_a_small_answer_given_whole_is_one_write():
    head, rest, keep, writes = _frame(body=[b"hello"])
    assert len(writes) == 1 and rest == b"hello" and keep


def test_an_unsized_streamed_body_is_chunked_on_a_kept_connection_and_until_close_otherwise():
    head, rest, keep, _ = _frame(body=iter([b"ab", b"", b"cde"]))
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n") and b"Content-Length" not in head and keep
    assert rest == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
    head, rest, keep, _ = _frame(keep=False, body=iter([b"ab", b"cde"]))
    assert b"chunked" not in head and not keep and head.endswith(b"Connection: close\r\n\r\n")
    assert rest == b"abcde"


def test_a_streamed_head_goes_out_before_the_body_is_asked_for():
    sock = _Sock()

    def body():
        assert sock.writes and sock.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")  # the caller has the head
        yield b"x"

    assert _send_answer(sock, "GET", "1.1", True, "200 OK", [], body(), "grokemu", lambda: "DATE")


def test_the_apps_own_connection_close_server_and_date_win():
    head, rest, keep, _ = _frame(headers=[("Connection", "close"), ("Server", "app"), ("Date", "then"),
                                          ("Content-Length", "0")])
    assert not keep and head.count(b"Server:") == 1 and head.count(b"Date:") == 1
    assert b"Server: app" in head and b"Date: then" in head and rest == b""


def test_a_body_is_cut_at_its_content_length_and_a_short_one_closes_the_connection():
    head, rest, keep, _ = _frame(headers=[("Content-Length", "3")], body=iter([b"ab", b"cdef"]))
    assert (rest, keep) == (b"abc", True)
    head, rest, keep, _ = _frame(headers=[("Content-Length", "5")], body=iter([b"ab"]))
    assert (rest, keep) == (b"ab", False)


@pytest.mark.parametrize(("status", "method"), [("204 No Content", "GET"), ("304 Not Modified", "GET"),
                                                ("200 OK", "HEAD")])
def test_body_less_answers_are_neither_counted_nor_given_a_body(status, method):
    head, rest, keep, _ = _frame(status=status, method=method, body=[b"ignored"])
    assert rest == b"" and keep and b"Content-Length" not in head
    if status != "200 OK":
        assert b"chunked" not in head
    else:  # a HEAD answer's headers are the GET's (RFC 9110 §9.3.2): unsized, so chunked, with no body bytes
        assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")


def test_a_head_answer_keeps_the_apps_content_length():
    head, rest, keep, _ = _frame(method="HEAD", headers=[("Content-Length", "10")], body=[b"0123456789"])
    assert b"Content-Length: 10\r\n" in head and rest == b"" and keep


def test_an_informational_status_is_no_final_answer():
    with pytest.raises(ValueError):
        _frame(status="101 Switching Protocols", body=[b"ignored"])


def test_an_http10_caller_gets_its_answer_until_close():
    head, rest, keep, _ = _frame(version="1.0", keep=False, body=iter([b"ab"]))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"chunked" not in head and rest == b"ab" and not keep
