"""Issue: Spawner. grokemu up (subprocess) runs the squares sample on the real Docker daemon."""
from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.helpers import package_zip

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "squares"


def sample_files(name: str, container: dict | None = None, extra: dict | None = None) -> dict:
    files = {p.relative_to(SAMPLE).as_posix(): p.read_bytes() for p in SAMPLE.rglob("*") if p.is_file()}
    meta = json.loads(files["package.json"])
    meta["name"] = name
    files["package.json"] = json.dumps(meta).encode()
    if container is not None:
        files["dockerfiles/squares/container.json"] = json.dumps(container).encode()
    files.update(extra or {})
    return files


class Api:
    def __init__(self, server):
        self.server = server
        self.token = server.login()
        self.h = {"Authorization": self.token}

    def publish(self, name, files):
        r = requests.post(f"{self.server.api}/packages/dev/{name}?debug=false&rebuild=false&dropDb=false",
                          data=package_zip(files), headers={"Authorization": "Dev admin"})
        assert r.status_code == 200, r.text
        return r.json()

    def container(self, text):
        found = requests.get(f"{self.server.api}/docker/containers", params={"text": text}, headers=self.h).json()
        assert len(found) == 1, found
        return found[0]

    def get(self, cid):
        return requests.get(f"{self.server.api}/docker/containers/{cid}", headers=self.h).json()

    def wait(self, cid, statuses, timeout=120):
        deadline = time.time() + timeout
        while True:
            c = self.get(cid)
            if c["status"] in statuses:
                return c
            assert time.time() < deadline, f"still {c['status']} after {timeout}s: {c}"
            time.sleep(0.1)

    def wait_image_ready(self, text, timeout=180):
        deadline = time.time() + timeout
        while True:
            [img] = requests.get(f"{self.server.api}/docker/images", params={"text": text}, headers=self.h).json()
            if img["status"] in ("ready", "error"):
                assert img["status"] == "ready", img["logs"]
                return img
            assert time.time() < deadline
            time.sleep(0.2)

    def run(self, cid, await_start):
        return requests.get(f"{self.server.api}/docker/containers/{cid}/run",
                            params={"awaitStart": str(await_start).lower()}, headers=self.h, timeout=180)

    def stop(self, cid, await_stop):
        return requests.get(f"{self.server.api}/docker/containers/{cid}/stop",
                            params={"awaitStop": str(await_stop).lower()}, headers=self.h, timeout=180)


def inspect(docker_id):
    out = subprocess.run(["docker", "inspect", docker_id], capture_output=True, text=True)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


def labelled(instance):
    out = subprocess.run(["docker", "ps", "-a", "-q", "--filter", f"label=grokemu.instance={instance}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture
def api(grokemu_server, base_image):
    return Api(grokemu_server)


def unique(prefix="sq"):
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def test_run_stop_limits_env_and_callback(api, grokemu_server):
    name = unique()
    api.publish(f"@grokemu/{name}", sample_files(f"@grokemu/{name}", {
        "cpu": 0.5, "memory": 256, "shm_size": 128, "on_demand": True, "env": {"GREETING": "hi"},
        "timeout_minutes": 30}))
    api.wait_image_ready(name)
    c = api.container(name)
    assert c["status"] == "stopped by user"  # on_demand: not started by itself

    r = api.run(c["id"], await_start=False)
    assert r.status_code == 200 and r.json()["status"] in ("pending start", "starting", "checking", "started")
    c = api.wait(c["id"], {"started", "error"})
    assert c["status"] == "started", c
    assert c["address"] == "127.0.0.1" and c["port"]
    assert any("timeout_minutes" in w for w in c["warnings"])

    assert c["serviceName"] == f"grokemu-{grokemu_server.instance}-{c['name']}"
    info = inspect(c["serviceName"])
    host = info["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 1024 * 1024
    assert host["ShmSize"] == 128 * 1024 * 1024
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["GREETING"] == "hi" and env["DATAGROK_API_URL"].endswith(f":{grokemu_server.port}/api")
    assert env["USER_API_KEY"]
    bindings = host["PortBindings"]["5353/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]  # loopback only
    assert info["Config"]["Labels"]["grokemu.container"] == c["id"]

    assert requests.get(f"http://127.0.0.1:{c['port']}/health").json() == {"result": "Healthy"}
    # The container reaches grokemu's API with the token it was given (host.docker.internal → bridge gateway).
    back = requests.get(f"http://127.0.0.1:{c['port']}/datagrok", timeout=10).json()
    assert back["status"] == 200 and back["user"]["login"] == "admin", back

    r = api.stop(c["id"], await_stop=True)
    assert r.status_code == 200 and r.json()["status"] == "stopped by user"
    assert inspect(info["Id"]) is None  # removed from Docker
    logs = requests.get(f"{grokemu_server.api}/docker/containers/{c['id']}/logs", params={"limit": 50},
                        headers=api.h)
    assert logs.status_code == 200 and "squares listening on 5353" in logs.text

    r = api.run(c["id"], await_start=True)
    assert r.status_code == 200 and r.json()["status"] == "started"
    r = api.stop(c["id"], await_stop=False)
    assert r.status_code == 200
    assert api.wait(c["id"], {"stopped by user"})["status"] == "stopped by user"


def test_not_on_demand_starts_when_ready_and_save_entity_stops_it(api):
    name = unique()
    api.publish(f"@grokemu/{name}", sample_files(f"@grokemu/{name}", {"memory": 128}))
    api.wait_image_ready(name)
    c = api.wait(api.container(name)["id"], {"started", "error"})
    assert c["status"] == "started"
    saved = requests.post(f"{api.server.api}/docker/containers", json={**c, "desiredInstances": 0}, headers=api.h)
    assert saved.status_code == 200
    assert api.wait(c["id"], {"stopped by user"})["desiredInstances"] == 0
    saved = requests.post(f"{api.server.api}/docker/containers", json={"id": c["id"], "desiredInstances": 1},
                          headers=api.h)
    assert saved.status_code == 200
    assert api.wait(c["id"], {"started", "error"})["status"] == "started"


def test_env_entities_and_cross_package_credentials_refused(api):
    owner = unique("owner")
    conn = {"name": "shared", "dataSource": "Postgres", "parameters": {"server": "db", "db": "x"},
            "credentials": {"parameters": {"login": "u", "password": "secret"}}}
    api.publish(f"@grokemu/{owner}", sample_files(f"@grokemu/{owner}", {"on_demand": True, "env": {
        "DB": "#{x.shared}"}}, {"connections/shared.json": json.dumps(conn).encode()}))
    api.wait_image_ready(owner)
    c = api.container(owner)
    assert api.run(c["id"], await_start=True).status_code == 200
    c = api.get(c["id"])
    db = requests.get(f"http://127.0.0.1:{c['port']}/env/DB").json()["value"]
    assert json.loads(db)["credentials"]["parameters"]["password"] == "secret"  # same package: rendered

    thief = unique("thief")
    api.publish(f"@grokemu/{thief}", sample_files(f"@grokemu/{thief}", {"on_demand": True, "env": {
        "DB": f"#{{x.{owner}:shared}}"}}))
    api.wait_image_ready(thief)
    t = api.container(thief)
    r = api.run(t["id"], await_start=True)
    assert r.status_code == 500 and r.json()["#type"] == "ApiError"
    t = api.get(t["id"])
    assert t["status"] == "error" and f"@grokemu/{owner}:shared" in t["errorMessage"]
    assert "credentials" in t["errorMessage"]


def test_crash_becomes_error_with_logs(api, grokemu_server):
    name = unique()
    api.publish(f"@grokemu/{name}", sample_files(f"@grokemu/{name}", {"on_demand": True}))
    api.wait_image_ready(name)
    c = api.container(name)
    c = api.run(c["id"], await_start=True).json()
    try:
        requests.get(f"http://127.0.0.1:{c['port']}/exit?code=3", timeout=5)
    except requests.RequestException:
        pass
    c = api.wait(c["id"], {"error"}, timeout=30)
    assert "code 3" in c["errorMessage"] and "exiting with code 3" in c["lastLogs"]
    assert labelled(grokemu_server.instance) == []  # the crashed container was removed, logs kept
    stop = api.stop(c["id"], await_stop=False)
    assert stop.status_code == 400  # as Datagrok's DockerRouter.stop for `error`
    logs = requests.get(f"{grokemu_server.api}/docker/containers/nope/logs", headers=api.h)
    assert logs.status_code == 400 and logs.json()["#type"] == "ApiError"


def test_sigkill_and_restart_readopts_the_same_container(api, grokemu_server, tmp_path_factory):
    name = unique()
    api.publish(f"@grokemu/{name}", sample_files(f"@grokemu/{name}", {"on_demand": True}))
    api.wait_image_ready(name)
    c = api.run(api.container(name)["id"], await_start=True).json()
    before = labelled(grokemu_server.instance)
    assert len(before) == 1

    grokemu_server.stop(sig=signal.SIGKILL)
    assert requests.get(f"http://127.0.0.1:{c['port']}/health").status_code == 200  # the container lives on

    again = GrokemuProcess(grokemu_server.data_dir, instance=grokemu_server.instance)
    again.start()
    try:
        api2 = Api(again)
        c2 = api2.wait(c["id"], {"started", "checking", "error", "stopped by system"}, timeout=30)
        assert c2["status"] == "started", c2
        assert c2["port"] == c["port"]
        assert requests.get(f"http://127.0.0.1:{c2['port']}/health").json() == {"result": "Healthy"}
        assert labelled(grokemu_server.instance) == before  # the same container: no duplicate, no orphan
    finally:
        again.reset()
        again.stop()
    assert labelled(grokemu_server.instance) == []


def test_republish_replaces_the_running_container(api, grokemu_server):
    name = unique()
    files = sample_files(f"@grokemu/{name}", {"on_demand": True})
    api.publish(f"@grokemu/{name}", files)
    first = api.wait_image_ready(name)
    c = api.run(api.container(name)["id"], await_start=True).json()
    old = inspect(c["serviceName"])["Id"]

    app = files["dockerfiles/squares/app.py"]
    files["dockerfiles/squares/app.py"] = app + b"\n# version 2\n"
    api.publish(f"@grokemu/{name}", files)
    second = api.wait_image_ready(name)
    assert second["id"] == first["id"]

    def replaced():
        now = api.get(c["id"])
        info = inspect(now["serviceName"]) if now["status"] == "started" else None
        return info and info["Id"] != old

    deadline = time.time() + 120
    while not replaced():
        assert time.time() < deadline, api.get(c["id"])
        time.sleep(0.2)
    assert inspect(old) is None and len(labelled(grokemu_server.instance)) == 1
    c = api.get(c["id"])
    assert requests.get(f"http://127.0.0.1:{c['port']}/health").status_code == 200
    deleted = requests.delete(f"{grokemu_server.api}/docker/containers/{c['id']}", headers=api.h)
    assert deleted.status_code == 200 and labelled(grokemu_server.instance) == []
    assert requests.get(f"{grokemu_server.api}/docker/containers/{c['id']}", headers=api.h).status_code == 404
