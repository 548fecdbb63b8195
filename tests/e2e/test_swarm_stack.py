"""Issue 12, several-node form on one node: compose/grokemu-stack.yml deployed with `docker stack deploy`, grokemu
inside the swarm on an attachable overlay, the real `grok publish` to it, and fetchProxy / webSocketProxy through
Datagrok's real JS client to a plugin service reached by its service name (docs/swarm.md). Teardown removes the
stack, its network, volume and image."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port, healthy, js_runner, package_folder, sample_copy, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "compose" / "grokemu-stack.yml"




class Stack:
    def __init__(self):
        self.name = f"grokemutest{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.image = f"grokemu-stack-test:{self.name}"
        self.network = f"{self.name}-plugins"
        self.env = {**os.environ, "GROKEMU_IMAGE": self.image, "GROKEMU_PORT": str(self.port),
                    "GROKEMU_NETWORK": self.network, "GROKEMU_INSTANCE": self.name,
                    "GROKEMU_BROKER_PASSWORD": secrets.token_hex(24)}
        self.url = f"http://localhost:{self.port}"
        self.api = f"{self.url}/api"

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=self.env, cwd=ROOT)

    def login(self) -> str:
        return requests.post(f"{self.api}/users/login/dev", headers={"Authorization": "Dev admin"},
                             timeout=10).json()["token"]


@pytest.fixture(scope="module")
def stack(base_image, swarm):
    s = Stack()
    wheels = s.run(sys.executable, str(ROOT / "compose" / "wheelhouse.py"))
    assert wheels.returncode == 0, wheels.stdout + wheels.stderr
    built = s.run("docker", "build", "-q", "-t", s.image, "compose/")
    assert built.returncode == 0, built.stdout + built.stderr
    deployed = s.run("docker", "stack", "deploy", "-c", str(STACK_FILE), s.name)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    try:
        wait_until(lambda: healthy(s.url), 180, "the stack's grokemu answers its health check", interval=0.5)
        yield s
    finally:
        try:
            requests.post(f"{s.url}/_grokemu/reset", headers={"Authorization": s.login()}, timeout=180)
        except (requests.RequestException, KeyError, ValueError):
            pass  # it never came up: nothing of its own to remove
        s.run("docker", "stack", "rm", s.name)
        # the stack's task, network and volume go once the task has stopped
        deadline = time.time() + 120
        while time.time() < deadline and s.run("docker", "ps", "-aq", "--filter",
                                                f"label=com.docker.stack.namespace={s.name}").stdout.strip():
            time.sleep(0.5)
        for _ in range(60):
            if s.run("docker", "network", "rm", s.network).returncode != 0 and \
                    s.run("docker", "network", "inspect", s.network).returncode == 0:
                time.sleep(0.5)
                continue
            break
        s.run("docker", "volume", "rm", f"{s.name}_data")
        s.run("docker", "rmi", "-f", s.image)


def plugin_services(instance: str) -> list[dict]:
    ids = subprocess.run(["docker", "service", "ls", "-q", "--filter", f"label=grokemu.instance={instance}"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    if not ids:
        return []
    return json.loads(subprocess.run(["docker", "service", "inspect", *ids], capture_output=True, text=True,
                                     timeout=30).stdout)


def test_grok_publish_and_fetch_proxy_through_the_stack(stack, grok, tmp_path):
    token = stack.login()
    name, files = sample_copy("squares", container={"on_demand": True})
    folder = package_folder(files, tmp_path / "pkg")
    assert grok("config", "add", "--alias", "stack", "--server", stack.api, "--key", "admin",
                "--default").returncode == 0
    done = grok("publish", "stack", "--release", cwd=folder)
    assert done.returncode == 0 and "Published" in done.stdout, done.stdout + done.stderr
    short = name.split("/")[1]

    def ready():
        images = requests.get(f"{stack.api}/docker/images", params={"text": short},
                              headers={"Authorization": token}).json()
        if images and images[0]["status"] in ("ready", "error"):
            assert images[0]["status"] == "ready", images[0]["logs"]
            return requests.get(f"{stack.api}/docker/containers", params={"text": short},
                                headers={"Authorization": token}).json()[0]
        return None

    c = wait_until(ready, 240, "image validated by the stack's grokemu")
    js = js_runner(stack.api, token)
    seen = js(f"""
        const r = await grok.dapi.docker.dockerContainers.fetchProxy('{c["id"]}', '/square?number=5',
                                                                     {{headers: {{Authorization: token}}}});
        return {{status: r.status, body: await r.text()}};
    """)
    assert seen["status"] == 200 and json.loads(seen["body"]) == {"result": 25}
    [service] = plugin_services(stack.name)
    spec = service["Spec"]
    assert spec["TaskTemplate"]["Networks"][0]["Target"] in (stack.network, _network_id(stack.network))
    assert not (spec.get("EndpointSpec") or {}).get("Ports")  # plugin services are published nowhere
    fresh = requests.get(f"{stack.api}/docker/containers/{c['id']}", headers={"Authorization": token}).json()
    assert fresh["address"] == spec["Name"]  # reached by service name on the overlay


def test_web_socket_proxy_through_the_stack(stack):
    token = stack.login()
    from tests.helpers import publish_ready

    c = publish_ready(stack.api, token, *sample_copy("ws-echo"))
    js = js_runner(stack.api, token)
    seen = js(f"""
        const socket = await grok.dapi.docker.dockerContainers.webSocketProxy('{c["id"]}', '/ws', 120000);
        const reply = nextMessage(socket);
        socket.send('through the stack');
        const echoed = await reply;
        socket.close();
        return {{echoed}};
    """)
    assert seen["echoed"] == "through the stack"


def _network_id(name: str) -> str:
    return subprocess.run(["docker", "network", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def test_a_queue_function_through_the_stacks_broker_service(stack):
    """The stack's `rabbitmq` service carries the call: the worker runs as a Swarm service on the plugins network."""
    from grokemu.testing import Grokemu
    from tests.helpers import publish_queue_worker

    token = stack.login()
    worker = publish_queue_worker(stack.api, token)
    assert Grokemu(stack.url).call(worker["namespace_"] + "add", a=20, b=22) == 42
    [service] = [s for s in plugin_services(stack.name) if s["Spec"]["Labels"].get("grokemu.container") == worker["id"]]
    env = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "DATAGROK_AMPQ_HOST=rabbitmq" in env
