"""Issue 12 end to end on a single-node swarm (docs/swarm.md): `grokemu up --orchestrator swarm`, the real `grok
publish`, on-demand start through fetchProxy from Datagrok's real JS client, idle → scaled to 0 → the next request
starts it again (checked in `docker service inspect`), a WebSocket through webSocketProxy, and a SIGKILL of grokemu
with a restart that re-adopts the service without a duplicate."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest
import requests
import websocket

from grokemu.testing import GrokemuProcess
from tests.helpers import free_port, js_runner, package_folder, sample_copy, wait_until

pytestmark = pytest.mark.e2e
IDLE_MINUTES = 0.05  # 3 s


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image, swarm):
    data = tmp_path_factory.mktemp("grokemu-swarm")
    proc = GrokemuProcess(data, "--orchestrator", "swarm")
    proc.start()
    yield proc
    proc.close()
    subprocess.run(["docker", "network", "rm", f"grokemu-swarm-{proc.instance}"], capture_output=True)


def services(instance: str) -> list[dict]:
    out = subprocess.run(["docker", "service", "ls", "-q", "--filter", f"label=grokemu.instance={instance}"],
                         capture_output=True, text=True, timeout=30)
    ids = out.stdout.split()
    if not ids:
        return []
    inspected = subprocess.run(["docker", "service", "inspect", *ids], capture_output=True, text=True, timeout=30)
    return json.loads(inspected.stdout)


def replicas(service: dict) -> int:
    return service["Spec"]["Mode"]["Replicated"]["Replicas"]


def grok_publish(grok, server, name: str, files: dict, tmp_path) -> None:
    folder = package_folder(files, tmp_path / name.split("/")[1])
    added = grok("config", "add", "--alias", "emu", "--server", server.api, "--key", "admin", "--default")
    assert added.returncode == 0, added.stderr
    done = grok("publish", "emu", "--release", cwd=folder)
    assert done.returncode == 0 and "Published" in done.stdout, done.stdout + done.stderr


def test_publish_on_demand_idle_scale_to_zero_and_back(server, grok, tmp_path):
    token = server.login()
    name, files = sample_copy("squares", container={"on_demand": True, "shutdown_timeout": IDLE_MINUTES,
                                                     "cpu": 0.5, "memory": 128, "shm_size": 32})
    grok_publish(grok, server, name, files, tmp_path)
    short = name.split("/")[1]

    def ready_container():
        images = requests.get(f"{server.api}/docker/images", params={"text": short},
                              headers={"Authorization": token}).json()
        if images and images[0]["status"] in ("ready", "error"):
            assert images[0]["status"] == "ready", images[0]["logs"]
            return requests.get(f"{server.api}/docker/containers", params={"text": short},
                                headers={"Authorization": token}).json()[0]
        return None

    c = wait_until(ready_container, 240, f"image of {name} validated")
    assert services(server.instance) == []  # on_demand: nothing runs yet

    js = js_runner(server.api, token)
    first = js(f"""
        const r = await grok.dapi.docker.dockerContainers.fetchProxy('{c["id"]}', '/square?number=7', {{headers: {{Authorization: token}}}});
        return {{status: r.status, body: await r.text(), cold: r.headers.get('x-grokemu-cold-start-ms')}};
    """)
    assert first["status"] == 200 and json.loads(first["body"]) == {"result": 49} and first["cold"]
    [service] = services(server.instance)
    assert replicas(service) == 1 and service["Spec"]["Labels"]["grokemu.container"] == c["id"]
    template = service["Spec"]["TaskTemplate"]
    assert template["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 128 * 2**20}
    assert template["RestartPolicy"]["Condition"] == "none"
    assert not (service["Spec"].get("EndpointSpec") or {}).get("Ports")  # published nowhere

    # idle: shutdown_timeout passes with no request -> stopped by system, the service scaled to 0
    def idled():
        got = requests.get(f"{server.api}/docker/containers/{c['id']}", headers={"Authorization": token}).json()
        return got if got["status"] == "stopped by system" else None

    wait_until(idled, 60, "stopped by system after shutdown_timeout")
    [service] = services(server.instance)
    assert replicas(service) == 0

    again = js(f"""
        const r = await grok.dapi.docker.dockerContainers.fetchProxy('{c["id"]}', '/square?number=8', {{headers: {{Authorization: token}}}});
        return {{status: r.status, body: await r.text()}};
    """)
    assert again["status"] == 200 and json.loads(again["body"]) == {"result": 64}
    [same] = services(server.instance)
    assert same["ID"] == service["ID"] and replicas(same) == 1  # the same service, scaled back to 1


def test_websocket_through_webSocketProxy_on_swarm(server):
    token = server.login()
    from tests.helpers import publish_ready

    c = publish_ready(server.api, token, *sample_copy("ws-echo"))
    ws = websocket.create_connection(
        f"ws://localhost:{server.port}/api/docker/containers/proxy-ws/{c['id']}/ws", timeout=120,
        header=[f"Authorization: {token}"])
    try:
        assert ws.recv() == "CONNECTED"
        ws.send("over the swarm")
        assert ws.recv() == "over the swarm"
    finally:
        ws.close()


def test_sigkill_and_restart_adopts_without_a_duplicate(server, tmp_path):
    token = server.login()
    from tests.helpers import publish_ready

    c = publish_ready(server.api, token, *sample_copy("squares", container={"on_demand": False}))  # starts when ready
    wait_until(lambda: requests.get(f"{server.api}/docker/containers/{c['id']}",
                                    headers={"Authorization": token}).json()["status"] == "started", 120,
               "started")
    before = [s["ID"] for s in services(server.instance) if s["Spec"]["Labels"]["grokemu.container"] == c["id"]]
    assert len(before) == 1
    server.stop(signal.SIGKILL)
    again = GrokemuProcess(server.data_dir, "--orchestrator", "swarm", instance=server.instance)
    again.start()
    server.proc, server.port = again.proc, again.port  # the module fixture's teardown resets and stops this one
    token = again.login()
    r = requests.get(f"{again.api}/docker/containers/proxy/{c['id']}/square?number=3",
                     headers={"Authorization": token}, timeout=60)
    assert r.status_code == 200 and r.json() == {"result": 9}  # the reconcile ran before the proxy judged it

    def passes():
        return requests.get(f"{again.url}/_grokemu/health", headers={"Authorization": token},
                            timeout=30).json()["scheduler"]["passes"]

    seen = passes()  # two more background passes (reconcile, idle stops): a duplicate would have been made by now
    wait_until(lambda: passes() >= seen + 2, 60, "two more background passes")
    after = [s["ID"] for s in services(server.instance) if s["Spec"]["Labels"]["grokemu.container"] == c["id"]]
    assert after == before  # re-adopted: the same service, no duplicate


def test_images_through_grokemus_registry_run_by_digest(tmp_path_factory, base_image, swarm, grok, tmp_path):
    """The several-node path on one node: `grok publish` with --registry pushes to grokemu's registry, and the
    service names the image there by digest (`swarm_registry`), so the node pulls exactly it."""
    port = free_port()  # the registry's address must be known before grokemu starts
    server = GrokemuProcess(tmp_path_factory.mktemp("grokemu-swarm-registry"), "--orchestrator", "swarm",
                            env={"GROKEMU_SWARM_REGISTRY": f"localhost:{port}"})
    server.args[server.args.index("--port") + 1] = str(port)
    server.start()
    registry = f"localhost:{server.port}"
    try:
        token = server.login()
        name, files = sample_copy("squares", container={"on_demand": True})
        folder = package_folder(files, tmp_path / "pkg")
        assert grok("config", "add", "--alias", "reg", "--server", server.api, "--key", "admin", "--registry",
                    registry, "--default").returncode == 0
        done = grok("publish", "reg", cwd=folder)
        assert done.returncode == 0 and "Published" in done.stdout, done.stdout + done.stderr
        short = name.split("/")[1]

        def ready():
            images = requests.get(f"{server.api}/docker/images", params={"text": short},
                                  headers={"Authorization": token}).json()
            return images[0] if images and images[0]["status"] in ("ready", "error") else None

        image = wait_until(ready, 240, "image validated")
        assert image["status"] == "ready" and image["digest"], image["logs"]
        [c] = requests.get(f"{server.api}/docker/containers", params={"text": short},
                           headers={"Authorization": token}).json()
        r = requests.get(f"{server.api}/docker/containers/proxy/{c['id']}/square?number=6",
                         headers={"Authorization": token}, timeout=120)
        assert r.status_code == 200 and r.json() == {"result": 36}
        [service] = services(server.instance)
        ref = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert ref.startswith(f"{registry}/datagrok/") and ref.endswith(image["digest"])
    finally:
        server.close()
        subprocess.run(["docker", "network", "rm", f"grokemu-swarm-{server.instance}"], capture_output=True)

