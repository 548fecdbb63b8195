"""Issue 13: the container patterns of real Datagrok plugins (docs/real-plugins.md), each reproduced by a small
package in samples/ built offline on python:3.12-slim, published with the real `grok` CLI (datagrok-tools 6.7.5) and
driven with the real JS client (datagrok-api 1.27.9 in Node, tests/e2e/js/proxy-client.mjs).

| pattern (real plugins)                                  | package / container        | state Datagrok would report |
|---------------------------------------------------------|----------------------------|-----------------------------|
| PostgreSQL server, no HEALTHCHECK (Chembl, SureChembl)   | corpus `pg`                | started once it accepts     |
| PostgreSQL server with HEALTHCHECK (DBTests)             | corpus `pg-health`         | started once healthy        |
| queue worker listening on nothing (Admetica, celery)     | corpus `worker`            | started, warning; proxy 502 |
| HTTP app calling back into the API as the caller         | corpus `caller`            | x-user-api-key = caller     |
| `#{x.<name>}` naming the package's own database (NodeJSDemo) | corpus `caller`        | DATA_CONNECTION rendered    |
| JSON / multipart / gzip request bodies (MolTrack, Chem)  | corpus `caller` `/echo`    | bytes and headers unchanged |
| HTTP app (CVMTests test1)                                | squares                    | fetchProxy 200              |
| HTTP + WebSocket, `webSocketProxySync` (CVMTests test2, Notebooks) | ws-echo          | CONNECTED, echo             |
"""
from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.helpers import js_runner, require, sample_copy, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
LISTEN_TIMEOUT = 5  # seconds a port may stay closed before a container is started anyway


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    proc = GrokemuProcess(tmp_path_factory.mktemp("grokemu-corpus"),
                          env={"GROKEMU_LISTEN_TIMEOUT": str(LISTEN_TIMEOUT)})
    proc.start()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def token(server):
    return server.login()


@pytest.fixture(scope="module")
def js(server, token):
    return js_runner(server.api, token)


@pytest.fixture(scope="module")
def published(server, token, tmp_path_factory):
    """publish(sample) -> package short name: a uniquely named copy of samples/<sample> published with the real
    grok CLI; every image of it validated. Image tags are removed afterwards."""
    binary = TOOLS / "node_modules" / ".bin" / "grok"
    require(binary.exists() and shutil.which("node") is not None, "the grok CLI (scripts/ensure-clients.sh)")
    home = tmp_path_factory.mktemp("home")
    env = {**{k: v for k, v in __import__("os").environ.items() if k != "GROK_PRIVATE_KEY"}, "HOME": str(home)}
    added = subprocess.run([str(binary), "config", "add", "--alias", "emu", "--server", server.api, "--key", "admin",
                            "--default"], env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stdout + added.stderr
    names: list[str] = []
    cache: dict[str, str] = {}

    def publish(sample: str) -> str:
        if sample in cache:
            return cache[sample]
        name, files = sample_copy(sample)
        folder = tmp_path_factory.mktemp(sample)
        for path, data in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
        done = subprocess.run([str(binary), "publish", "emu"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        short = name.split("/")[-1]
        want = len([p for p in files if p.endswith("Dockerfile")])

        def validated():
            images = requests.get(f"{server.api}/docker/images", params={"text": short},
                                  headers={"Authorization": token}, timeout=30).json()
            settled = [i for i in images if i["status"] in ("ready", "error")]
            return settled if len(settled) == want else None

        for image in wait_until(validated, 300, f"images of {name} validated"):
            assert image["status"] == "ready", image.get("logs")
            names.append(image["dockerName"])
        cache[sample] = short
        return short

    yield publish
    for name in names:
        tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"datagrok/{name}"],
                              capture_output=True, text=True).stdout.split()
        for tag in tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def containers(server, token, short) -> dict[str, dict]:
    found = requests.get(f"{server.api}/docker/containers", params={"text": short},
                         headers={"Authorization": token}, timeout=30).json()
    return {c["name"].rsplit("-", 1)[-1] if not c["name"].endswith("pg-health") else "pg-health": c for c in found}


def settle(server, token, short, name, timeout=120) -> dict:
    def done():
        c = containers(server, token, short)[name]
        return c if c["status"] in ("started", "error") else None

    return wait_until(done, timeout, f"{short} {name} settled")


def test_a_postgresql_like_server_without_healthcheck_is_started_once_it_accepts(server, token, published):
    short = published("corpus")
    c = settle(server, token, short, "pg")
    assert c["status"] == "started" and c["warnings"] == ["container.json keys Datagrok does not model (kept, not "
                                                          "applied): timeout_minutes"] + [
        w for w in c["warnings"] if w.startswith("storage")]
    assert not any(w.startswith("nothing listens") for w in c["warnings"])
    # it really accepts on its published port, and speaks its own protocol (SSLRequest -> N)
    with socket.create_connection(("127.0.0.1", c["port"]), timeout=5) as s:
        s.sendall(struct.pack("!ii", 8, 80877103))
        assert s.recv(1) == b"N"


def test_a_postgresql_like_server_with_healthcheck_is_started_once_healthy(server, token, published):
    short = published("corpus")
    c = settle(server, token, short, "pg-health")
    assert c["status"] == "started" and not any(w.startswith("nothing listens") for w in c["warnings"])
    health = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", c["serviceName"]],
                            capture_output=True, text=True).stdout.strip()
    assert health == "healthy"


def test_a_worker_that_listens_on_nothing_is_started_with_a_warning_and_fetch_proxy_is_502(
        server, token, published, js):
    short = published("corpus")
    c = settle(server, token, short, "worker", timeout=LISTEN_TIMEOUT + 120)
    assert c["status"] == "started"
    assert any(w.startswith("nothing listens on port 8000") for w in c["warnings"]), c["warnings"]
    result = js(f"""
        const c = await grok.dapi.docker.dockerContainers.find('{c["id"]}');
        const r = await grok.dapi.docker.dockerContainers.fetchProxy(c.id, '/', {{headers: {{Authorization: token}}}});
        return {{status: c.status, code: r.status, body: await r.json()}};""")
    assert result["status"] == "started" and result["code"] == 502
    assert "nothing listens on port" in result["body"]["datagrok-error"]


def test_the_container_acts_as_the_caller_and_sees_its_own_database(server, token, published, js):
    short = published("corpus")
    cid = containers(server, token, short)["caller"]["id"]
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const auth = {{headers: {{Authorization: token}}}};
        const who = await (await containers.fetchProxy('{cid}', '/whoami', auth)).json();   // on_demand: starts it
        const db = await (await containers.fetchProxy('{cid}', '/env/DATA_CONNECTION', auth)).json();
        return {{who, db: JSON.parse(db.value)}};""")
    assert result["who"] == {"login": "admin", "tokenFrom": "x-user-api-key", "status": 200}
    assert result["db"]["name"] == "todo" and result["db"]["#type"] == "DataConnection"


def test_json_multipart_and_gzip_bodies_reach_the_container_unchanged(server, token, published, js):
    short = published("corpus")
    cid = containers(server, token, short)["caller"]["id"]
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const zlib = await import('node:zlib');
        const crypto = await import('node:crypto');
        const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
        const json = JSON.stringify({{smiles: ['CCO', 'c1ccccc1']}});
        const a = await (await containers.fetchProxy('{cid}', '/echo', {{method: 'POST',
            headers: {{Authorization: token, 'Content-Type': 'application/json'}}, body: json}})).json();
        const form = new FormData();
        form.append('file', new Blob(['id,smiles\\n1,CCO\\n']), 'batch.csv');
        form.append('mapping', '{{"smiles": "structure"}}');
        const b = await (await containers.fetchProxy('{cid}', '/echo', {{method: 'POST',
            headers: {{Authorization: token}}, body: form}})).json();
        const gz = zlib.gzipSync(Buffer.from(json));
        const c = await (await containers.fetchProxy('{cid}', '/echo', {{method: 'POST',
            headers: {{Authorization: token, 'Content-Type': 'application/json', 'Content-Encoding': 'gzip'}},
            body: gz}})).json();
        return {{a, aSha: sha(json), b, c, cSha: sha(gz), cLength: gz.length}};""")
    assert result["a"]["sha256"] == result["aSha"] and result["a"]["contentType"] == "application/json"
    assert result["b"]["contentType"].startswith("multipart/form-data; boundary=") and result["b"]["length"] > 0
    assert result["c"]["sha256"] == result["cSha"] and result["c"]["length"] == result["cLength"]
    assert result["c"]["contentEncoding"] == "gzip"


def test_an_http_app_and_web_socket_proxy_sync(server, token, published, js):
    squares = published("squares")
    echo = published("ws-echo")
    sq = containers(server, token, squares)
    ws = containers(server, token, echo)
    [sq_id] = [c["id"] for c in sq.values()]
    [ws_id] = [c["id"] for c in ws.values()]
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const r = await containers.fetchProxy('{sq_id}', '/square?number=4', {{headers: {{Authorization: token}}}});
        await containers.run('{ws_id}', true);
        const socket = containers.webSocketProxySync('{ws_id}', 'ws');      // no leading '/', returned at once
        const first = await nextMessage(socket, 60000);
        socket.send('hello');
        const echoed = await nextMessage(socket, 10000);
        socket.close();
        return {{code: r.status, square: await r.text(), first, echoed}};""")
    assert result["code"] == 200 and "16" in result["square"]
    assert result["first"] == "CONNECTED"  # the Sync form hands the raw socket over: CONNECTED is its first frame
    assert "hello" in result["echoed"]
