"""Attacks on the queue path of a real `grokemu up` with its real broker and real datagrok-celery-task workers:

- the call socket without a session, from another origin, cross-site;
- the pipe joined with no key, another container's key, a revoked key (a worker's key of its previous run), or a
  second time by the right container;
- forged and oversized frames on the call socket;
- the broker: published on 127.0.0.1 only, guest/guest refused, and unreachable from a plain container.

After every attack the same server answers a normal call.
"""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests
import websocket
from amqp.exceptions import AccessRefused
from kombu import Connection

from grokemu.testing import Grokemu, GrokemuProcess
from tests.helpers import publish_queue_worker, remove_images

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    proc = GrokemuProcess(tmp_path_factory.mktemp("grokemu-queue-attacks"))
    proc.start()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def token(server):
    return server.login()


@pytest.fixture(scope="module")
def workers(server, token):
    a, b = publish_queue_worker(server.api, token), publish_queue_worker(server.api, token)
    kit = Grokemu(server.url)
    for w in (a, b):  # each worker started by a first call
        assert kit.call(w["namespace_"] + "add", a=1, b=1) == 2
    yield a, b
    remove_images(a["name"], b["name"])


def ws_url(server, path: str) -> str:
    return f"ws://localhost:{server.port}{path}"


def close_code(ws) -> int | None:
    """The code of the close frame the server sends next (None if a data frame comes first)."""
    opcode, data = ws.recv_data(control_frame=True)
    return int.from_bytes(data[:2], "big") if opcode == websocket.ABNF.OPCODE_CLOSE else None


def handshake(url: str, headers: list[str]) -> tuple[str, int | str]:
    """("closed", code) when the upgrade is accepted and closed at once (a refusal: 4000 + the HTTP status, as on
    every grokemu WebSocket route), ("refused", HTTP status) when the upgrade itself is refused, ("open", first
    message) otherwise. websocket-client's own Origin header is left out: `headers` say everything sent."""
    try:
        ws = websocket.create_connection(url, header=headers, timeout=30, suppress_origin=True)
    except websocket.WebSocketBadStatusException as e:
        return "refused", e.status_code
    try:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return "closed", int.from_bytes(data[:2], "big")
        return "open", data.decode()
    finally:
        ws.close()


def pipe_key(container_name: str) -> str:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"name={container_name}"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert len(ids) == 1, (container_name, ids)
    env = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True,
                                    check=True).stdout)[0]["Config"]["Env"]
    return next(e.split("=", 1)[1] for e in env if e.startswith("DATAGROK_PIPE_KEY="))


def test_the_call_socket_needs_a_session_and_our_own_origin(server, token, workers):
    url = ws_url(server, "/api/log/funcs/call/stream")
    assert handshake(url, []) == ("closed", 4401)
    assert handshake(url, ["Cookie: auth=not-a-session"]) == ("closed", 4401)
    for evil in (["Origin: http://evil.example"], ["Origin: http://127.0.0.1:1"], ["Sec-Fetch-Site: cross-site"]):
        assert handshake(url, [f"Cookie: auth={token}", *evil]) == ("closed", 4403), evil
    assert handshake(url, [f"Cookie: auth={token}"]) == ("open", "LISTENING")
    assert handshake(url, [f"Authorization: {token}", f"Origin: http://localhost:{server.port}"]) == \
        ("open", "LISTENING")


class PendingCall:
    """A call of `row_count` (a dataframe input) driven by hand on the call socket, held at the moment the worker has
    joined the pipe and asked for its input (`PARAM table`)."""

    def __init__(self, server, token, namespace: str):
        funcs = requests.get(f"{server.api}/docker/functions", headers={"Authorization": token}).json()
        func = next(f for f in funcs if f["nqName"] == namespace + "row_count")
        self.id = str(uuid.uuid1())
        self.ws = websocket.create_connection(ws_url(server, "/api/log/funcs/call/stream"),
                                              header=[f"Authorization: {token}"], timeout=120)
        assert self.ws.recv() == "LISTENING"
        call = {"id": self.id, "func": {"name": "row_count", "namespace": namespace, "params": func["params"]},
                "parameterValues": {"table": {"#type": "TableInfo", "id": "t1", "metaParams": {}}},
                "options": {"isParquet": False}, "aux": {}}
        self.ws.send("1 CALL " + json.dumps(call))
        assert self.next_text() == "1 PARAM table"

    def next_text(self) -> str:
        while True:
            message = self.ws.recv()
            if isinstance(message, str) and not message.startswith("1 LOG"):
                return message

    def finish(self) -> dict:
        data = b"x\n1\n2\n3\n"
        self.ws.send(f'1 SENDING DATAFRAME {len(data)} {{".id": "t1", ".type": "csv"}}')
        self.ws.send_binary((1).to_bytes(4, "big") + data)
        assert self.next_text() in ("1 PART OK", "1 PART_OK")
        self.ws.send("1 PARAM_SENT table")
        while not (final := self.next_text()).startswith("1 CALL "):
            pass
        self.ws.send("1 DONE")
        self.ws.close()
        return json.loads(final[len("1 CALL "):])


def test_the_pipe_admits_only_the_container_the_call_was_sent_to(server, token, workers):
    a, b = workers
    key_a, key_b = pipe_key(a["name"]), pipe_key(b["name"])
    pending = PendingCall(server, token, b["namespace_"])
    url = ws_url(server, f"/{pending.id}")
    member = "x-member-name: celery-attacker"
    assert handshake(url, [member]) == ("closed", 4401)
    assert handshake(url, ["authorization: None", member]) == ("closed", 4401)
    assert handshake(url, ["authorization: not-a-key", member]) == ("closed", 4401)
    assert handshake(url, [f"authorization: {key_a}", member]) == ("closed", 4403)  # another container's call
    assert handshake(url, [f"authorization: {key_b}", member]) == ("closed", 4409)  # its worker has joined already
    assert handshake(ws_url(server, f"/{uuid.uuid1()}"), [f"authorization: {key_b}", member]) == ("closed", 4404)
    result = pending.finish()  # the attempts left the real call alone
    assert result["status"] == "Completed" and result["parameterValues"]["rows"] == 3


def test_a_workers_pipe_key_dies_with_its_run(server, token, workers):
    _, b = workers
    old = pipe_key(b["name"])
    stop = requests.get(f"{server.api}/docker/containers/{b['id']}/stop?awaitStop=true",
                        headers={"Authorization": token}, timeout=120)
    assert stop.status_code == 200, stop.text
    pending = PendingCall(server, token, b["namespace_"])  # a cold start: a new run with a new key
    new = pipe_key(b["name"])
    assert new != old
    assert handshake(ws_url(server, f"/{pending.id}"), [f"authorization: {old}"]) == ("closed", 4401)
    assert pending.finish()["status"] == "Completed"


def test_forged_and_oversized_frames_end_only_what_they_name(server, token, workers):
    a, _ = workers
    ws = websocket.create_connection(ws_url(server, "/api/log/funcs/call/stream"),
                                     header=[f"Authorization: {token}"], timeout=60)
    assert ws.recv() == "LISTENING"
    ws.send("PING")
    assert ws.recv() == "PING REPLY"
    for forged in ("garbage", "x CALL {}", "99999999999 CALL {}", "-1 CALL {}"):
        ws.send(forged)
        assert ws.recv().startswith("ERROR "), forged
    ws.send_binary(b"\x00\x01")
    assert ws.recv().startswith("ERROR ")
    ws.send("2 CALL not json")
    assert json.loads(ws.recv()[len("2 CALL "):])["status"] == "Error"
    ws.send("3 CALL " + json.dumps({"id": "c3", "func": {"name": "nope", "namespace": a["namespace_"]}}))
    refused = json.loads(ws.recv()[len("3 CALL "):])
    assert refused["status"] == "Error" and "Unknown function" in refused["errorMessage"]
    ws.send("4 CALL " + json.dumps([1, 2, 3]))
    assert json.loads(ws.recv()[len("4 CALL "):])["status"] == "Error"
    ws.send("5 CANCEL")  # nothing of that number: nothing happens
    ws.send("PING")
    assert ws.recv() == "PING REPLY"
    # a frame over max_call_frame_bytes (16 MiB) closes the socket with 1009 (message too big)
    ws.send("6 CALL " + json.dumps({"id": "c6", "pad": "x" * (17 * 1024 * 1024)}))
    try:
        code = close_code(ws)
    except (ConnectionResetError, BrokenPipeError, websocket.WebSocketConnectionClosedException):
        code = "reset"  # the server closed while the client was still sending the frame: the same end
    assert code in (1009, "reset")
    ws.close()
    # deeply nested JSON is an Error answer, not a crash
    deep = websocket.create_connection(ws_url(server, "/api/log/funcs/call/stream"),
                                       header=[f"Authorization: {token}"], timeout=60)
    assert deep.recv() == "LISTENING"
    deep.send("7 CALL " + "[" * 200_000 + "]" * 200_000)
    assert json.loads(deep.recv()[len("7 CALL "):])["status"] == "Error"
    deep.close()
    assert Grokemu(server.url).call(a["namespace_"] + "add", a=2, b=2) == 4


def test_the_broker_is_reachable_only_from_here_and_only_with_the_stands_credentials(server, token, workers):
    found = subprocess.run(["docker", "ps", "-q", "--filter", f"label=grokemu.instance={server.instance}",
                            "--filter", "label=grokemu.role=broker"], capture_output=True, text=True, check=True)
    [broker_id] = found.stdout.split()
    info = json.loads(subprocess.run(["docker", "inspect", broker_id], capture_output=True, text=True,
                                     check=True).stdout)[0]
    bindings = info["HostConfig"]["PortBindings"]
    published = [(b["HostIp"], int(b["HostPort"])) for b in info["NetworkSettings"]["Ports"].get("5672/tcp") or []]
    assert [b["HostIp"] for b in bindings["5672/tcp"]] == ["127.0.0.1"], bindings
    assert published and all(ip == "127.0.0.1" for ip, _ in published), bindings
    assert set(bindings) == {"5672/tcp"}, bindings  # no management UI or other port published
    port = published[0][1]
    with pytest.raises(AccessRefused):
        with Connection(f"amqp://guest:guest@127.0.0.1:{port}//", connect_timeout=10) as conn:
            conn.connect()
    creds = json.loads((server.data_dir / "broker.json").read_text())
    assert creds["user"] != "guest" and len(creds["password"]) >= 24
    with Connection(f"amqp://{creds['user']}:{creds['password']}@127.0.0.1:{port}//", connect_timeout=10) as conn:
        conn.connect()
        assert conn.connected
    # a plain container on the default bridge reaches neither the published port (loopback only) nor the broker's
    # own address (another network)
    networks = info["NetworkSettings"]["Networks"]
    broker_ips = [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]
    probe = ("import socket, json\nout = {}\n"
             f"for host, port in [('host.docker.internal', {port})] + [(ip, 5672) for ip in {broker_ips!r}]:\n"
             "    s = socket.socket(); s.settimeout(3)\n"
             "    try:\n        s.connect((host, port)); out[host] = 'connected'\n"
             "    except OSError as e:\n        out[host] = type(e).__name__\n"
             "    finally:\n        s.close()\n"
             "print(json.dumps(out))\n")
    run = subprocess.run(["docker", "run", "--rm", "--add-host", "host.docker.internal:host-gateway",
                          "--label", f"grokemu.instance={server.instance}", "python:3.12-slim", "python3", "-c",
                          probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen and all(v != "connected" for v in seen.values()), seen
    assert Grokemu(server.url).call(workers[0]["namespace_"] + "add", a=3, b=3) == 6
