"""The real server: waitress on loopback with the WebSocket handoff, and `grokemu up` as a process. No Docker:
the app gets the in-memory orchestrator, and the subprocess is pointed at a Docker socket that does not exist."""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import pytest
import requests
import websocket

from grokemu.bootstrap import create_server
from grokemu.server import bind
from grokemu.web import proxy
from grokemu.testing import GrokemuProcess
from grokemu.web.context import app_context
from tests.helpers import hello_package, package_zip, wait_until


@pytest.fixture
def live(app):
    sockets = bind("127.0.0.1", 0, [])
    server = create_server(app, sockets, replace(app_context(app).settings, threads=4,
                                                 max_request_body_size=2**30),
                           streamed_prefixes=(proxy.HTTP_PREFIX,))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    host = f"127.0.0.1:{sockets[0].getsockname()[1]}"
    token = requests.post(f"http://{host}/api/users/login/dev", headers={"Authorization": "Dev admin"},
                          timeout=5).json()["token"]
    yield host, app_context(app), token
    server.close()


def test_websocket_echo_through_waitress(live):
    host, _, token = live
    ws = websocket.create_connection(f"ws://{host}/_grokemu/ws-echo", timeout=5, header=[f"Authorization: {token}"])
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send_binary(b"\x00\x01\x02")
    assert ws.recv() == b"\x00\x01\x02"
    ws.close()


def test_up_without_docker_says_so_serves_and_stops_cleanly(tmp_path):
    server = GrokemuProcess(tmp_path / "data", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    server.start()
    try:
        printed = "".join(server.output)
        assert "Docker daemon: UNREACHABLE" in printed
        assert f"grok config add --alias grokemu --server http://localhost:{server.port}/api --key admin" in printed
        assert requests.get(f"{server.url}/_grokemu/health").json()["status"] == "ok"  # public: liveness only
        health = requests.get(f"{server.url}/_grokemu/health", headers={"Authorization": server.login()}).json()
        assert health["docker"]["reachable"] is False and health["version"] and health["uptime"] >= 0
        assert health["scheduler"]["passes"] >= 0
        wait_until(lambda: requests.get(f"{server.url}/_grokemu/health", headers={"Authorization": server.login()})
                   .json()["scheduler"]["passes"] > health["scheduler"]["passes"], 60, "another background pass")
        r = requests.post(f"{server.api}/packages/dev/@acme/grokprobe?debug=true", data=package_zip(hello_package()),
                          headers={"Authorization": "Dev admin"})
        assert r.status_code == 200  # publishing works; the image waits for Docker
        token = server.login()
        [image] = requests.get(f"{server.api}/docker/images", headers={"Authorization": token}).json()
        assert image["status"] == "pending validation"
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "grokemu.yaml"
    cfg.write_text("dev_keys: {sekrit: alice}\nproxy_request_timeout: 5\n")
    server = GrokemuProcess(tmp_path / "data", "--config", str(cfg),
                            env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    server.start()
    try:
        assert "--key sekrit" in "".join(server.output)
        token = server.login("sekrit")
        assert requests.get(f"{server.api}/users/current", headers={"Authorization": token}).json()["login"] == "alice"
        r = requests.post(f"{server.api}/users/login/dev", headers={"Authorization": "Dev admin"})
        assert r.status_code == 401
    finally:
        server.stop()


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "grokemu", "up", "--port", str(port), "--data-dir",
                              str(tmp_path)], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_tls_hello_is_refused_at_once(live):
    """The Docker engine tries HTTPS first; waiting for a request line would stall every docker login/push ~10 s."""
    import socket

    host, _, _ = live
    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")  # the start of a TLS ClientHello
        started = time.monotonic()
        assert s.recv(10) == b""  # closed, not left waiting
        assert time.monotonic() - started < 2
    assert requests.get(f"http://{host}/_grokemu/health", timeout=5).status_code == 200
