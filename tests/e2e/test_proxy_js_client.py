"""Issue 4 end to end: `grokemu up`, the real Docker daemon, images built from samples/, and Datagrok's real JS client
(datagrok-api 1.27.9, loaded in Node by tests/e2e/js/proxy-client.mjs) calling fetchProxy and webSocketProxy.

The cases are CVMTests' (docs/datagrok-api.md §1.2): unknown id 404, a stopped container that is not
on_demand 400, a stopped on_demand one started by the request (200), the container's own 404/500 passed through, an
idle container ending `stopped by system` and coming back on the next request. Plus 50 requests during one cold start
(one Docker start, 50 answers) and a WebSocket held open past shutdown_timeout (the container stays up).

Each test publishes its own copy of a sample under a unique name (POST of the package ZIP, as `grok publish`
uploads it) into one grokemu shared by the module. For the idle tests the copy's container.json gets a fractional
`shutdown_timeout` (0.05 min = 3 s): the idle clock in a subprocess is the real one.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import websocket

from grokemu.testing import GrokemuProcess
from tests.helpers import js_runner, publish_ready, sample_copy, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TOOLS = ROOT / ".tools"
UNKNOWN = "00000000-0000-0000-0000-000000000000"
IDLE_MINUTES = 0.05  # 3 s


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    proc = GrokemuProcess(tmp_path_factory.mktemp("grokemu-proxy"))
    proc.start()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def token(server):
    return server.login()


@pytest.fixture(scope="module")
def js(server, token):
    return js_runner(server.api, token)


def api(server, token, path, **kw):
    return requests.get(f"{server.api}{path}", headers={"Authorization": token}, timeout=60, **kw)


def container(server, token, cid) -> dict:
    return api(server, token, f"/docker/containers/{cid}").json()


def wait_status(server, token, cid, want, timeout=60) -> dict:
    def settled():
        c = container(server, token, cid)
        return c if c["status"] in want else None

    return wait_until(settled, timeout, f"container {cid} in {want}")


@pytest.fixture
def publish(server, token):
    """publish(sample, **container_json changes) -> (container id, container name): a copy of samples/<sample>
    under a unique package name, built by grokemu from its Dockerfile; its image tags are removed afterwards."""
    names = []

    def _publish(sample: str, **config):
        c = publish_ready(server.api, token, *sample_copy(sample, container=config))
        names.append(c["name"])
        return c["id"], c["name"]

    yield _publish
    for name in names:
        tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"datagrok/{name}"],
                              capture_output=True, text=True).stdout.split()
        for tag in tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


# -- fetchProxy ------------------------------------------------------------------------------------------------------
def test_fetch_proxy_through_the_js_client(js, publish, server, token):
    cid, name = publish("squares")
    assert container(server, token, cid)["status"] == "stopped by user"  # on_demand: not started on publish
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const c = await containers.filter('{name}').first();
        const auth = {{headers: {{Authorization: token}}}};
        const square = await containers.fetchProxy(c.id, '/square?number=4', auth);   // starts it: on_demand
        const posted = await containers.fetchProxy(c.id, '/echo', {{method: 'POST',
            headers: {{Authorization: token, 'Content-Type': 'application/json'}},
            body: JSON.stringify({{a: [1, 2]}})}});
        const missing = await containers.fetchProxy(c.id, '/foo', auth);
        const raising = await containers.fetchProxy(c.id, '/square?number=-0.01244', auth);
        const created = await containers.fetchProxy(c.id, 'status/201', auth);       // no leading '/': added
        const empty = await containers.fetchProxy(c.id, '/status/204', auth);
        const zipped = await containers.fetchProxy(c.id, '/gzip', auth);
        const big = await containers.fetchProxy(c.id, '/bytes/3000000', auth);
        const unknown = await containers.fetchProxy('{UNKNOWN}', '/square?number=2', auth);
        const anonymous = await containers.fetchProxy(c.id, '/square?number=2');  // Node sends no cookie
        return {{
          found: {{id: c.id, name: c.name}},
          square: {{status: square.status, body: await square.json(),
                    cold: square.headers.get('x-grokemu-cold-start-ms')}},
          posted: {{status: posted.status, type: posted.headers.get('content-type'), body: await posted.json()}},
          missing: missing.status, raising: raising.status, created: created.status, empty: empty.status,
          zipped: {{encoding: zipped.headers.get('content-encoding'), body: await zipped.json()}},
          big: (await big.arrayBuffer()).byteLength,
          unknown: {{status: unknown.status, type: unknown.headers.get('content-type'), body: await unknown.json()}},
          anonymous: anonymous.status,
        }};""")
    assert result["found"] == {"id": cid, "name": name}
    assert result["square"]["status"] == 200 and result["square"]["body"] == {"result": 16.0}
    assert int(result["square"]["cold"]) > 0  # this answer waited for the start
    assert result["posted"] == {"status": 200, "type": "application/json", "body": {"a": [1, 2]}}
    assert (result["missing"], result["raising"], result["created"], result["empty"]) == (404, 500, 201, 204)
    assert result["zipped"] == {"encoding": "gzip", "body": {"compressed": True}}  # fetch inflates it itself
    assert result["big"] == 3000000
    assert result["unknown"]["status"] == 404 and result["unknown"]["type"] == "application/json"
    assert UNKNOWN in result["unknown"]["body"]["datagrok-error"]
    assert result["anonymous"] == 401  # CVMTests: 'under the Node runtime the docker proxy returns 401'
    assert container(server, token, cid)["status"] == "started"


def _relay(server, token) -> dict:
    return requests.get(f"{server.url}/_grokemu/health", headers={"Authorization": token}, timeout=10).json()["relay"]


def test_many_js_client_requests_are_served_by_the_relay_loop(js, publish, server, token):
    """The real JS client in Node keeps its connections alive, as a page does: after the first requests, its
    fetchProxy calls are forwarded by the relay loop (issue 14), sequential and 40 at once, each with its own
    answer."""
    cid, _ = publish("squares")
    js(f"""
        await grok.dapi.docker.dockerContainers.fetchProxy('{cid}', '/square?number=1', {{headers: {{Authorization: token}}}});
        return {{}};""")  # the cold start
    before = _relay(server, token)
    out = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const auth = {{headers: {{Authorization: token}}}};
        const one = async (i) => {{
            const r = await containers.fetchProxy('{cid}', `/square?number=${{i}}`, auth);
            return [r.status, (await r.json()).result];
        }};
        const sequential = [];
        for (let i = 0; i < 60; i++) sequential.push(await one(i));
        const concurrent = await Promise.all([...Array(40).keys()].map((i) => one(i + 100)));
        const again = await Promise.all([...Array(40).keys()].map((i) => one(i + 200)));
        return {{sequential, concurrent, again}};""")
    assert out["sequential"] == [[200, float(i * i)] for i in range(60)]
    assert out["concurrent"] == [[200, float((i + 100) ** 2)] for i in range(40)]
    assert out["again"] == [[200, float((i + 200) ** 2)] for i in range(40)]
    after = _relay(server, token)
    # The first request on each new connection goes through waitress (the 40 at once open up to 40 connections);
    # the later ones on kept-alive connections the loop forwards itself: 59 sequential, most of the second 40.
    assert after["forwarded"] - before["forwarded"] >= 59 + 30, (before, after)


def test_stopped_container_not_on_demand_is_400(js, publish, server, token):
    cid, name = publish("squares", on_demand=False)
    wait_status(server, token, cid, ("started",))  # not on_demand: started once its image is ready
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const c = await containers.filter('{name}').first();
        const before = await containers.fetchProxy(c.id, '/square?number=3', {{headers: {{Authorization: token}}}});
        await containers.stop(c.id, true);
        const after = await containers.fetchProxy(c.id, '/square?number=3', {{headers: {{Authorization: token}}}});
        let wsError = null;
        try {{ await containers.webSocketProxy(c.id, '/ws', 20000); }} catch (e) {{ wsError = e.message; }}
        return {{before: before.status, after: after.status, body: await after.json(),
                 status: (await containers.find(c.id)).status, wsError}};""")
    assert result["before"] == 200 and result["after"] == 400 and result["status"] == "stopped by user"
    assert "not on_demand" in result["body"]["datagrok-error"]
    assert result["wsError"].startswith("Could not open WebSocket connection: ")
    assert "not on_demand" in result["wsError"]


def test_idle_container_is_stopped_by_system_and_the_next_request_brings_it_back(js, publish, server, token):
    cid, name = publish("squares", shutdown_timeout=IDLE_MINUTES)
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const auth = {{headers: {{Authorization: token}}}};
        const c = await containers.filter('{name}').first();
        const first = await containers.fetchProxy(c.id, '/square?number=5', auth);
        const statuses = [(await containers.find(c.id)).status];
        const deadline = Date.now() + 30000;
        while (statuses[statuses.length - 1] !== 'stopped by system' && Date.now() < deadline) {{
          await new Promise((r) => setTimeout(r, 250));
          statuses.push((await containers.find(c.id)).status);
        }}
        const again = await containers.fetchProxy(c.id, '/square?number=6', auth);
        return {{first: first.status, statuses, again: again.status, body: await again.json(),
                 cold: again.headers.get('x-grokemu-cold-start-ms'), after: (await containers.find(c.id)).status}};""")
    assert result["first"] == 200 and result["statuses"][0] == "started"
    assert result["statuses"][-1] == "stopped by system", result["statuses"]
    assert result["again"] == 200 and result["body"] == {"result": 36.0} and result["cold"] is not None
    assert result["after"] == "started"


def test_fifty_concurrent_requests_during_one_cold_start(publish, server, token):
    cid, name = publish("squares")
    since = time.time() - 1
    barrier = threading.Barrier(50)
    answers: list = [None] * 50

    def call(i):
        barrier.wait()
        r = requests.get(f"{server.api}/docker/containers/proxy/{cid}/square?number={i}",
                         headers={"Authorization": token}, timeout=120)
        answers[i] = (r.status_code, r.json(), r.headers.get("X-Grokemu-Cold-Start-Ms"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert [a[0] for a in answers] == [200] * 50, answers
    assert [a[1]["result"] for a in answers] == [float(i * i) for i in range(50)]
    # The requests a waitress worker took during the start waited in the spawner and say so; the rest queued in
    # waitress (8 workers) and found the container started.
    assert any(a[2] is not None for a in answers)
    starts = subprocess.run(["docker", "events", "--since", str(int(since)), "--until", str(int(time.time()) + 1),
                             "--filter", f"label=grokemu.container={cid}", "--filter", "event=start",
                             "--format", "{{.ID}}"], capture_output=True, text=True, timeout=60).stdout.split()
    assert len(starts) == 1, starts


# -- webSocketProxy --------------------------------------------------------------------------------------------------
def test_web_socket_proxy_echo_through_the_js_client(js, publish, server, token):
    cid, name = publish("ws-echo")
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const c = await containers.filter('{name}').first();
        const socket = await containers.webSocketProxy(c.id, '/ws', 120000);   // on_demand: started for it
        let reply = nextMessage(socket);
        socket.send('hello from datagrok-api');
        const text = await reply;
        reply = nextMessage(socket);
        socket.send(new Uint8Array(100000).fill(7));
        const binary = await reply;
        const end = closed(socket);
        socket.send('close 4321 container says bye');
        const close = await end;
        let unknown = null;
        try {{ await containers.webSocketProxy('{UNKNOWN}', '/ws', 20000); }} catch (e) {{ unknown = e.message; }}
        return {{text, binary, close, unknown}};""")
    assert result["text"] == "hello from datagrok-api"
    assert result["binary"] == {"binary": 100000}
    assert result["close"] == {"code": 4321, "reason": "container says bye"}
    assert result["unknown"].startswith("Could not open WebSocket connection: ") and "not found" in result["unknown"]
    assert container(server, token, cid)["status"] == "started"


def test_open_web_socket_keeps_the_container_up_past_shutdown_timeout(js, publish, server, token):
    cid, name = publish("ws-echo", shutdown_timeout=IDLE_MINUTES)
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const c = await containers.filter('{name}').first();
        const socket = await containers.webSocketProxy(c.id, '/ws', 120000);
        await new Promise((r) => setTimeout(r, {IDLE_MINUTES * 60 * 1000 * 2 + 1500}));  // twice the idle timeout
        const during = (await containers.find(c.id)).status;
        const reply = nextMessage(socket);
        socket.send('still here');
        const echoed = await reply;
        const end = closed(socket);
        socket.close(1000, 'done');
        return {{during, echoed, close: await end}};""")
    assert result["during"] == "started" and result["echoed"] == "still here"
    assert result["close"]["code"] == 1000
    wait_status(server, token, cid, ("stopped by system",), timeout=30)  # once closed, idle time counts again


def test_python_websocket_client_with_header_token(publish, server, token):
    """A server-side caller (Grokky's MCP client style) with the token in a header rather than the cookie."""
    cid, name = publish("ws-echo")
    ws = websocket.create_connection(f"ws://localhost:{server.port}/api/docker/containers/proxy-ws/{cid}/ws",
                                     header=[f"Authorization: Bearer {token}"], timeout=120)
    try:
        assert ws.recv() == "CONNECTED"
        ws.send_binary(b"\x00\xff" * 10)
        assert ws.recv() == b"\x00\xff" * 10
    finally:
        ws.close()


# -- issue 13: every docker method of the client ----------------------------------------------------------------------
def test_every_docker_method_of_the_js_client(js, publish, server, token):
    """Each method of grok.dapi.docker, dockerImages and dockerContainers in datagrok-api 1.27.9 (found by reading
    src/dapi.js and running them: docs/datagrok-api.md §0), against grokemu with Datagrok's wire shapes."""
    cid, name = publish("ws-echo")
    result = js(f"""
        // a data source keeps the `id` of a find() for its next calls (the Dart client's where): a fresh one per call
        const d = grok.dapi.docker, out = {{}};
        const I = () => grok.dapi.docker.dockerImages, C = () => grok.dapi.docker.dockerContainers;
        out.services = await d.getAvailableServices();
        out.serviceLogs = typeof await d.getServiceLogs('grok_spawner', 100);
        const c = await C().filter('{name}').first();
        out.cFound = (await C().find(c.id))?.id === c.id;
        out.cList = (await C().include('dockerfile,package').filter('{name}').list()).length;
        out.cPage = (await C().by(1).page(1).order('name', true).list()).length;
        out.cCount = await C().filter('{name}').count();
        await C().run(c.id, true);
        out.runStatus = (await C().find(c.id)).status;
        out.logs = typeof await C().getContainerLogs(c.id, 10);
        const ws = await C().webSocketProxy(c.id, '/ws');
        ws.send('one'); out.ws = await nextMessage(ws); ws.close();
        const sync = C().webSocketProxySync(c.id, 'ws');
        out.sync = await nextMessage(sync); sync.close();
        out.fetch = (await C().fetchProxy(c.id, '/health', {{headers: {{Authorization: token}}}})).status;
        await C().stop(c.id, true);
        out.stopStatus = (await C().find(c.id)).status;
        const again = await C().find(c.id);
        again.dart && (await C().save(again));
        out.saved = (await C().find(c.id)).status;
        const image = await I().filter('{name}').first();
        out.iFound = (await I().find(image.id))?.id === image.id;
        out.iList = (await I().include('package').order('name').by(5).page(1).list()).length > 0;
        out.iCount = await I().filter('{name}').count();
        out.iSaved = (await I().save(image))?.id === image.id;
        await I().revalidate(image.id);
        await I().delete(image);
        out.iGone = (await I().find(image.id)) ?? null;
        out.cGone = (await C().find(c.id)) ?? null;
        return out;""")
    assert result["services"] == ["grok_spawner", "grok_registry_proxy", "datlas"]
    assert result["serviceLogs"] == "string"
    assert result["cFound"] and result["cList"] == 1 and result["cPage"] == 1 and result["cCount"] == 1
    assert result["runStatus"] == "started" and result["logs"] == "string"
    assert "one" in result["ws"] and result["sync"] == "CONNECTED" and result["fetch"] == 200
    assert result["stopStatus"] == "stopped by user" and result["saved"] == "stopped by user"
    assert result["iFound"] and result["iList"] and result["iCount"] == 1 and result["iSaved"]
    assert result["iGone"] is None and result["cGone"] is None
