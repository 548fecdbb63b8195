"""The Docker adapter when the daemon is gone or hangs (docs/faults.md §4), with no daemon at all: a socket path with
nothing behind it, and a socket that accepts and never answers (a daemon stuck on its way down). Every call is
DockerUnavailable (503 for the caller), never the SDK's own error (a 500) and never a hang; ping is False."""
from __future__ import annotations

import socket
import threading
import time

import docker
import pytest

from grokemu.adapters.docker_orchestrator import DockerOrchestrator, daemon_gone
from grokemu.adapters.swarm_orchestrator import SwarmOrchestrator
from grokemu.domain.errors import DockerUnavailable


@pytest.fixture
def silent_socket(tmp_path):
    """A unix socket that accepts connections and reads, but never answers."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


CALLS = [
    ("inspect", lambda o: o.inspect("abc")),
    ("list_labelled", lambda o: o.list_labelled({"grokemu.managed": "true"})),
    ("remove", lambda o: o.remove("abc")),
    ("logs", lambda o: o.logs("abc", 10)),
    ("stop", lambda o: o.stop("abc", timeout=1)),
    ("inspect_image", lambda o: o.inspect_image("python:3.12-slim")),
    ("remove_networks", lambda o: o.remove_networks({"grokemu.managed": "true"})),
]


@pytest.mark.parametrize("kind", [DockerOrchestrator, SwarmOrchestrator])
@pytest.mark.parametrize("name,call", CALLS, ids=[c[0] for c in CALLS])
def test_a_missing_socket_is_docker_unavailable(tmp_path, kind, name, call):
    orch = kind(base_url=f"unix://{tmp_path}/nothing.sock")
    assert orch.ping() is False
    with pytest.raises(DockerUnavailable) as e:
        call(orch)
    assert e.value.status == 503 and e.value.message.startswith("Docker unreachable"), (name, e.value.message)


def test_a_daemon_gone_after_connecting_is_docker_unavailable_and_reconnects(tmp_path):
    # connected while it answered (a cached client, as after any call), then the socket goes: the SDK raises
    # requests' ConnectionError, which must not reach the caller as it is
    orch = DockerOrchestrator(base_url=f"unix://{tmp_path}/gone.sock", call_timeout=1)
    orch._client = docker.DockerClient(base_url=f"unix://{tmp_path}/gone.sock", version="1.41", timeout=1)
    with pytest.raises(DockerUnavailable) as e:
        orch.inspect("abc")
    assert "No such file or directory" in e.value.message
    assert orch._client is None  # forgotten: the next call connects again


def test_a_daemon_that_never_answers_is_unavailable_within_the_bounds(silent_socket, monkeypatch):
    from grokemu.adapters.docker_orchestrator import daemon

    monkeypatch.setattr(daemon, "PING_TIMEOUT", 0.5)  # read where the connection is made
    orch = DockerOrchestrator(base_url=silent_socket, call_timeout=1)
    began = time.monotonic()
    assert orch.ping() is False  # the version request of the first connection times out
    with pytest.raises(DockerUnavailable) as e:
        orch.inspect("abc")
    took = time.monotonic() - began
    assert "timed out" in e.value.message.lower(), e.value.message
    # two bounded waits under a second each, with room for a slow machine; unbounded, this is the SDK's 60 s default
    assert took < 30, f"{took:.1f} s"


@pytest.fixture
def tiny_daemon(tmp_path):
    """A unix socket that answers the two requests a new connection and a ping make: /version and /_ping."""
    from http.server import BaseHTTPRequestHandler
    from socketserver import ThreadingUnixStreamServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b'{"ApiVersion": "1.41", "Version": "20.10"}' if self.path.endswith("/version") else b"OK"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self):
            return "unix"

        def log_message(self, *args):
            pass

    path = tmp_path / "tiny.sock"
    server = ThreadingUnixStreamServer(str(path), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"unix://{path}"
    server.shutdown()
    server.server_close()


def test_calls_get_the_call_timeout_and_the_slow_client_the_long_one(tiny_daemon):
    orch = DockerOrchestrator(base_url=tiny_daemon, timeout=120, call_timeout=7)
    assert orch.ping() is True
    assert orch.client.api.timeout == 7  # inspect, list, logs, remove: bounded
    assert orch.slow_client.api.timeout == 120  # builds, pulls, runs, stops
    assert orch.slow_client.api.api_version == "1.41"  # the quick client's, not asked again


def test_what_counts_as_the_daemon_gone():
    from docker.errors import APIError
    from requests.exceptions import ConnectionError, ReadTimeout

    class Answer:
        def __init__(self, code):
            self.status_code = code
            self.reason = "x"
            self.url = "http+docker://localhost/x"

    assert daemon_gone(ConnectionError("refused")) and daemon_gone(ReadTimeout("slow"))
    containerd = "failed to create shim task: connection error: desc = \"transport: Error while dialing dial unix " \
                 "/run/containerd/containerd.sock: connect: connection refused\""
    assert daemon_gone(APIError("500", Answer(500), explanation=containerd))
    assert not daemon_gone(APIError("404", Answer(404), explanation="No such container: abc"))
    assert not daemon_gone(APIError("409", Answer(409), explanation="Conflict. The container name is in use"))
    assert not daemon_gone(APIError("500", Answer(500), explanation="driver failed programming external "
                                                                    "connectivity: port is already allocated"))
    assert not daemon_gone(ValueError("x"))
