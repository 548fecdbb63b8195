"""The request inspector's parts without a server (services/inspector/, domain/redaction.py): redaction rules,
previews, the WebSocket frame reader, call entries, and a ring that stays bounded."""
from __future__ import annotations

import gzip
import json
import os
import zlib

import pytest

from grokemu.domain.clock import ManualClock
from grokemu.domain.redaction import REDACTED, Redactor, is_credential_name
from grokemu.domain.upstream import ProxiedRequest
from grokemu.services.inspector import FRAME_PREVIEW, MAX_FRAMES, PREVIEW, RequestInspector

TOKEN = "tok-" + "A" * 39
KEY = "dev-key-xyz"


@pytest.fixture
def inspector():
    return RequestInspector(5, [KEY, "ab"], ManualClock())


def record(inspector, cid="c1", target="/x", environ=None, token=TOKEN, status=200, body=b"", headers=(),
           chunked=False, request=b"", relayed=None):
    rec = inspector.begin(cid, "GET", target, environ or {}, token, relayed=relayed)
    if request:
        rec.request_body_bytes(request)
    rec.answered(status, rec.response_meta(headers, chunked))
    for i in range(0, len(body), 1000):
        rec.body(body[i:i + 1000])
    rec.finish()
    return inspector.entries(cid, 1)[0]


@pytest.mark.parametrize("name", ["Authorization", "cookie", "Set-Cookie", "X-User-Api-Key", "X-Api-Key",
                                  "x_auth_token", "X-Session-Id", "Proxy-Authorization", "X-Secret",
                                  "X-Datagrok-Dev-Key", "api_key", "password"])
def test_credential_names(name):
    assert is_credential_name(name)


@pytest.mark.parametrize("name", ["Content-Type", "Accept", "WWW-Authenticate", "Keep-Alive", "X-Method",
                                  "Sec-WebSocket-Version", "page"])
def test_ordinary_names(name):
    assert not is_credential_name(name)


def test_secrets_are_cut_out_everywhere_and_short_keys_are_not_searched_for():
    r = Redactor([KEY, "ab"])
    secrets = r.secrets(TOKEN)
    assert secrets == (TOKEN.encode(), KEY.encode())
    assert r.text(f"a {TOKEN} b {KEY} ab", secrets) == f"a {REDACTED} b {REDACTED} ab"
    assert r.target(f"/p/{TOKEN}?token=1&api_key=2&q={KEY}&flag", secrets) == \
        f"/p/{REDACTED}?token={REDACTED}&api_key={REDACTED}&q={REDACTED}&flag"
    assert r.headers([("Authorization", "Bearer x"), ("X-Note", f"it is {TOKEN}")], secrets) == (
        ("Authorization", REDACTED), ("X-Note", f"it is {REDACTED}"))


def test_a_secret_cut_at_the_end_of_a_preview_goes():
    r = Redactor([])
    secrets = r.secrets(TOKEN)
    assert r.scrub(b"head " + TOKEN.encode()[:20], secrets, cut=True) == b"head " + REDACTED.encode()
    assert r.scrub(b"head " + TOKEN.encode()[:20], secrets, cut=False) == b"head " + TOKEN.encode()[:20]
    assert r.scrub(b"abc", secrets, cut=True) == b"abc"


def test_headers_are_bounded():
    r = Redactor([])
    got = r.headers([(f"X-{i}", "v" * 5000) for i in range(500)], ())
    assert len(got) == 101 and got[-1][0] == "…" and len(got[0][1]) == 2048


def test_the_ring_keeps_the_last_n_of_10000(inspector):
    for i in range(10_000):
        record(inspector, target=f"/n/{i}", body=b"x" * 10)
    got = inspector.entries("c1")
    assert [e["path"] for e in got] == [f"/n/{i}" for i in range(9999, 9994, -1)]
    assert len(inspector._rings["c1"]) == 5
    assert [e["path"] for e in inspector.entries("c1", 2)] == ["/n/9999", "/n/9998"]


def test_previews_keep_at_most_4_kib_and_count_the_rest(inspector):
    e = record(inspector, body=b"y" * 100_000, request=b"r" * 10_000)
    assert e["responseSize"] == 100_000 and len(e["responseBody"]) == PREVIEW
    assert e["requestSize"] == 10_000 and len(e["requestBody"]) == PREVIEW and e["truncated"] is True


def test_binary_is_hex_and_utf8_cut_mid_character_is_text(inspector):
    assert record(inspector, body=bytes([0, 1, 255]))["responseBody"] == "0001ff"
    text = ("é" * 3000).encode()  # 6000 bytes: the preview ends inside a character
    e = record(inspector, body=text)
    assert e["responseBodyEncoding"] == "text" and set(e["responseBody"]) == {"é"}


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("encoding, encode", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                              ("deflate", _raw_deflate)])
def test_compressed_answers_are_decoded_then_scrubbed(inspector, encoding, encode):
    plain = json.dumps({"token": TOKEN, "n": 1}).encode()
    e = record(inspector, body=encode(plain), headers=[("Content-Encoding", encoding)])
    assert e["responseDecoded"] == encoding and json.loads(e["responseBody"]) == {"token": REDACTED, "n": 1}
    assert TOKEN not in json.dumps(e) and e["truncated"] is False


def test_an_encoding_not_decoded_is_not_shown(inspector):
    e = record(inspector, body=os.urandom(100), headers=[("Content-Encoding", "br")])
    assert e["responseBody"] is None and e["truncated"] is True


def test_a_chunked_body_passed_framed_is_previewed_as_its_data(inspector):
    e = record(inspector, body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", chunked=True)
    assert e["responseBody"] == "hello world"


def test_a_token_echoed_in_an_answer_header_is_cut_out(inspector):
    e = record(inspector, headers=[("X-Echo", f"got {TOKEN}"), ("Set-Cookie", "s=1")])
    assert dict(e["responseHeaders"]) == {"X-Echo": f"got {REDACTED}", "Set-Cookie": REDACTED}


def test_relay_loop_header_blocks_are_redacted_once(inspector):
    raw = f"Host: x\r\nAuthorization: {TOKEN}\r\nX-A: 1".encode()
    e1 = record(inspector, relayed=ProxiedRequest(raw))
    record(inspector, relayed=ProxiedRequest(raw))
    assert dict(e1["requestHeaders"]) == {"Host": "x", "Authorization": REDACTED, "X-A": "1"}
    assert len(inspector._request_heads) == 1


def test_off_records_nothing():
    off = RequestInspector(0, [], ManualClock())
    assert off.begin("c", "GET", "/", {}, None) is None and off.websocket("c", "/", {}, None) is None
    off.call("c", "F:f", 0.0, "Completed", 1.0, {}, {}, None, None)
    assert off.entries("c") == []


def _frame(opcode: int, payload: bytes, mask: bytes | None) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([m | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def test_websocket_frames_are_read_across_chunks_unmasked_and_scrubbed(inspector):
    tap = inspector.websocket("c1", "/ws", {}, TOKEN)
    sent = _frame(1, f"hi {TOKEN}".encode(), b"\x01\x02\x03\x04") + _frame(2, b"\x00" * 70_000, b"abcd") \
        + _frame(8, (1000).to_bytes(2, "big") + b"bye", b"wxyz")
    for i in range(0, len(sent), 7):  # byte-dribbled: headers split across chunks
        tap.from_caller(sent[i:i + 7])
    tap.from_container(_frame(1, b"hello", None) + _frame(8, (1000).to_bytes(2, "big"), None))
    assert inspector.entries("c1")[0]["open"] is True
    tap.close()
    [e] = inspector.entries("c1")
    assert e["open"] is False and e["closeCode"] == 1000 and e["closedBy"] == "caller"
    assert (e["framesSent"], e["framesReceived"]) == (3, 2)
    frames = [(f["direction"], f["opcode"], f["size"]) for f in e["frames"]]
    assert frames == [("sent", "text", len(f"hi {TOKEN}")), ("sent", "binary", 70_000), ("sent", "close", 5),
                      ("received", "text", 5), ("received", "close", 2)]
    assert e["frames"][0]["data"] == f"hi {REDACTED}" and len(e["frames"][1]["data"]) == 2 * FRAME_PREVIEW
    assert e["requestSize"] == len(sent) and TOKEN not in json.dumps(e)


def test_websocket_frames_listed_are_bounded(inspector):
    tap = inspector.websocket("c1", "/ws", {}, None)
    tap.from_container(b"".join(_frame(1, b"x", None) for _ in range(MAX_FRAMES + 50)))
    [e] = inspector.entries("c1")
    assert len(e["frames"]) == MAX_FRAMES and e["framesReceived"] == MAX_FRAMES + 50 and e["truncated"] is True


def test_a_call_entry_is_bounded_and_scrubbed(inspector):
    inspector.call("c1", "Q:add", 10.0, "Completed", 12.5, {"a": "z" * 100_000, "t": TOKEN}, {"out": 3}, None,
                   TOKEN)
    [e] = inspector.entries("c1")
    assert (e["kind"], e["method"], e["path"], e["status"]) == ("call", "CALL", "Q:add", "Completed")
    assert e["requestSize"] < 100_000 and len(e["requestBody"]) <= PREVIEW and TOKEN not in json.dumps(e)
    assert json.loads(e["responseBody"]) == {"out": 3}
