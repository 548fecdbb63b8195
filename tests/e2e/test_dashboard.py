"""The Dockers page (issue 10) in a real browser (Debian's Chromium driven by playwright-core, tests/e2e/browser/
dashboard.cjs) against a real `grokemu up` and the real Docker daemon: Datagrok's Manage → Dockers view
(docs/real-plugins.md), live.

One server and one browser page for the module; the tests run in file order and build on each other (the page is
never reloaded after the sign-in, which is the point). Screenshots of each state are kept under the test's tmp
folder and copied to test-artifacts/dashboard/ (listed in .gitignore).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.helpers import ROOT, TOOLS, docker_available, package_zip, require, sample_copy, wait_until

pytestmark = pytest.mark.e2e
DRIVER = Path(__file__).parent / "browser" / "dashboard.cjs"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
KEY = "dash-k3y-7f2"  # a dev key of its own, so "the page never shows the key" is a meaningful check

# the dots' computed colours (web/static/dashboard.css)
GREEN, RED, GREY = "rgb(46, 125, 50)", "rgb(198, 40, 40)", "rgb(138, 138, 138)"


class Page:
    """The driver process: one JSON command per line, one JSON answer per line."""

    def __init__(self, base: str, downloads: Path):
        self.proc = subprocess.Popen(["node", str(DRIVER), base, str(downloads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

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
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard-shots")
    yield folder
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        shutil.copy2(f, ARTIFACTS / f.name)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require(docker_available(), "a Docker daemon")
    require(subprocess.run(["docker", "image", "inspect", "python:3.12-slim"], capture_output=True).returncode == 0,
            "the python:3.12-slim image (run scripts/ensure-base-image.sh)")
    require(Path("/usr/bin/chromium").exists() or shutil.which("chromium"), "Chromium")
    require((TOOLS / "node_modules" / "playwright-core").exists(), "playwright-core (scripts/ensure-clients.sh)")
    require((TOOLS / "node_modules" / "axe-core").exists(), "axe-core (scripts/ensure-clients.sh)")
    s = GrokemuProcess(tmp_path_factory.mktemp("grokemu"), "--dev-key", "admin", "--dev-key", f"{KEY}=admin")
    s.start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    p = Page(server.url, tmp_path_factory.mktemp("downloads"))
    yield p
    p.close()


@pytest.fixture(scope="module")
def token(server):
    return server.login()


@pytest.fixture(scope="module")
def docker_client():
    import docker

    return docker.from_env()


def publish(server, name: str, files: dict) -> None:
    r = requests.post(f"{server.api}/packages/dev/{name}?debug=true", data=package_zip(files),
                      headers={"Authorization": "Dev admin"}, timeout=60)
    assert r.status_code == 200, r.text


def short(name: str) -> str:
    return name.split("/")[-1]


STATE: dict = {}


def test_login_through_the_form_and_the_page_never_shows_the_key(server, page, shots):
    seen = page("login", key=KEY)
    assert seen["form"] == 1 and seen["live"] is True
    assert seen["cookies"] == [{"httpOnly": True, "sameSite": "Strict"}]
    assert KEY not in seen["html"]
    assert [v for v in seen["loginAxe"]["violations"] if v["impact"] in ("serious", "critical")] == []
    page("screenshot", file=str(shots / "01-empty.png"))


def test_published_sample_appears_without_reload_and_dots_follow_the_lifecycle(server, page, token, shots):
    """Publish squares (on_demand): its image card appears grey (pending validation / validating) and turns green
    (ready); its container card appears with no dot (stopped by user); nothing reloads the page."""
    navigations = page("navigationCount")
    name, files = sample_copy("squares")
    STATE["squares"] = name
    publish(server, name, files)
    image = page("waitCard", kind="image", name=f"{short(name)}-squares")
    early = page("watchDots", kind="image", name=f"{short(name)}-squares", ms=200)
    ready = page("waitCardStatus", kind="image", name=f"{short(name)}-squares", statuses=["ready", "error"])
    assert ready["status"] == "ready", ready
    assert ready["dot"] == "green" and ready["color"] == GREEN and ready["display"] != "none"
    if image["status"] != "ready":  # caught while pending: a blinking grey dot
        assert image["color"] == GREY and image["animation"] == "blink", (image, early)
    container = page("waitCard", kind="container", name=f"{short(name)}-squares")
    assert container["status"] == "stopped by user" and container["dot"] == "none" and container["display"] == "none"
    STATE["container_id"] = container["id"]
    STATE["image_name"] = f"{short(name)}-squares"
    STATE["container_name"] = f"{short(name)}-squares"
    assert page("navigationCount") == navigations  # no reload
    page("screenshot", file=str(shots / "02-published.png"))


def test_start_and_stop_from_the_context_menu_change_the_real_container(server, page, docker_client, shots):
    name = STATE["container_name"]
    menu = page("menu", kind="container", name=name, item="Start")
    assert [i["label"] for i in menu["items"]] == ["Start", "Stop", "Delete"]
    assert menu["focused"] == "menuitem"
    watched = page("watchDots", kind="container", name=name, ms=400)
    started = page("waitCardStatus", kind="container", name=name, statuses=["started", "error"])
    assert started["status"] == "started" and started["color"] == GREEN, (started, watched)
    running = wait_until(lambda: [c for c in docker_client.containers.list(filters={"label": "grokemu.container"})
                                  if c.labels.get("grokemu.container") == STATE["container_id"]], 30, "running")
    assert running[0].status == "running"
    page("screenshot", file=str(shots / "03-started.png"))
    # Stop, from the keyboard this time (Shift+F10, arrows, Enter)
    page("menu", kind="container", name=name, item="Stop", keyboard=True)
    stopping = page("watchDots", kind="container", name=name, ms=300)
    stopped = page("waitCardStatus", kind="container", name=name, statuses=["stopped by user"])
    assert stopped["dot"] == "none" and stopped["display"] == "none", (stopped, stopping)
    gone = wait_until(lambda: not [c for c in docker_client.containers.list(filters={"label": "grokemu.container"})
                                   if c.labels.get("grokemu.container") == STATE["container_id"]] or None, 30,
                      "container stopped")
    assert gone
    # a pending state seen on the way (pending user stop / stopping) had the blinking grey dot
    greys = [row for row in stopping if row.split("|")[1] == "grey"]
    assert all(row.split("|")[2] == GREY and row.split("|")[4] == "blink" for row in greys), stopping
    page("screenshot", file=str(shots / "04-stopped.png"))


def test_logs_follow_lines_printed_after_the_pane_is_open(server, page, token, shots):
    name = STATE["container_name"]
    page("menu", kind="container", name=name, item="Start")
    page("waitCardStatus", kind="container", name=name, statuses=["started"])
    pane = page("select", kind="container", name=name)
    assert pane["logsHeading"] == "Logs"
    fields = dict(pane["fields"])
    assert fields["Status"] == "started" and fields["Package"] == STATE["squares"]
    assert "cpu 0.25" in fields["Limits"] and "memory 256" in fields["Limits"]
    assert fields["Shutdown timeout"] == "1 min" and fields["On demand"] == "yes"
    page("waitLogs", contains="squares listening on")
    marker = f"/square?number={int(time.time()) % 100000}"
    r = requests.get(f"{server.api}/docker/containers/proxy/{STATE['container_id']}{marker}",
                     headers={"Authorization": token}, timeout=60)
    assert r.status_code == 200
    seen = page("waitLogs", contains=f"GET {marker}")
    assert f"GET {marker}" in seen["logs"]
    info = page("waitCardText", kind="container", name=name, contains="1 request · last 200")
    assert "idle shutdown in 0:5" in info["text"] or "idle shutdown in 1:00" in info["text"], info["text"]
    page("screenshot", file=str(shots / "05-logs.png"))


def test_try_it_box_answers_through_fetch_proxy_and_the_snippet_names_the_container(server, page, shots):
    seen = page("tryIt", path="/square?number=12")
    assert seen["status"] == "200" and json.loads(seen["body"]) == {"result": 144.0}
    assert seen["result"].startswith("200")
    assert (f"grok.dapi.docker.dockerContainers.fetchProxy(\n  '{STATE['container_id']}', '/square?number=12')"
            in seen["snippet"])
    page("waitCardText", kind="container", name=STATE["container_name"], contains="2 requests")
    page("screenshot", file=str(shots / "06-try-it.png"))


def test_search_filters_cards_with_the_api_text_semantics(server, page):
    name, files = sample_copy("ws-echo")
    STATE["wsecho"] = name
    publish(server, name, files)
    page("waitCard", kind="container", name=f"{short(name)}-ws-echo")
    visible = page("search", text=short(STATE["squares"]))
    assert visible and all(short(STATE["squares"]) in v for v in visible)
    visible = page("search", text='status = "started"')
    assert visible == [STATE["container_name"]]
    assert sorted(page("search", text="")) == sorted(
        [STATE["container_name"], STATE["image_name"], f"{short(name)}-ws-echo", f"{short(name)}-ws-echo"])


def test_failing_build_shows_red_and_its_build_logs(server, page, shots):
    def break_it(files):
        [path] = [k for k in files if k.endswith("/Dockerfile")]
        files[path] = files[path] + b"\nRUN echo dashboard-build-breaks-here && exit 3\n"

    name, files = sample_copy("squares", edit=break_it)
    publish(server, name, files)
    image = f"{short(name)}-squares"
    failed = page("waitCardStatus", kind="image", name=image, statuses=["error", "ready"], timeout=180000)
    assert failed["status"] == "error" and failed["dot"] == "red" and failed["color"] == RED
    pane = page("select", kind="image", name=image)
    assert pane["logsHeading"] == "Build logs"
    seen = page("waitLogs", contains="failed")
    assert "dashboard-build-breaks-here" in seen["logs"] and "exit 3" in seen["logs"]
    page("screenshot", file=str(shots / "07-build-failed.png"))
    STATE["broken_image"] = image


def test_download_context_returns_a_zip_with_the_dockerfile(server, page):
    saved = page("download", name=STATE["image_name"])
    with zipfile.ZipFile(saved["path"]) as z:
        names = set(z.namelist())
        assert {"Dockerfile", "app.py", "container.json"} <= names
        assert z.read("Dockerfile") == (ROOT / "samples/squares/dockerfiles/squares/Dockerfile").read_bytes()


def test_rebuild_from_the_menu_builds_again(server, page, token):
    """Rebuild on an image grokemu has the context of: back to pending (grey), then built again (ready, green)."""
    before = requests.get(f"{server.api}/docker/images", headers={"Authorization": token}).json()
    [img] = [i for i in before if i["name"] == STATE["image_name"]]
    page("menu", kind="image", name=STATE["image_name"], item="Rebuild")
    dots = page("watchDots", kind="image", name=STATE["image_name"], ms=400)

    def rebuilt():
        i = requests.get(f"{server.api}/docker/images/{img['id']}", headers={"Authorization": token}).json()
        return i if i["updatedOn"] != img["updatedOn"] and i["status"] in ("ready", "error") else None

    after = wait_until(rebuilt, 180, "image rebuilt")
    assert after["status"] == "ready" and "Building datagrok/" in after["logs"], after["logs"]
    again = page("waitCardStatus", kind="image", name=STATE["image_name"], statuses=["ready"])
    assert again["color"] == GREEN
    # while it was pending validation / validating, the dot was the blinking grey one
    assert all(row.split("|")[2] == GREY for row in dots if row.split("|")[0] != "ready"), dots


def test_an_idle_on_demand_container_turns_from_green_to_no_dot_on_its_own(server, page, token, shots):
    name, files = sample_copy("squares", container={"shutdown_timeout": 0.1})  # 6 s idle
    publish(server, name, files)
    cname = f"{short(name)}-squares"
    page("waitCard", kind="container", name=cname, status="stopped by user")
    assert page("waitCardStatus", kind="image", name=cname, statuses=["ready", "error"])["status"] == "ready"
    cid = page("cardInfo", kind="container", name=cname)["id"]
    page("select", kind="container", name=cname)
    r = requests.get(f"{server.api}/docker/containers/proxy/{cid}/health", headers={"Authorization": token},
                     timeout=120)
    assert r.status_code == 200, r.text
    green = page("waitCardStatus", kind="container", name=cname, statuses=["started"])
    assert green["color"] == GREEN and "idle shutdown in 0:0" in green["text"], green["text"]
    assert "cold start" in green["text"]
    page("screenshot", file=str(shots / "08-idle-countdown.png"))
    navigations = page("navigationCount")
    gone = page("waitCardStatus", kind="container", name=cname, statuses=["stopped by system"], timeout=60000)
    assert gone["dot"] == "none" and gone["display"] == "none"
    assert page("navigationCount") == navigations
    page("screenshot", file=str(shots / "09-idled-out.png"))


def test_the_page_says_when_it_is_out_of_date_and_reconnects(server, page):
    dropped = page("dropSocket")
    assert "stale" in dropped["seen"], dropped
    assert "out of date" in dropped["banner"]
    page("waitLive")
    assert page("banner") == {"hidden": True, "text": "", "live": "live"}


def test_delete_from_the_menu(server, page, token):
    cname = f"{short(STATE['wsecho'])}-ws-echo"
    page("menu", kind="container", name=cname, item="Delete")
    wait_until(lambda: page("eval", js=f"!document.querySelector('#containers .card[data-name=\"{cname}\"]')") or None,
               30, "card removed")
    left = requests.get(f"{server.api}/docker/containers", headers={"Authorization": token}).json()
    assert cname not in [c["name"] for c in left]


def test_readable_at_1280_and_narrow_and_axe_finds_no_serious_violations(server, page, shots):
    page("select", kind="container", name=STATE["container_name"])
    wide = page("viewport", width=1280, height=720)
    assert wide["scrollWidth"] <= wide["innerWidth"]
    page("screenshot", file=str(shots / "10-1280x720.png"), full=False)
    report = page("axe")
    narrow = page("viewport", width=390, height=844)
    assert narrow["scrollWidth"] <= narrow["innerWidth"], narrow
    page("screenshot", file=str(shots / "11-narrow.png"))
    report_narrow = page("axe")
    page("viewport", width=1280, height=720)
    (shots / "axe.json").write_text(json.dumps({"wide": report, "narrow": report_narrow}, indent=1))
    serious = [v for v in report["violations"] + report_narrow["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    assert page("consoleErrors") == []


def test_the_live_feed_is_guarded_like_every_route(server, token):
    """The feed's upgrade needs a session and grokemu's own origin (docs/security.md rules 2-3)."""
    import simple_websocket

    url = f"ws://localhost:{server.port}/_grokemu/live"
    for headers in ({}, {"Authorization": token, "Origin": "http://evil.example"}):
        with pytest.raises(simple_websocket.ConnectionError):
            simple_websocket.Client.connect(url, headers=headers)
    # the page's own origin is exercised by the browser above; here a client that sends none
    ws = simple_websocket.Client.connect(url, headers={"Authorization": token})
    try:
        first = json.loads(ws.receive(timeout=10))
        assert first["type"] == "snapshot" and {"containers", "images", "now"} <= first.keys()
    finally:
        ws.close()
