"""The attacker's two vantage points on a real `grokemu up`, with real clients:

- a page of another origin in the user's signed-in Chromium (cross-site 127.0.0.1:<port>, and same-site
  localhost:<other port>): reset, publish, stop and webSocketProxy all fail, while the same actions from grokemu's
  own page work;
- a plain container on the default Docker bridge: the dashboard, admin routes and dev-key login are refused on the
  bridge-gateway listener, and a token-authenticated /api call (what DATAGROK_API_URL + USER_API_KEY are for) works.
"""
from __future__ import annotations

import base64
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.helpers import TOOLS, hello_package, package_zip, publish_ready, require, sample_copy

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).parent / "browser" / "attack.cjs"


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    proc = GrokemuProcess(tmp_path_factory.mktemp("grokemu-attack"))
    proc.start()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def token(server):
    return server.login()


@pytest.fixture
def evil_site():
    """Another origin on this machine: a blank page on another port (localhost:<port> is same-site with grokemu,
    127.0.0.1:<port> cross-site)."""

    class Blank(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>another site</title><p>nothing to see"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()


def container(server, token, cid: str) -> dict:
    return requests.get(f"{server.api}/docker/containers/{cid}", headers={"Authorization": token}).json()


def drive(phase: str, server, evil: str, cid: str) -> dict:
    require((TOOLS / "node_modules" / "playwright-core").exists(), "playwright-core (scripts/ensure-clients.sh)")
    require(shutil.which("chromium") is not None or Path("/usr/bin/chromium").exists(), "Chromium")
    zip_b64 = base64.b64encode(package_zip(hello_package("@acme/frompage"))).decode()
    out = subprocess.run(["node", str(DRIVER), phase, server.url, evil, cid, zip_b64], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pages_of_other_origins_cannot_drive_grokemu_but_its_own_page_can(server, token, evil_site):
    cid = publish_ready(server.api, token, *sample_copy("ws-echo"))["id"]
    # warm it up so a stop would show: started by the API, as a user would
    requests.get(f"{server.api}/docker/containers/{cid}/run?awaitStart=true", headers={"Authorization": token},
                 timeout=120).raise_for_status()
    assert container(server, token, cid)["status"] == "started"

    seen = drive("evil", server, evil_site, cid)
    assert seen["signedIn"] is True
    assert seen["cookie"] == [{"httpOnly": True, "sameSite": "Strict"}]
    for site in ("crossSite", "sameSite"):
        for mode in ("noCors", "cors"):
            attempt = seen[site][mode]
            assert "CONNECTED" not in attempt["ws"].get("frames", []), (site, mode, attempt["ws"])
            for name in ("stop", "publish", "publishKeyInPath", "reset"):
                # an opaque (no-cors) answer hides the status from the page; cors ones fail without CORS headers.
                # Either way the page learns nothing, and the server state below shows nothing happened.
                assert attempt[name].get("status", 0) in (0, 401, 403) or "error" in attempt[name], (site, mode, name)
            # the request inspector's entries: refused, opaque or blocked by CORS, never read
            read = attempt["requests"]
            assert read.get("read", 0) == 0 and (read.get("status", 0) in (0, 401, 403) or "error" in read), read
    # nothing happened: the container still runs, nothing was published, nothing was reset
    assert container(server, token, cid)["status"] == "started"
    r = requests.get(f"{server.api}/packages/dev/@acme/frompage/timestamps", headers={"Authorization": "Dev admin"})
    assert r.json() == {}
    assert any(c["id"] == cid for c in requests.get(f"{server.api}/docker/containers",
                                                    headers={"Authorization": token}).json())

    own = drive("own", server, evil_site, cid)["own"]
    assert own["stop"]["status"] == 200
    assert own["publish"]["status"] == 200  # the page's cookie session publishes
    # the key-in-path form is for the CLI only: from a browser the key is never read as a key (here the cookie's
    # session is used and `admin/@acme/frompage` is refused as a package name)
    assert own["publishKeyInPath"]["status"] == 400
    assert own["ws"]["frames"][:2] == ["CONNECTED", "hi"]  # on_demand: the proxied socket started it again
    assert own["requests"]["status"] == 200 and own["requests"]["read"] > 2  # its own page reads the entries
    assert own["reset"]["status"] == 200
    assert requests.get(f"{server.api}/docker/containers", headers={"Authorization": token}).json() == []


def test_a_container_on_the_bridge_gets_only_the_api_with_a_token(server, token):
    health = requests.get(f"{server.url}/_grokemu/health", headers={"Authorization": token}).json()
    assert health["docker"]["reachable"]
    # host.docker.internal is the bridge gateway (`--add-host ...:host-gateway`), as in DATAGROK_API_URL
    base = f"http://host.docker.internal:{server.port}"
    # A plain container, as any other on the machine: it tries the dashboard, the admin routes, a dev-key login
    # and, with a token it was given, the API. python3's urllib prints each status.
    probe = f"""
import json, urllib.request, urllib.error
def call(method, url, headers={{}}):
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()[:200]
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()[:200]
out = {{
  "dashboard": call("GET", "{base}/"),
  "health": call("GET", "{base}/_grokemu/health"),
  "reset": call("POST", "{base}/_grokemu/reset", {{"Authorization": "{token}"}}),
  "login": call("POST", "{base}/api/users/login/dev", {{"Authorization": "Dev admin"}}),
  "legacyLogin": call("POST", "{base}/api/users/login/dev/admin"),
  "registryToken": call("GET", "{base}/token?scope=repository:x:pull,push", {{"Authorization": "Basic eDphZG1pbg=="}}),
  "current": call("GET", "{base}/api/users/current", {{"Authorization": "{token}"}}),
  "noToken": call("GET", "{base}/api/docker/containers"),
  "registryRead": call("GET", "{base}/v2/datagrok/none/tags/list"),
  "spoofedHost": call("GET", "{base}/_grokemu/health", {{"Host": "localhost:{server.port}"}}),
}}
print(json.dumps(out))
"""
    run = subprocess.run(["docker", "run", "--rm", "--add-host", "host.docker.internal:host-gateway",
                          "--label", f"grokemu.instance={server.instance}", "python:3.12-slim", "python3", "-c", probe],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    # refused by the listener, whatever Host the container claims
    for refused in ("dashboard", "health", "reset", "login", "legacyLogin", "registryToken", "spoofedHost"):
        assert seen[refused][0] == 403, (refused, seen[refused])
        assert "grokemu" not in seen[refused][1] or "bridge" in seen[refused][1]
    assert seen["current"][0] == 200 and json.loads(seen["current"][1])["login"] == "admin"
    assert seen["noToken"][0] == 401
    assert seen["registryRead"][0] == 404  # a read reaches the registry (nothing there), not a refusal
