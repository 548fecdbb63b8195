"""A real browser (Debian's Chromium, driven by playwright-core) logged in by the `auth` cookie, as Datagrok's
browser sessions are: the dashboard lists what was published."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers import TOOLS, hello_package, package_zip, publish_ready, require, sample_copy

pytestmark = pytest.mark.e2e
DRIVER = Path(__file__).parent / "browser" / "drive.cjs"


@pytest.fixture
def browser_ready():
    require(shutil.which("chromium") is not None or Path("/usr/bin/chromium").exists(), "Chromium")
    require((TOOLS / "node_modules" / "playwright-core").exists(), "playwright-core (scripts/ensure-clients.sh)")


def drive(*args: str) -> dict:
    out = subprocess.run(["node", str(DRIVER), *args], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dashboard_in_chromium(grokemu_server, browser_ready, tmp_path):
    r = requests.post(f"{grokemu_server.api}/packages/dev/@acme/browserprobe?debug=true",
                      data=package_zip(hello_package(name="@acme/browserprobe")), headers={"Authorization": "Dev admin"})
    assert r.status_code == 200, r.text
    shot = tmp_path / "dashboard.png"
    seen = drive(grokemu_server.url, grokemu_server.login(), str(shot))
    assert seen["status"] == 200 and seen["title"] == "grokemu"
    assert any("browserprobe-hello" in row for row in seen["containers"])
    assert any("browserprobe-hello" in row for row in seen["images"])
    assert shot.stat().st_size > 1000


def test_fetch_proxy_and_websocket_proxy_from_the_browser(grokemu_server, browser_ready, base_image, tmp_path):
    """The calls DG.dapi.docker.dockerContainers.fetchProxy / webSocketProxy make, from a page in Chromium: a plain
    fetch with credentials 'include' and a WebSocket, both authenticated by the `auth` cookie alone. The ws-echo
    sample is on_demand: the first request starts it."""
    token = grokemu_server.login()
    container = publish_ready(grokemu_server.api, token, *sample_copy("ws-echo"), debug=False)
    assert container["status"] == "stopped by user"

    health = f"{grokemu_server.url}/_grokemu/health"
    before = requests.get(health, headers={"Authorization": token}, timeout=10).json()["relay"]
    seen = drive(grokemu_server.url, token, str(tmp_path / "page.png"), container["id"], "/health", "/ws")
    assert seen["fetch"]["status"] == 200 and json.loads(seen["fetch"]["body"]) == {"result": "Healthy"}
    # many fetchProxy calls mixed with API calls on the browser's kept-alive connections: each answered, and the
    # relay loop (issue 14) forwarded most of them itself
    healthy = json.dumps({"result": "Healthy"})
    expected = []
    for i in range(30):
        expected.append(healthy)
        if i % 10 == 9:
            expected.append("api 200 true")
    assert [s if s.startswith("api") else json.dumps(json.loads(s)) for s in seen["many"]["sequential"]] == expected
    assert [json.loads(s) for s in seen["many"]["concurrent"]] == [{"result": "Healthy"}] * 24
    after = requests.get(health, headers={"Authorization": token}, timeout=10).json()["relay"]
    assert after["forwarded"] - before["forwarded"] >= 25, (before, after)
    assert after["handedOff"] - before["handedOff"] >= 3, (before, after)  # the API calls, at least
    assert seen["fetch"]["cold"] is not None and float(seen["fetch"]["cold"]) > 0  # it waited for a cold start
    assert seen["ws"]["frames"] == ["CONNECTED", "hello from the browser"]
    assert seen["ws"]["code"] == 1000
