"""A plugin container's stand-in for proxy tests: a loopback HTTP server that records what reached it and answers as
the samples do, plus the entities publishing would leave behind for it (the in-memory orchestrator answers on the
server's port)."""
from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grokemu.domain.container_config import parse_container_json
from grokemu.domain.lifecycle import ImageStatus
from grokemu.domain.model import DockerContainer, DockerImage

# what `/chunked` writes after its head, piece by piece: three chunks and a trailer
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Type: text/plain\r\n\r\nsmuggled"
CHUNKED_PIECES = (b"5\r\nhello\r\n", b"1\r\n \r\n", b"5\r\nworld\r\n", b"0\r\nX-Trailer: t\r\n\r\n")
# what `/until-close` writes after its head (no Content-Length, no chunks: the body ends with the connection)
UNTIL_CLOSE_PIECES = (b"first|", b"second|", b"z" * 100_000, b"|last")


class Upstream:
    """A loopback HTTP server that records what reached it and answers like a plugin container would."""

    def __init__(self):
        self.seen: list[dict] = []
        self.gate = threading.Event()
        self.connections: list[socket.socket] = []  # accepted ones, for kill()
        self.ended: list[int] = []  # the caller's ports of connections that ended (the caller closed or shut down)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                upstream.connections.append(self.connection)

            def finish(self):
                super().finish()
                upstream.ended.append(self.client_address[1])

            def _body(self) -> bytes:
                if self.headers.get("Content-Length") is not None:
                    return self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return b""

            def _answer(self, status, body=b"", headers=(), length=True):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if length and status not in (204, 304):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                body = self._body()
                upstream.seen.append({"method": self.command, "path": self.path, "headers": self.headers.items(),
                                      "body": body, "client_port": self.client_address[1]})
                path = self.path.split("?")[0]
                parts = path.strip("/").split("/")
                if path == "/echo":
                    return self._answer(200, body, [("Content-Type", self.headers.get("Content-Type", "x/none")),
                                                    ("X-Method", self.command)])
                if parts[0] == "status":
                    return self._answer(int(parts[1]), b"", [("X-Custom", "yes"), ("Set-Cookie", "a=1; Path=/"),
                                                             ("Set-Cookie", "b=2; Path=/")])
                if path == "/boom":
                    return self._answer(500, b'{"error": "boom"}', [("Content-Type", "application/json")])
                if path == "/gzip":
                    return self._answer(200, gzip.compress(b'{"compressed": true}'),
                                        [("Content-Type", "application/json"), ("Content-Encoding", "gzip")])
                if path == "/hop":
                    return self._answer(200, b"ok", [("Connection", "X-Secret"), ("X-Secret", "1"),
                                                     ("Keep-Alive", "timeout=5"), ("X-Kept", "1")])
                if path == "/redirect":
                    return self._answer(302, b"", [("Location", "/elsewhere")])
                if parts[0] == "bytes":
                    return self._answer(200, b"x" * int(parts[1]), [("Content-Type", "application/octet-stream")])
                if path == "/stream":  # chunked, the second chunk only after the test opens the gate
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"5\r\nfirst\r\n")
                    upstream.gate.wait(10)
                    self.wfile.write(b"6\r\nsecond\r\n0\r\n\r\n")
                    return None
                if path == "/chunked":  # chunked, written piece by piece, with a trailer
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for piece in CHUNKED_PIECES:
                        self.wfile.write(piece)
                        time.sleep(0.01)
                    return None
                if path == "/until-close":  # HTTP/1.1 without a length: the body ends when the container closes
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for piece in UNTIL_CLOSE_PIECES:
                        self.wfile.write(piece)
                        time.sleep(0.01)
                    self.close_connection = True
                    return None
                if path == "/close-after":  # a whole answer, announced as the connection's last
                    return self._answer(200, json.dumps({"path": self.path}).encode(),
                                        [("Content-Type", "application/json"), ("Connection", "close")])
                if path == "/smuggle":  # a whole answer and, in the same write, a second one nobody asked for
                    body = json.dumps({"path": self.path}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body + SMUGGLED)
                    return None
                if path == "/drop-after":  # a whole answer, then the connection closed unannounced (an idle timeout)
                    self._answer(200, json.dumps({"path": self.path}).encode(), [("Content-Type", "application/json")])
                    self.close_connection = True
                    return None
                if parts[0] == "sleep":  # answers only after that many seconds, if the caller still waits
                    time.sleep(float(parts[1]))
                    try:
                        return self._answer(200, json.dumps({"path": self.path}).encode(),
                                            [("Content-Type", "application/json")])
                    except OSError:
                        self.close_connection = True
                        return None
                if path == "/stall":  # the head and a first chunk, then nothing until the gate opens
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"5\r\nfirst\r\n")
                    upstream.gate.wait(10)
                    try:
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:
                        self.close_connection = True
                    return None
                if path == "/hangup":  # closes the connection without a byte of answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                return self._answer(200, json.dumps({"path": self.path}).encode(),
                                    [("Content-Type", "application/json")])

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_TRACE = _handle

            def __getattr__(self, name):
                # any other method gets 405, as a plugin's Flask or FastAPI app answers it (http.server's own
                # answer, 501, would read as a server fault in tests that assert grokemu's answers stay below 500)
                if name.startswith("do_"):
                    return lambda: self._answer(405, b"", [("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")])
                raise AttributeError(name)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def last(self) -> dict:
        return self.seen[-1]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.last()["headers"] if k.lower() == name.lower()), None)

    def close(self):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def kill(self):
        """As the container's end: no more connections, and the open ones (kept-alive, mid-request) drop."""
        self.close()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def upstream(orchestrator):
    up = Upstream()
    orchestrator.fixed_host_port = up.port
    yield up
    up.close()


def add_container(context, config: dict | None = None, name: str = "probe-app") -> str:
    """A container whose image is ready (what publishing + validation leave behind), initially stopped."""
    orch = context.orchestrator
    image = DockerImage(name=name, package="@grokemu/probe", docker_dir="app", version="1.0.0",
                        status=ImageStatus.READY, port=5353, image_ref=f"datagrok/{name}:1.0.0")
    image.docker_id = orch.add_image(image.image_ref, [5353])
    context.store.put_image(image)
    c = DockerContainer(name=name, package="@grokemu/probe", image_id=image.id,
                        config=parse_container_json(json.dumps(config or {})))
    context.store.put_container(c)
    return c.id


def status(context, cid: str) -> str:
    return context.store.get_container(cid).status.value


def proxy_url(cid: str, path: str = "") -> str:
    return f"/api/docker/containers/proxy/{cid}{path}"
