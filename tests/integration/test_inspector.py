"""The request inspector (services/inspector/, issue 20): what fetchProxy, webSocketProxy and the relay loop
record per container, as `GET /_grokemu/requests` serves it, and that no credential ever lands in an entry."""
from __future__ import annotations

import gzip
import json

import pytest
import requests

from grokemu.app import create_app
from grokemu.config import Settings
from grokemu.services.inspector import PREVIEW
from tests.fake_upstream import Upstream, add_container, proxy_url
from tests.helpers import wait_until
from tests.helpers import RawReader, connect_raw, raw_request

DEV_KEY = "s3cret-dev-key-7Q"


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", port=8080, dev_keys={"admin": "admin", DEV_KEY: "admin"},
                    container_status_timeout=300)


@pytest.fixture
def started(ctx, upstream):
    cid = add_container(ctx)
    ctx.spawner.run(cid, "admin", await_start=True)
    return cid


def entries(client, token, cid, **params) -> list[dict]:
    r = client.get("/_grokemu/requests", query_string={"container": cid, **params},
                   headers={"Authorization": token})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def no_secret(data, *secrets) -> None:
    text = json.dumps(data)
    for secret in secrets:
        assert secret not in text, f"{secret!r} is in an entry"


def test_get_post_and_a_containers_404_are_recorded_newest_first(client, token, started, upstream):
    assert client.get(proxy_url(started, "/hello?x=1"), headers={"Authorization": token}).status_code == 200
    r = client.post(proxy_url(started, "/echo"), data=b'{"a": 1}',
                    headers={"Authorization": token, "Content-Type": "application/json"})
    assert r.status_code == 200
    assert client.get(proxy_url(started, "/status/404"), headers={"Authorization": token}).status_code == 404
    got = entries(client, token, started)
    assert [(e["method"], e["path"], e["status"]) for e in got] == [
        ("GET", "/status/404", 404), ("POST", "/echo", 200), ("GET", "/hello?x=1", 200)]
    post = got[1]
    assert post["kind"] == "http" and post["container"] == started
    assert post["requestBody"] == '{"a": 1}' and post["requestBodyEncoding"] == "text" and post["requestSize"] == 8
    assert post["responseBody"] == '{"a": 1}' and post["responseSize"] == 8 and post["truncated"] is False
    assert ["Content-Type", "application/json"] in post["requestHeaders"]
    assert ["X-Method", "POST"] in post["responseHeaders"]
    assert post["durationMs"] >= 0 and isinstance(post["time"], float)
    assert ["Set-Cookie", "[redacted]"] in got[0]["responseHeaders"]
    assert [e["path"] for e in entries(client, token, started, limit=1)] == ["/status/404"]


def test_no_credential_of_any_kind_lands_in_an_entry(client, token, started, upstream):
    """Authorization, Cookie, X-User-Api-Key, credential-named headers and query values are redacted; the session
    token and every dev key are cut out wherever they appear, in a body echoed back too."""
    client.set_cookie("auth", token)
    client.set_cookie("theme", "dark")
    body = f"token={token}&key={DEV_KEY}&again={token}".encode()
    r = client.post(proxy_url(started, f"/echo?token={token}&api_key=zz-{DEV_KEY}&plain={token}"), data=body,
                    headers={"Authorization": f"Bearer {token}", "X-User-Api-Key": token, "X-Api-Key": DEV_KEY,
                             "X-Note": f"mine is {token}", "Content-Type": "text/plain"})
    assert r.status_code == 200 and r.get_data() == body
    client.get(proxy_url(started, "/hello"), headers={"Authorization": f"Dev {DEV_KEY}"})  # refused: 401
    got = entries(client, token, started)
    no_secret(got, token, DEV_KEY, "admin")
    [e] = got
    headers = dict(e["requestHeaders"])
    assert headers["Authorization"] == headers["Cookie"] == headers["X-User-Api-Key"] == "[redacted]"
    assert headers["X-Api-Key"] == "[redacted]" and headers["X-Note"] == "mine is [redacted]"
    assert e["path"] == "/echo?token=[redacted]&api_key=[redacted]&plain=[redacted]"
    assert e["requestBody"] == "token=[redacted]&key=[redacted]&again=[redacted]" == e["responseBody"]


def test_a_secret_cut_at_the_preview_end_goes_too(client, token, started, upstream):
    body = b"x" * (PREVIEW - 10) + token.encode() + b"y" * 100
    client.post(proxy_url(started, "/echo"), data=body, headers={"Authorization": token,
                                                                  "Content-Type": "text/plain"})
    [e] = entries(client, token, started)
    assert e["truncated"] is True and e["requestSize"] == len(body)
    assert e["requestBody"].endswith("[redacted]") and token[:6] not in e["requestBody"]
    assert len(e["responseBody"].encode()) <= PREVIEW + len("[redacted]")


def test_gzip_is_decoded_for_the_preview_and_binary_shown_as_hex(client, token, started, upstream):
    client.get(proxy_url(started, "/gzip"), headers={"Authorization": token})
    client.post(proxy_url(started, "/echo"), data=bytes(range(8)), headers={"Authorization": token,
                                                                            "Content-Type": "x/bin"})
    binary, gz = entries(client, token, started)
    assert gz["responseBody"] == '{"compressed": true}' and gz["responseDecoded"] == "gzip"
    assert gz["responseSize"] == len(gzip.compress(b'{"compressed": true}')) or gz["responseSize"] > 0
    assert binary["requestBodyEncoding"] == "hex" and binary["requestBody"] == "0001020304050607"


def test_a_big_answer_keeps_only_its_preview(client, token, started, upstream):
    r = client.get(proxy_url(started, "/bytes/3000000"), headers={"Authorization": token})
    assert len(r.get_data()) == 3_000_000
    r.close()  # a streamed answer's entry is complete once the server closes its body (waitress does)
    [e] = entries(client, token, started)
    assert e["responseSize"] == 3_000_000 and len(e["responseBody"]) == PREVIEW and e["truncated"] is True


def test_a_known_container_that_cannot_serve_is_recorded_an_unknown_one_is_not(client, token, ctx, upstream):
    stopped = add_container(ctx, name="stopped-app")  # not on_demand, never started: 400
    assert client.get(proxy_url(stopped, "/x"), headers={"Authorization": token}).status_code == 400
    [e] = entries(client, token, stopped)
    assert e["status"] == 400 and "not on_demand" in e["error"]
    unknown = "00000000-0000-0000-0000-0000000000ff"
    assert client.get(proxy_url(unknown, "/x"), headers={"Authorization": token}).status_code == 404
    assert unknown not in ctx.inspector._rings  # a made-up id never gets a ring


# -- the endpoint, as an attacker sees it -----------------------------------------------------------------------------
@pytest.mark.parametrize("params, status", [
    ({}, 400), ({"container": ""}, 400), ({"container": "x" * 301}, 400), ({"container": "nope"}, 404),
    ({"limit": "abc"}, 400), ({"limit": "0"}, 400), ({"limit": "-1"}, 400), ({"limit": "1e3"}, 400),
    ({"limit": "201"}, 400), ({"limit": "9" * 400}, 400), ({"limit": "١"}, 400)])
def test_garbage_is_a_400_or_404_api_error(client, token, started, params, status):
    query = {"container": started, **params} if "container" not in params and params else params
    r = client.get("/_grokemu/requests", query_string=query, headers={"Authorization": token})
    assert r.status_code == status and r.get_json()["#type"] == "ApiError", r.get_data()[:200]


def test_the_endpoint_needs_a_session_and_refuses_other_sites(client, token, started):
    assert client.get(f"/_grokemu/requests?container={started}").status_code == 401
    assert client.get(f"/_grokemu/requests?container={started}",
                      headers={"Authorization": f"Dev {DEV_KEY}"}).status_code == 401
    client.set_cookie("auth", token)
    assert client.get(f"/_grokemu/requests?container={started}").status_code == 200
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://evil.example"}):
        assert client.get(f"/_grokemu/requests?container={started}", headers=headers).status_code == 403
    r = client.get(f"/_grokemu/requests?container={started}")
    assert r.headers["Cache-Control"] == "no-store" and "Access-Control-Allow-Origin" not in r.headers


def test_the_container_is_found_by_any_name_and_forgotten_when_deleted(client, token, ctx, started, upstream):
    client.get(proxy_url(started, "/a"), headers={"Authorization": token})
    assert [e["path"] for e in entries(client, token, "probe-app")] == ["/a"]
    ctx.spawner.forget(ctx.spawner.get(started))
    assert started not in ctx.inspector._rings


def test_reset_empties_the_rings(client, token, ctx, started, upstream):
    client.get(proxy_url(started, "/a"), headers={"Authorization": token})
    assert ctx.inspector.entries(started)
    assert client.post("/_grokemu/reset", headers={"Authorization": token}).status_code == 200
    assert ctx.inspector.entries(started) == []


def test_inspector_size_0_records_nothing(tmp_path, orchestrator, clock, upstream):
    app = create_app(Settings(data_dir=tmp_path / "off", inspector_size=0), orchestrator=orchestrator, clock=clock,
                     background=False)
    client = app.test_client()
    token = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"}).get_json()["token"]
    from grokemu.web.context import app_context
    ctx = app_context(app)
    cid = add_container(ctx)
    ctx.spawner.run(cid, "admin", await_start=True)
    assert client.get(proxy_url(cid, "/a"), headers={"Authorization": token}).status_code == 200
    assert ctx.proxy._inspector is None
    assert entries(client, token, cid) == []
    r = client.get("/_grokemu/requests", query_string={"container": cid, "limit": "2"},
                   headers={"Authorization": token})
    assert r.status_code == 400  # limit is 1 at most when nothing is kept


# -- the real server: the relay loop's own requests and WebSockets ---------------------------------------------------
def test_the_relay_loop_records_its_requests_and_the_ring_stays_bounded(live):
    """10,000 keep-alive requests, most of them forwarded by the relay loop itself: the ring keeps the last
    inspector_size (200) and every entry is redacted."""

    up = Upstream()
    live.ctx.orchestrator.fixed_host_port = up.port
    cid = add_container(live.ctx, {"on_demand": True})
    try:
        sock = connect_raw(live)
        reader = RawReader(sock)
        loop = live.takeover.loop
        total = 10_000
        batch = 100
        for start in range(0, total, batch):  # pipelined in batches: the loop answers them in order
            sock.sendall(b"".join(raw_request(live, proxy_url(cid, f"/n/{i}"), live.token)
                                  for i in range(start, start + batch)))
            for _ in range(batch):
                assert reader.answer()[0] == 200
        sock.close()
        assert loop.forwarded >= total - 10  # the loop's own path, not only the blocking relay
        ring = live.ctx.inspector._rings[cid]
        assert len(ring) == live.ctx.settings.inspector_size == 200
        got = requests.get(f"http://{live.host}/_grokemu/requests", params={"container": cid},
                           headers={"Authorization": live.token}, timeout=10).json()
        assert [e["path"] for e in got] == [f"/n/{i}" for i in range(total - 1, total - 201, -1)]
        assert all(e["status"] == 200 and e["responseBody"] == json.dumps({"path": e["path"]}) for e in got)
        assert ["Authorization", "[redacted]"] in got[0]["requestHeaders"]
        no_secret(got, live.token)
    finally:
        up.close()


def test_a_websocket_session_is_recorded_with_its_frames_and_close_code(live):
    cid = add_container(live.ctx, {"on_demand": True}, name="ws-app")
    ws = live.ws(cid)
    assert ws.recv() == "CONNECTED"
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send(f"my token is {live.token}")
    assert ws.recv() == f"my token is {live.token}"
    ws.close(status=1000)
    url = f"http://{live.host}/_grokemu/requests"

    def closed():
        got = requests.get(url, params={"container": cid}, headers={"Authorization": live.token}, timeout=10).json()
        return got if got and not got[0]["open"] else None

    [e] = wait_until(closed, 10, "the session recorded as closed")
    assert e["kind"] == "websocket" and e["status"] == 101 and e["path"] == "/ws"
    assert e["framesSent"] >= 3 and e["framesReceived"] >= 2 and e["closeCode"] == 1000
    assert e["closedBy"] == "caller"
    texts = [(f["direction"], f["data"]) for f in e["frames"] if f["opcode"] == "text"]
    assert ("sent", "hello") in texts and ("received", "hello") in texts
    assert ("sent", "my token is [redacted]") in texts
    no_secret(e, live.token)
