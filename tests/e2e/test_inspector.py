"""The request inspector (issue 20) end to end: `grokemu up`, the real Docker daemon, the samples built by grokemu,
Datagrok's real JS client (datagrok-api in Node) sending fetchProxy requests and a webSocketProxy session, and the
Requests tab of the Dockers page in Chromium (playwright-core, tests/e2e/browser/inspector.cjs): replay and copy
as curl. No credential of any kind may appear anywhere in an entry: the whole JSON is searched for the session
tokens and the dev keys."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.helpers import TOOLS, js_runner, publish_ready, require, sample_copy, wait_until

pytestmark = pytest.mark.e2e
DRIVER = Path(__file__).parent / "browser" / "inspector.cjs"
KEY = "insp-k3y-9c4"  # a dev key of its own, searched for in every entry


class Page:
    def __init__(self, base: str):
        self.proc = subprocess.Popen(["node", str(DRIVER), base], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def __call__(self, op: str, **args):
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the browser driver died: {self.proc.stderr.read()[-3000:]}")
        answer = json.loads(line)
        assert answer["ok"], f"{op} {args}: {answer['error']}"
        return answer["value"]

    def close(self):
        try:
            self("close")
        except Exception:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    s = GrokemuProcess(tmp_path_factory.mktemp("grokemu-inspector"), "--dev-key", "admin", "--dev-key",
                       f"{KEY}=admin")
    s.start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def token(server):
    return server.login(KEY)


@pytest.fixture(scope="module")
def published(server, token):
    squares = publish_ready(server.api, token, *sample_copy("squares"))
    echo = publish_ready(server.api, token, *sample_copy("ws-echo"))
    yield squares, echo
    for c in (squares, echo):
        tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"datagrok/{c['name']}"],
                              capture_output=True, text=True).stdout.split()
        for tag in tags:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def entries(server, token, cid, **params) -> list[dict]:
    r = requests.get(f"{server.url}/_grokemu/requests", params={"container": cid, **params},
                     headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def assert_no_credential(data, *secrets) -> None:
    text = json.dumps(data)
    for secret in secrets:
        assert secret not in text, f"a credential ({secret[:4]}…) is in an entry"


def test_the_js_clients_requests_and_websocket_are_recorded_without_credentials(server, token, published):
    squares, echo = published
    js = js_runner(server.api, token)
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const auth = {{headers: {{Authorization: token, 'X-Trace': 'js-' + token}}}};
        const got = await containers.fetchProxy('{squares['id']}', '/square?number=4', auth);
        const posted = await containers.fetchProxy('{squares['id']}', '/echo', {{method: 'POST',
          headers: {{Authorization: token, 'Content-Type': 'application/json'}},
          body: JSON.stringify({{hello: 'inspector', token}})}});
        const missing = await containers.fetchProxy('{squares['id']}', '/no-such-route', auth);
        const socket = await containers.webSocketProxy('{echo['id']}', '/ws', 120000);
        let reply = nextMessage(socket);
        socket.send('hello ' + token);
        const text = await reply;
        const end = closed(socket);
        socket.send('close 4321 container says bye');
        const close = await end;
        return {{get: got.status, post: posted.status, postBody: await posted.json(), missing: missing.status,
                 text, close}};""")
    assert (result["get"], result["post"], result["missing"]) == (200, 200, 404)
    assert result["close"]["code"] == 4321
    http = entries(server, token, squares["id"])
    assert [(e["method"], e["path"], e["status"]) for e in http][:3] == [
        ("GET", "/no-such-route", 404), ("POST", "/echo", 200), ("GET", "/square?number=4", 200)]
    first = http[2]
    assert first["coldStartMs"] is not None and first["coldStartMs"] > 0  # on_demand: started by this request
    assert json.loads(first["responseBody"]) == {"result": 16.0} or "16" in first["responseBody"]
    post = http[1]
    assert json.loads(post["requestBody"]) == {"hello": "inspector", "token": "[redacted]"}
    assert dict(post["requestHeaders"])["Authorization"] == "[redacted]"
    assert dict(http[0]["requestHeaders"])["X-Trace"] == "js-[redacted]"
    [ws] = wait_until(lambda: [e for e in entries(server, token, echo["id"]) if not e["open"]], 30,
                      "the WebSocket session recorded as closed")
    assert ws["kind"] == "websocket" and ws["status"] == 101 and ws["closeCode"] == 4321
    assert ws["closedBy"] == "container"
    assert ("sent", "hello [redacted]") in [(f["direction"], f["data"]) for f in ws["frames"]]
    assert_no_credential([http, ws], token, KEY, "admin")


def test_the_requests_tab_replays_and_copies_as_curl(server, token, published):
    require(Path("/usr/bin/chromium").exists() or shutil.which("chromium"), "Chromium")
    require((TOOLS / "node_modules" / "playwright-core").exists(), "playwright-core (scripts/ensure-clients.sh)")
    squares, _ = published
    body = json.dumps({"from": "the page", "n": 7})
    r = requests.post(f"{server.api}/docker/containers/proxy/{squares['id']}/echo", data=body,
                      headers={"Authorization": token, "Content-Type": "application/json"}, timeout=120)
    assert r.status_code == 200
    page = Page(server.url)
    try:
        page("login", key=KEY)
        opened = page("openRequests", name=squares["name"])
        assert opened == {"selected": "true", "logsHidden": True}
        page("waitRows", method="POST", path="/echo")
        detail = page("pick", method="POST", path="/echo")
        assert detail["replayDisabled"] is False and '"the page"' in detail["requestBody"]
        assert "Authorization: [redacted]" in detail["requestHeaders"]
        for secret in (token, KEY):
            assert secret not in detail["html"]
        replayed = page("replay")
        assert replayed["status"] == "200", replayed
        newest = entries(server, token, squares["id"], limit=1)[0]
        assert (newest["method"], newest["path"], json.loads(newest["requestBody"])) == ("POST", "/echo",
                                                                                          json.loads(body))
        assert newest["id"] > max(e["id"] for e in entries(server, token, squares["id"])[1:])
        curl = page("copyCurl")
        assert curl == detail["curl"] and curl.startswith("curl -X POST ")
        assert token not in curl and KEY not in curl and '"Authorization: $GROKEMU_TOKEN"' in curl
        require(shutil.which("curl") is not None, "curl")
        done = subprocess.run(["bash", "-c", curl + " -s -w '\\n%{http_code}'"], capture_output=True, text=True,
                              env={**os.environ, "GROKEMU_TOKEN": token}, timeout=60)
        out, _, code = done.stdout.rpartition("\n")
        assert code == "200" and json.loads(out) == json.loads(body), done
        assert page("axe") == []
        assert page("errors") == []
    finally:
        page.close()
