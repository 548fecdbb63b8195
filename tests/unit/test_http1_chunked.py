"""The one chunked decoder (http1.py ChunkedDecoder) the relay loop, the lean upstream pool and the request
inspector share: where a chunked body ends however its bytes are split (the loop passes them through), the chunks'
data (the lean pool hands it out), the inspector's lenient preview, and the one stale-socket retry rule."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from grokemu.http1 import MAX_CHUNK_LINE, ChunkedDecoder, dechunk_preview, retry_on_stale


def _chunked(pieces: list[bytes], trailers: list[bytes]) -> bytes:
    body = b"".join(b"%x;ext=1\r\n" % len(p) + p + b"\r\n" for p in pieces if p)
    return body + b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"


def _feed_split(stream: bytes, cuts: list[int], out: list[bytes] | None = None) -> int:
    """Feed `stream` cut at `cuts`; the offset where the decoder said the body ends, -1 when it did not."""
    decoder, offset = ChunkedDecoder(), 0
    for cut in sorted({min(c, len(stream)) for c in cuts} | {len(stream)}):
        part = stream[offset:cut]
        if not part:
            continue
        found = decoder.feed(part, out)
        if found >= 0:
            return offset + found
        offset = cut
    return -1


pieces_st = st.lists(st.binary(min_size=1, max_size=300), max_size=6)
trailers_st = st.lists(st.sampled_from([b"X-Sum: 1", b"X-Other: two"]), max_size=2)
cuts_st = st.lists(st.integers(min_value=0, max_value=2000), max_size=6)


@settings(max_examples=200, deadline=None)
@given(pieces=pieces_st, trailers=trailers_st, cuts=cuts_st, after=st.binary(max_size=20))
def test_decoder_finds_the_end_however_the_bytes_are_split(pieces, trailers, cuts, after):
    body = _chunked(pieces, trailers)
    assert _feed_split(body + after, cuts) == len(body)


@settings(max_examples=200, deadline=None)
@given(pieces=pieces_st, trailers=trailers_st, cuts=cuts_st, after=st.binary(max_size=20))
def test_decoder_hands_out_exactly_the_data_however_the_bytes_are_split(pieces, trailers, cuts, after):
    body = _chunked(pieces, trailers)
    out: list[bytes] = []
    assert _feed_split(body + after, cuts, out) == len(body)
    assert b"".join(out) == b"".join(pieces)
    assert all(out)  # no empty pieces handed out


def test_decoder_data_mode_keeps_what_came_before_a_malformed_size():
    out: list[bytes] = []
    with pytest.raises(ValueError):
        ChunkedDecoder().feed(b"3\r\nabc\r\nzz\r\n", out)
    assert out == [b"abc"]


def test_decoder_takes_a_bare_lf_line_end():
    out: list[bytes] = []
    assert ChunkedDecoder().feed(b"2\nhi\r\n0\n\n", out) == 9
    assert out == [b"hi"]


@pytest.mark.parametrize("size", [b"zz", b"-5", b"0x5", b"1_0", b"+5", b""])
def test_decoder_refuses_a_malformed_size(size):
    with pytest.raises(ValueError):
        ChunkedDecoder().feed(size + b"\r\nhello\r\n")
    with pytest.raises(ValueError):
        ChunkedDecoder().feed(size + b"\r\nhello\r\n", [])


def test_decoder_refuses_an_endless_size_line():
    with pytest.raises(ValueError):
        ChunkedDecoder().feed(b"1" * 5000)
    decoder = ChunkedDecoder()  # the limit holds across feeds too
    assert decoder.feed(b"1" * MAX_CHUNK_LINE) == -1
    with pytest.raises(ValueError):
        decoder.feed(b"1")


def test_decoder_refuses_an_endless_trailer_line():
    decoder = ChunkedDecoder()
    assert decoder.feed(b"0\r\n") == -1
    with pytest.raises(ValueError):
        decoder.feed(b"X-T: " + b"a" * MAX_CHUNK_LINE)


def test_preview_of_a_whole_body_is_its_data():
    assert dechunk_preview(_chunked([b"hello ", b"world"], [b"X-Sum: 1"])) == b"hello world"


def test_preview_of_a_body_cut_in_a_chunk_keeps_the_part_that_came():
    assert dechunk_preview(b"5\r\nhello\r\nb\r\nwor") == b"hellowor"


@pytest.mark.parametrize("data, preview", [
    (b"5\r\nhello\r\n-5\r\nworld\r\n", b"hello"),  # a size int() would take: stops there, quietly
    (b"5\r\nhello\r\n0x5\r\nworld\r\n", b"hello"),
    (b"zz\r\nhello\r\n", b""),
    (b"5", b""),  # no line end yet
    (b"", b""),
    (b"1" * 5000, b""),  # an endless size line
])
def test_preview_stops_quietly_at_the_first_malformed_or_missing_byte(data, preview):
    assert dechunk_preview(data) == preview


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_preview_never_raises_and_is_never_longer_than_its_input(data):
    assert len(dechunk_preview(data)) <= len(data)


@pytest.mark.parametrize("method, reused, answered, retry", [
    ("GET", True, 0, True),
    ("HEAD", True, 0, True),
    ("OPTIONS", True, 0, True),
    ("GET", False, 0, False),  # a fresh socket that fails is the container's answer, not a stale socket
    ("GET", True, 1, False),  # part of the answer came: never replayed
    ("POST", True, 0, False),
    ("PUT", True, 0, False),
    ("DELETE", True, 0, False),
])
def test_retry_on_stale(method, reused, answered, retry):
    assert retry_on_stale(method, reused, answered) is retry
