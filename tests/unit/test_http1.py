"""The HTTP/1.1 wire rules (grokemu/http1.py) as the blocking relay frames an app's answer: one right head for each
case of length, chunking, body-less answers and the connection's reuse."""
from __future__ import annotations

import pytest

from grokemu.http1 import frame_answer


def _frame(status="200 OK", headers=(), method="GET", keep=True, body=None, version="1.1"):
    return frame_answer(version, status, list(headers), method, keep, body, "grokemu", lambda: "DATE")


def test_a_body_given_whole_is_counted_and_the_connection_stays():
    f = _frame(headers=[("Content-Type", "text/plain")], body=[b"ab", b"c"])
    assert f.head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nServer: grokemu\r\n"
                      b"Date: DATE\r\n\r\n")
    assert (f.length, f.chunked, f.no_body, f.keep) == (3, False, False, True)


def test_an_unsized_streamed_body_is_chunked_on_a_kept_connection_and_until_close_otherwise():
    kept = _frame()
    assert kept.chunked and kept.length is None and kept.head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    closing = _frame(keep=False)
    assert not closing.chunked and not closing.keep and closing.head.endswith(b"Connection: close\r\n\r\n")


def test_the_apps_own_connection_close_server_and_date_win():
    f = _frame(headers=[("Connection", "close"), ("Server", "app"), ("Date", "then"), ("Content-Length", "0")])
    assert not f.keep and f.head.count(b"Server:") == 1 and f.head.count(b"Date:") == 1
    assert b"Server: app" in f.head and b"Date: then" in f.head


@pytest.mark.parametrize(("status", "method"), [("204 No Content", "GET"), ("304 Not Modified", "GET"),
                                                ("101 Switching Protocols", "GET"), ("200 OK", "HEAD")])
def test_body_less_answers_are_neither_counted_nor_chunked(status, method):
    f = _frame(status=status, method=method, body=[b"ignored"])
    assert f.no_body and not f.chunked and f.length is None and b"Content-Length" not in f.head
