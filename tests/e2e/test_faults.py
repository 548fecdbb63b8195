"""Faults a plugin author meets, on the real Docker daemon (docs/faults.md): a container over its memory limit, and
the grace between SIGTERM and SIGKILL on stop (`stop_timeout`)."""
from __future__ import annotations

import time

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.e2e.test_spawner_docker import Api, inspect, labelled, sample_files, unique

pytestmark = pytest.mark.e2e

# One small app for both faults: /alloc?mb=N allocates (and touches) N MB; SIGTERM is ignored, as an app that
# installs no handler does as PID 1.
FAULTY_APP = b'''
import signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HELD = []

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/alloc":
            mb = int(parse_qs(url.query)["mb"][0])
            print(f"allocating {mb} MB", flush=True)
            for _ in range(mb // 8):
                HELD.append(b"\\x01" * (8 * 1024 * 1024))
            print("allocated", flush=True)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("faulty app listening on 5353", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 5353), Handler).serve_forever()
'''


@pytest.fixture
def api(grokemu_server, base_image):
    return Api(grokemu_server)


def publish_faulty(api, container: dict) -> dict:
    name = unique("fault")
    api.publish(f"@grokemu/{name}", sample_files(f"@grokemu/{name}", container,
                                                 {"dockerfiles/squares/app.py": FAULTY_APP}))
    api.wait_image_ready(name)
    return api.container(name)


def test_out_of_memory_is_explained_on_the_entity_and_to_the_fetchproxy_caller(api, grokemu_server):
    c = publish_faulty(api, {"memory": 64, "on_demand": True})
    c = api.run(c["id"], await_start=True).json()
    assert c["status"] == "started", c
    proxy = f"{grokemu_server.api}/docker/containers/proxy/{c['id']}"
    assert requests.get(f"{proxy}/alloc?mb=8", headers=api.h, timeout=60).status_code == 200  # within the limit

    resp = requests.get(f"{proxy}/alloc?mb=400", headers=api.h, timeout=60)
    assert resp.status_code == 500 and resp.json()["#type"] == "ApiError", resp.text
    message = resp.json()["message"]
    assert "killed for running out of memory: its limit is 64 MB (container.json `memory`)" in message, message
    assert "allocating 400 MB" in message  # the last log lines

    c = api.wait(c["id"], {"error"}, timeout=30)
    assert c["errorMessage"].startswith("the container was killed for running out of memory: its limit is 64 MB "
                                        "(container.json `memory`)"), c["errorMessage"]
    assert "allocating 400 MB" in c["errorMessage"] and "allocating 400 MB" in c["lastLogs"]
    assert labelled(grokemu_server.instance) == []  # removed, the reason and logs kept on the entity
    # a later fetchProxy call says the same
    again = requests.get(f"{proxy}/alloc?mb=1", headers=api.h, timeout=60)
    assert again.status_code == 400 and "out of memory" in again.json()["message"]


@pytest.fixture
def quick_stop_server(tmp_path_factory, base_image):
    server = GrokemuProcess(tmp_path_factory.mktemp("grokemu"), "--stop-timeout", "1")
    server.start()
    yield server
    server.close()


def timed_stop(api, cid) -> float:
    began = time.monotonic()
    r = api.stop(cid, await_stop=True)
    took = time.monotonic() - began
    assert r.status_code == 200, r.text
    return took


def test_stop_timeout_bounds_the_stop_of_a_sigterm_ignoring_container(quick_stop_server):
    api = Api(quick_stop_server)
    c = publish_faulty(api, {"on_demand": True})
    c = api.run(c["id"], await_start=True).json()
    assert c["status"] == "started", c
    docker_id = inspect(c["serviceName"])["Id"]
    took = timed_stop(api, c["id"])
    c = api.get(c["id"])
    assert c["status"] == "stopped by user" and not c["errorMessage"], c
    assert took < 6, f"stop took {took:.1f} s with stop_timeout 1"  # Docker's default grace alone is 10 s
    assert inspect(docker_id) is None  # SIGKILLed after the grace, then removed
    print(f"stop with stop_timeout 1: {took:.2f} s")


def test_the_default_grace_is_dockers_ten_seconds(api):
    # the counterpart: the same app under the default waits the whole grace, so the bound above is the setting's
    c = publish_faulty(api, {"on_demand": True})
    c = api.run(c["id"], await_start=True).json()
    took = timed_stop(api, c["id"])
    assert api.get(c["id"])["status"] == "stopped by user"
    assert took >= 10, f"stop took {took:.1f} s: the app ignored SIGTERM, so Docker's 10 s grace should apply"
    print(f"stop with the default stop_timeout: {took:.2f} s")
