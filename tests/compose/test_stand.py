"""Issue 11: the compose stand end to end with the real clients.

grokemu runs in a container built from compose/Dockerfile (offline, from the host's wheelhouse), drives the host's
daemon through the mounted socket, keeps its data in a named volume and publishes its API on 127.0.0.1 only. Plugin
containers run on the stand's network with nothing published (the docker_network setting) and call back at
http://grokemu:PORT/api. The real `grok` CLI publishes from the host (directly, then through the stand's registry),
Datagrok's JS client (datagrok-api 1.27.9 in Node) calls fetchProxy (on-demand start) and webSocketProxy, the test kit
runs the example plugin test against the stand, and the last test takes the stand down and checks that no container,
network, volume or image of the project is left.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.helpers import healthy, js_runner, remove_images, require, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TOOLS = Path(os.environ.get("GROKEMU_TOOLS", ROOT / ".tools"))


# -- helpers ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token(stand):
    return stand.login()


@pytest.fixture
def grok(tmp_path, stand):
    binary = TOOLS / "node_modules" / ".bin" / "grok"
    require(binary.exists() and shutil.which("node") is not None,
            "the grok CLI (run scripts/ensure-clients.sh to install datagrok-tools 6.7.5)")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GROK_PRIVATE_KEY"} | {"HOME": str(home)}

    def run(*args, cwd=None, timeout=600):
        return subprocess.run([str(binary), *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture(scope="module")
def js(stand, token):
    return js_runner(stand.api, token)


@pytest.fixture
def package(tmp_path):
    """copy(sample) -> (folder, package name, container name): samples/<sample> under a unique name; the Docker
    images the CLI built on the host for it are removed afterwards."""
    made = []

    def copy(sample: str):
        suffix = uuid.uuid4().hex[:6]
        folder = tmp_path / f"{sample}-{suffix}"
        shutil.copytree(SAMPLES / sample, folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
        (folder / ".npmignore").touch()
        meta = json.loads((folder / "package.json").read_text())
        short = f"{sample.replace('-', '')}{suffix}"
        meta["name"] = f"@grokemu/{short}"
        (folder / "package.json").write_text(json.dumps(meta))
        made.append(short)
        return folder, meta["name"], f"{short}-{sample}"

    yield copy
    remove_images(*made)


def get(stand, token, path, **kw):
    return requests.get(f"{stand.api}{path}", headers={"Authorization": token}, timeout=60, **kw)


def wait_ready(stand, token, short: str, timeout: float = 300) -> list[dict]:
    def settled():
        found = get(stand, token, "/docker/images", params={"text": short}).json()
        return found if found and all(i["status"] in ("ready", "error") for i in found) else None

    images = wait_until(settled, timeout, f"images of {short} validated", interval=0.3)
    assert all(i["status"] == "ready" for i in images), [i.get("logs") for i in images]
    return images


def container_of(stand, token, name: str) -> dict:
    [c] = [c for c in get(stand, token, "/docker/containers", params={"text": name}).json() if c["name"] == name]
    return c


def docker_json(*args: str):
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


# -- the stand -------------------------------------------------------------------------------------------------------
def test_stand_publishes_on_loopback_only_with_socket_and_volume(stand):
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={stand.project}"],
                         capture_output=True, text=True).stdout.split()
    services = {a["Config"]["Labels"]["com.docker.compose.service"]: a for a in docker_json("inspect", *ids)}
    assert sorted(services) == ["grokemu", "rabbitmq"], list(services)
    assert not any((services["rabbitmq"]["NetworkSettings"]["Ports"] or {}).values())  # the broker: published nowhere
    attrs = services["grokemu"]
    bindings = [b for spec in (attrs["NetworkSettings"]["Ports"] or {}).values() for b in spec or []]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings  # never 0.0.0.0
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/var/run/docker.sock"]["Type"] == "bind"
    assert mounts["/data"]["Type"] == "volume"
    assert attrs["State"]["Health"]["Status"] == "healthy"
    assert stand.network in attrs["NetworkSettings"]["Networks"]
    info = requests.get(f"{stand.url}/_grokemu/health", timeout=10).json()
    assert info.get("version")


def test_grok_publish_then_fetch_proxy_starts_it_on_demand(stand, token, grok, js, package):
    folder, name, cname = package("squares")
    added = grok("config", "add", "--alias", "stand", "--server", stand.api, "--key", "admin", "--default")
    assert added.returncode == 0, added.stderr
    published = grok("publish", "stand", cwd=folder)
    assert published.returncode == 0, published.stdout + published.stderr
    wait_ready(stand, token, cname.split("-")[0])
    assert container_of(stand, token, cname)["status"] == "stopped by user"  # on_demand: not started by publish

    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const c = await containers.filter('{cname}').first();
        const auth = {{headers: {{Authorization: token}}}};
        const square = await containers.fetchProxy(c.id, '/square?number=4', auth);   // starts it
        const back = await containers.fetchProxy(c.id, '/datagrok', auth);   // the container calls the API
        return {{status: square.status, body: await square.json(),
                 cold: square.headers.get('x-grokemu-cold-start-ms'), back: await back.json()}};""")
    assert result["status"] == 200 and result["body"] == {"result": 16.0}
    assert int(result["cold"]) > 0
    # DATAGROK_API_URL is grokemu by its service name on the shared network; USER_API_KEY is accepted there
    assert result["back"]["status"] == 200, result["back"]
    assert result["back"]["user"]["login"] == "admin"

    c = container_of(stand, token, cname)
    assert c["status"] == "started"
    [attrs] = docker_json("inspect", c["serviceName"])
    assert not any(attrs["NetworkSettings"]["Ports"].values() or []), "a plugin container published a port"
    on_network = attrs["NetworkSettings"]["Networks"][stand.network]["IPAddress"]
    assert c["address"] == on_network and c["address"] != "127.0.0.1"
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert env["DATAGROK_API_URL"] == f"http://grokemu:{stand.port}/api"


def test_web_socket_proxy_through_the_js_client(stand, js, package):
    folder, name, cname = package("ws-echo")
    done = subprocess.run([sys.executable, "-m", "grokemu", "publish", str(folder), "--url", stand.url],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = js(f"""
        const containers = grok.dapi.docker.dockerContainers;
        const c = await containers.filter('{cname}').first();
        const socket = await containers.webSocketProxy(c.id, '/ws', 120000);   // on_demand: started for it
        const reply = nextMessage(socket);
        socket.send('hello through the stand');
        const text = await reply;
        socket.close();
        return {{text}};""")
    assert result["text"] == "hello through the stand"


def test_registry_path_push_to_the_stand(stand, token, grok, package):
    folder, name, cname = package("squares")
    registry = f"localhost:{stand.port}"
    added = grok("config", "add", "--alias", "stand", "--server", stand.api, "--key", "admin", "--registry",
                 registry, "--default")
    assert added.returncode == 0, added.stderr
    published = grok("publish", "stand", "--release", cwd=folder)
    assert published.returncode == 0, published.stdout + published.stderr
    [image] = wait_ready(stand, token, cname.split("-")[0])
    assert image["digest"], image  # validated from grokemu's own registry (in the stand's volume)
    c = container_of(stand, token, cname)
    answer = get(stand, token, f"/docker/containers/proxy/{c['id']}/square?number=3")
    assert answer.status_code == 200 and answer.json() == {"result": 9.0}
    # registry reads are public (README); a session token is no registry token, so none is sent (it would be a 401)
    tags = requests.get(f"{stand.url}/v2/datagrok/{image['name']}/tags/list", timeout=30)
    assert tags.status_code == 200, tags.text
    assert tags.json()["tags"], tags.json()  # the pushed image is listed


def test_bridge_rules_hold_on_the_shared_network(stand):
    """A container on the stand's network reaches grokemu at grokemu:PORT with the bridge rules: no dev-key login,
    no dashboard, no admin routes; token-authenticated API calls are served. The host is not limited."""
    probe = f"""
import json, urllib.request, urllib.error
def call(method, path, headers):
    req = urllib.request.Request("http://grokemu:{stand.port}" + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return r.status
    except urllib.error.HTTPError as e: return e.code
print(json.dumps({{"login": call("POST", "/api/users/login/dev", {{"Authorization": "Dev admin"}}),
                  "dashboard": call("GET", "/", {{}}),
                  "reset": call("POST", "/_grokemu/reset", {{}}),
                  "api": call("GET", "/api/users/current", {{"Authorization": "not-a-token"}})}}))
"""
    done = subprocess.run(["docker", "run", "--rm", "--network", stand.network, "python:3.12-slim", "python3", "-c",
                           probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["login"] == 403 and seen["dashboard"] == 403 and seen["reset"] == 403, seen
    assert seen["api"] == 401, seen  # served there, but only with a valid token
    host = requests.post(f"{stand.api}/users/login/dev", headers={"Authorization": "Dev admin"}, timeout=10)
    assert host.status_code == 200  # through the published port: the host


def test_example_plugin_test_runs_against_the_stand(stand):
    """The test kit with GROKEMU_URL: the example in samples/ against the stand instead of its own grokemu."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(SAMPLES / "squares" / "tests")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "GROKEMU_URL": stand.url})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout


def test_a_queue_function_through_the_stands_broker_service(stand, token):
    """The stand's `rabbitmq` service (nothing published) carries the call; the worker reaches it by name on the
    stand's network and grokemu as http://grokemu:PORT."""
    from grokemu.testing import Grokemu
    from tests.helpers import publish_queue_worker

    worker = publish_queue_worker(stand.api, token)
    assert Grokemu(stand.url).call(worker["namespace_"] + "add", a=20, b=22) == 42
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={stand.project}",
                          "--filter", "label=com.docker.compose.service=rabbitmq"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert len(ids) == 1, ids
    info = docker_json("inspect", ids[0])[0]
    assert not any(info["NetworkSettings"]["Ports"].values())  # published nowhere
    assert list(info["NetworkSettings"]["Networks"]) == [stand.network]


def test_z_restart_runs_them_again_and_down_leaves_no_plugin_container(stand, token):
    """The stand owns what it starts: `restart` and `down` + `up` run the running plugin containers again (new
    Docker containers, same entities); `down` without -v leaves no plugin container and no network behind."""
    from tests.helpers import publish_ready, sample_copy

    name, files = sample_copy("squares", container={"on_demand": True})
    c = publish_ready(stand.api, token, name, files)
    started = get(stand, token, f"/docker/containers/{c['id']}/run", params={"awaitStart": "true"})
    assert started.status_code == 200 and started.json()["status"] == "started", started.text

    def plugin_containers(only_ours: bool = True):
        label = f"label=grokemu.container={c['id']}" if only_ours else f"label=grokemu.instance={stand.project}"
        return subprocess.run(["docker", "ps", "-aq", "--filter", label],
                              capture_output=True, text=True, check=True).stdout.split()

    def running_again(before: list[str]):
        def check():
            if not healthy(stand.url):
                return None
            fresh = get(stand, stand.login(), f"/docker/containers/{c['id']}").json()
            ids = plugin_containers()
            return fresh if fresh["status"] == "started" and ids and ids != before else None
        return wait_until(check, 300, "the plugin container running again", interval=0.5)

    first = plugin_containers()
    assert len(first) == 1
    restarted = stand.compose("restart", "grokemu")
    assert restarted.returncode == 0, restarted.stderr
    running_again(first)
    second = plugin_containers()
    answer = get(stand, stand.login(), f"/docker/containers/proxy/{c['id']}/square?number=3")
    assert answer.status_code == 200 and answer.json() == {"result": 9}

    down = stand.compose("down")
    assert down.returncode == 0, down.stderr
    assert plugin_containers(only_ours=False) == []  # the earlier tests' plugin containers went too
    assert subprocess.run(["docker", "network", "ls", "-q", "--filter", f"name=^{stand.network}$"],
                          capture_output=True, text=True, check=True).stdout.split() == []
    up = stand.compose("up", "-d")
    assert up.returncode == 0, up.stderr
    running_again(second)


def test_zz_teardown_leaves_nothing_of_the_project(stand, docker_compose_command):
    """Last: reset (plugin containers and images), `down -v --rmi local`, then nothing of the project is left."""
    stand.reset()
    down = stand.compose("down", "-v", "--rmi", "local", "--remove-orphans")
    assert down.returncode == 0, down.stderr

    def listed(*args):
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.split()

    project = f"label=com.docker.compose.project={stand.project}"
    assert listed("ps", "-aq", "--filter", project) == []
    assert listed("ps", "-aq", "--filter", f"label=grokemu.instance={stand.project}") == []
    assert listed("network", "ls", "-q", "--filter", f"name=^{stand.network}$") == []
    assert listed("network", "ls", "-q", "--filter", project) == []
    assert listed("volume", "ls", "-q", "--filter", project) == []
    assert listed("images", "-q", "--filter", f"label=grokemu.instance={stand.project}") == []
    images = listed("images", "--format", "{{.Repository}}")
    assert not [i for i in images if i.startswith(stand.project)], images
