"""An example test of a plugin's container with grokemu's test kit (the `grokemu` fixture of the pytest plugin that
`pip install grokemu` registers). Copy it next to your package:

    pytest tests/                                   # starts grokemu for the session (Docker needed)
    GROKEMU_URL=http://localhost:8080 pytest tests/ # or uses one already running, e.g. the compose stand

CI runs this file (`make test`, `make example`).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]  # samples/squares: package.json, dockerfiles/squares/


@pytest.fixture(scope="session", autouse=True)  # session: checked before the session-scoped `grokemu` starts
def needs_docker():
    """Containers need a Docker daemon and the package's base image; skip without them (fail in grokemu's CI)."""
    missing = None
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        missing = "a Docker daemon"
    elif subprocess.run(["docker", "image", "inspect", "python:3.12-slim"], capture_output=True).returncode:
        missing = "the python:3.12-slim image"
    if missing and os.environ.get("GROKEMU_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{missing} is required (GROKEMU_REQUIRE_DOCKER=1) but missing")
    if missing:
        pytest.skip(f"{missing} not available")


def test_square_through_fetch_proxy(grokemu):
    grokemu.publish(PACKAGE)  # as `grok publish` does; waits until the image is ready (fails with the build log)
    squares = grokemu.container("squares")
    squares.start()

    answer = squares.fetch("/square?number=4")
    assert answer.status_code == 200
    assert answer.json() == {"result": 16.0}

    echoed = squares.fetch("/echo", method="POST", json={"hello": "grokemu"})
    assert echoed.json() == {"hello": "grokemu"}

    assert squares.fetch("/status/418").status_code == 418  # the container's answer comes back as it is
    # what the request inspector recorded, newest first: what this code sent, credentials redacted
    teapot, posted = grokemu.requests(squares)[:2]
    assert (teapot["method"], teapot["path"], teapot["status"]) == ("GET", "/status/418", 418)
    assert posted["method"] == "POST" and json.loads(posted["requestBody"]) == {"hello": "grokemu"}
    assert dict(posted["requestHeaders"])["Authorization"] == "[redacted]"
    assert "GET /square?number=4" in squares.logs()

    squares.stop()
    assert squares.status == "stopped by user"


def test_on_demand_start_on_first_request(grokemu):
    """squares is `on_demand`: a stopped container starts on the first proxied request."""
    grokemu.publish(PACKAGE)
    squares = grokemu.container("squares")
    if squares.status != "stopped by user":
        squares.stop()
    assert squares.fetch("/health").json() == {"result": "Healthy"}
    assert squares.status == "started"


def test_websocket_through_web_socket_proxy(grokemu):
    """samples/ws-echo echoes WebSocket messages; the kit opens them through webSocketProxy."""
    grokemu.publish(PACKAGE.parent / "ws-echo")
    echo = grokemu.container("ws-echo").start()
    with echo.websocket("/ws") as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
