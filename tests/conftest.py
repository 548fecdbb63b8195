from __future__ import annotations

import dataclasses
import subprocess
import threading

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.app import create_app
from grokemu.config import Settings
from grokemu.domain.clock import ManualClock
from grokemu.bootstrap import create_server
from grokemu.server import bind
from grokemu.web import proxy
from grokemu.web.context import app_context
from tests.helpers import Live, docker_available, load_ws_echo, require, swarm_state


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def orchestrator():
    return MemoryOrchestrator()


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", port=8080, dev_keys={"admin": "admin", "k2": "alice"},
                    container_status_timeout=300)


@pytest.fixture
def app(settings, orchestrator, clock):
    return create_app(settings, orchestrator=orchestrator, clock=clock, background=False)


@pytest.fixture
def ctx(app):
    return app_context(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(client):
    resp = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"})
    assert resp.status_code == 200
    return resp.get_json()["token"]



@pytest.fixture
def live(tmp_path, settings, clock):
    """The real server (waitress + the takeover) on a free port, its containers published on the ws-echo sample's
    app run in-process (Live.ws_echo_port)."""
    orch = MemoryOrchestrator()
    echo = load_ws_echo()
    echo_server = echo.Server(("127.0.0.1", 0), echo.Handler)
    echo.Handler.log_message = lambda *a: None
    threading.Thread(target=echo_server.serve_forever, args=(0.05,), daemon=True).start()
    orch.fixed_host_port = echo_server.server_address[1]
    app = create_app(dataclasses.replace(settings, threads=2, proxy_request_timeout=5.0), orchestrator=orch,
                     clock=clock, background=True)
    sockets = bind("127.0.0.1", 0, [])
    server = create_server(app, sockets, threads=2, max_request_body_size=2**31,
                           streamed_prefixes=(proxy.HTTP_PREFIX,))
    threading.Thread(target=server.run, daemon=True).start()
    yield Live(app, f"127.0.0.1:{sockets[0].getsockname()[1]}", echo_server.server_address[1], server.application)
    server.close()
    echo_server.shutdown()
    echo_server.server_close()


# the Docker daemon and the samples' base image, for the e2e and security suites
@pytest.fixture(scope="session")
def docker_ready():
    require(docker_available(), "a Docker daemon")


@pytest.fixture(scope="session")
def base_image(docker_ready):
    """Samples build FROM python:3.12-slim; offline machines get a stand-in (scripts/ensure-base-image.sh)."""
    found = subprocess.run(["docker", "image", "inspect", "python:3.12-slim"], capture_output=True).returncode == 0
    require(found, "the python:3.12-slim image (run scripts/ensure-base-image.sh)")


# a session fixture: a single-node swarm (docs/swarm.md)
@pytest.fixture(scope="session")
def swarm():
    """A single-node swarm on loopback: initialised when the daemon is in none, and left afterwards only then."""
    require(docker_available(), "a Docker daemon")
    created = False
    state = swarm_state()
    if state.startswith("inactive"):
        init = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True,
                              text=True, timeout=60)
        require(init.returncode == 0, f"a swarm manager (docker swarm init failed: {init.stderr.strip()})")
        created = True
    else:
        require(state == "active true", f"a swarm manager (this daemon is {state!r})")
    yield
    if created:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60)
