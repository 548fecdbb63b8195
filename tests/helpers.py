"""Shared test helpers: package ZIPs as the grok CLI builds them, and the Docker requirement."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import websocket

from grokemu.web.context import app_context
from tests.fake_upstream import Upstream, add_container, proxy_url

REQUIRE_DOCKER = os.environ.get("GROKEMU_REQUIRE_DOCKER") == "1"


def package_zip(files: dict[str, bytes | str], duplicates: dict[str, bytes | str] | None = None) -> bytes:
    """A raw ZIP like `grok publish` sends (deflate; duplicate entry names allowed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about duplicate names; the CLI really sends them
            for name, data in (duplicates or {}).items():
                z.writestr(name, data)
    return buf.getvalue()


def hello_package(name: str = "@acme/grokprobe", version: str = "1.0.0", *, dockerfile: str | None = None,
                  container: dict | str | None = None, image_json: dict | None = None,
                  folder: str = "hello") -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {
        "package.json": json.dumps({"name": name, "version": version, "description": "probe"}),
        "package.js": "//name: probeInfo\nexport function probeInfo() { return 'ok'; }\n",
        f"dockerfiles/{folder}/Dockerfile": dockerfile or "FROM scratch\nCOPY hello.txt /hello.txt\nEXPOSE 8000\n",
        f"dockerfiles/{folder}/hello.txt": "hello\n",
    }
    if container is not None:
        files[f"dockerfiles/{folder}/container.json"] = container if isinstance(container, str) else json.dumps(container)
    if image_json is not None:
        files[f"dockerfiles/{folder}/image.json"] = json.dumps(image_json)
    return files


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def require(condition: bool, what: str) -> None:
    """Skip when something a test needs is missing, but fail in CI (GROKEMU_REQUIRE_DOCKER=1): docker and e2e
    tests must never silently skip there."""
    if condition:
        return
    if REQUIRE_DOCKER:
        pytest.fail(f"{what} is required (GROKEMU_REQUIRE_DOCKER=1) but missing")
    pytest.skip(f"{what} not available")


# -- against a running grokemu (e2e, security, benchmarks) ---------------------------------------------------------
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """Call `check` until it returns something truthy (returned) or `timeout` seconds pass (AssertionError naming
    `what` and the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g} s (last seen: {value!r})")
        time.sleep(interval)


def sample_copy(sample: str, *, container: dict | None = None, edit=None) -> tuple[str, dict[str, bytes]]:
    """(package name, files) of samples/<sample> under a unique package name; `container` entries are merged into its
    container.json; `edit(files)` may change files further."""
    root = SAMPLES / sample
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    meta = json.loads(files["package.json"])
    meta["name"] = f"@grokemu/{sample.replace('-', '')}{uuid.uuid4().hex[:6]}"
    files["package.json"] = json.dumps(meta).encode()
    if container:
        [path] = [k for k in files if k.endswith("container.json")]
        files[path] = json.dumps({**json.loads(files[path]), **container}).encode()
    if edit:
        edit(files)
    return meta["name"], files


def entities(api: str, token: str, kind: str, text: str) -> list[dict]:
    """GET /docker/<kind> filtered by `text` (kind: images | containers)."""
    r = requests.get(f"{api}/docker/{kind}", params={"text": text}, headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def publish_ready(api: str, token: str, name: str, files: dict, *, debug: bool = True, timeout: float = 180) -> dict:
    """Upload a package as `grok publish` does, wait until its one image is validated, and return its container
    (AssertionError with the build log if the image ends in error)."""
    r = requests.post(f"{api}/packages/dev/{name}?debug={'true' if debug else 'false'}", data=package_zip(files),
                      headers={"Authorization": "Dev admin"}, timeout=60)
    assert r.status_code == 200, r.text
    short = name.split("/")[-1]
    [image] = wait_until(lambda: [i for i in entities(api, token, "images", short)
                                  if i["status"] in ("ready", "error")], timeout, f"image of {name} validated")
    assert image["status"] == "ready", image.get("logs")
    [container] = entities(api, token, "containers", short)
    return container


def swarm_state() -> str:
    out = subprocess.run(["docker", "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def free_port() -> int:
    """A loopback port nothing listens on right now (for a server whose address must be known before it starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2) -> bool:
    """Does the grokemu at `url` answer its public health check?"""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/_grokemu/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def package_folder(files: dict, folder: Path) -> Path:
    """Write a package's files as the grok CLI expects a package folder (with the `.npmignore` it insists on)."""
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data if isinstance(data, bytes) else data.encode())
    (folder / ".npmignore").write_text("")
    return folder


def remove_images(*shorts: str) -> None:
    """Remove every local image whose reference contains one of `shorts` (the unique names tests publish under)."""
    refs = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                          text=True).stdout.split()
    for ref in refs:
        if any(short in ref for short in shorts):
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def publish_queue_worker(api: str, token: str, timeout: float = 600) -> dict:
    """samples/queue's hand-written worker under a unique name (its python/ folder left out: only the grok CLI turns
    that into a worker), validated; its container with `namespace_`, the prefix callers write (`QueueDemoAb12cd:`)."""
    suffix = uuid.uuid4().hex[:6]

    def edit(files):
        for path in [p for p in files if p.startswith("python/")]:
            del files[path]
        meta = json.loads(files["package.json"])
        meta["friendlyName"] = f"Queue Demo {suffix}"
        files["package.json"] = json.dumps(meta).encode()

    c = publish_ready(api, token, *sample_copy("queue", edit=edit), timeout=timeout)
    funcs = requests.get(f"{api}/docker/functions", headers={"Authorization": token}, timeout=30).json()
    c["namespace_"] = next(f["namespace"] for f in funcs if f["container"]["id"] == c["id"])
    return c


# -- the real clients (tests/e2e/js, .tools/) ------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(os.environ.get("GROKEMU_TOOLS", ROOT / ".tools"))
JS_CLIENT = ROOT / "tests" / "e2e" / "js" / "proxy-client.mjs"


def js_runner(api: str, token: str):
    """run(body) -> the JSON the body returns: Datagrok's real JS client (datagrok-api in Node,
    tests/e2e/js/proxy-client.mjs) logged in with `token` against `api`; `grok` and `token` are in scope."""
    require(shutil.which("node") is not None and (TOOLS / "node_modules" / "datagrok-api").exists()
            and (TOOLS / "node_modules" / "ws").exists(),
            "node with datagrok-api 1.27.9 and ws in .tools (run scripts/ensure-clients.sh)")

    def run(body: str, timeout: float = 180):
        done = subprocess.run(["node", str(JS_CLIENT), api, token, body], capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"node failed:\n{done.stderr}\n{done.stdout}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


# -- the real server on a free port (the `live` fixture in tests/conftest.py) and raw HTTP/1.1 on one socket -------
WS_ECHO_APP = SAMPLES / "ws-echo" / "dockerfiles" / "ws-echo" / "app.py"
# the two requests `relayed` sends first: the cold start and one more, both served by the blocking relay
WARM_UP = ["/first", "/warm"]


def load_ws_echo():
    """The ws-echo sample's app as a module, to run in-process."""
    spec = importlib.util.spec_from_file_location("ws_echo_sample", WS_ECHO_APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Live:
    """A real server (waitress + the takeover) on `host`, with a dev session's token and WebSockets to containers."""

    def __init__(self, app, host, ws_echo_port, takeover=None):
        self.app = app
        self.ctx = app_context(app)
        self.takeover = takeover  # the server's ConnectionTakeover (its stream pool and relay loop)
        self.host = host
        self.ws_echo_port = ws_echo_port
        self.token = requests.post(f"http://{host}/api/users/login/dev", headers={"Authorization": "Dev admin"},
                                   timeout=5).json()["token"]

    def ws(self, cid, path="/ws", token=None, **kw):
        cookie = f"auth={token or self.token}" if token is not False else None
        return websocket.create_connection(f"ws://{self.host}/api/docker/containers/proxy-ws/{cid}{path}",
                                           cookie=cookie, timeout=10, **kw)


def connect_raw(live) -> socket.socket:
    """A raw TCP connection to the `live` server (Nagle off)."""
    host, port = live.host.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def raw_request(live, path: str, token: str | None, method: str = "GET", extra: str = "") -> bytes:
    """The bytes of one body-less HTTP/1.1 request to `live`, with `token` (if any) and `extra` header lines."""
    auth = f"Authorization: {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: {live.host}\r\n{auth}{extra}\r\n".encode()


class RawReader:
    """Answers with a Content-Length or chunked, read one after the other from one socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def answer(self) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                while len(self.buf) < size + 2:
                    self._fill()
                body, self.buf = body + self.buf[:size], self.buf[size + 2:]
            self._line()
        else:
            body = b""
        return status, headers, body


def fast_containers(live, n: int = 2):
    """(an Upstream, ids of `n` on_demand containers the in-memory orchestrator publishes on its port)."""
    up = Upstream()
    live.ctx.orchestrator.fixed_host_port = up.port
    return up, [add_container(live.ctx, {"on_demand": True}, name=f"fast-{i}") for i in range(n)]


class RawAnswers(RawReader):
    """RawReader, plus every header line in order, body-less answers (HEAD) and a chunked body's bytes as sent."""

    def read(self, body: bool = True) -> SimpleNamespace:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        pairs = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        headers = dict(pairs)
        data = raw = b""
        if not body:
            pass
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                self._fill()
            data, self.buf = self.buf[:length], self.buf[length:]
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                line = self._line()
                raw += line + b"\r\n"
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    break
                while len(self.buf) < size + 2:
                    self._fill()
                data += self.buf[:size]
                raw, self.buf = raw + self.buf[:size + 2], self.buf[size + 2:]
            while line := self._line():  # the trailers, up to the empty line
                raw += line + b"\r\n"
            raw += b"\r\n"
        return SimpleNamespace(status=int(lines[0].split()[1]), line=lines[0], pairs=pairs, headers=headers,
                               body=data, raw=raw)


def relayed(server, cid: str) -> tuple[socket.socket, RawAnswers]:
    """A connection in the relay loop, its container known started: `/first` (the cold start, which takes the
    connection from waitress) and `/warm` (the container's status changed during the cold start, so ProxyService
    looks it up once more) answered by the blocking relay; the loop forwards the requests after them itself."""
    sock = connect_raw(server)
    answers = RawAnswers(sock)
    for path in WARM_UP:
        sock.sendall(raw_request(server, proxy_url(cid, path), server.token))
        got = answers.read()
        assert got.status == 200 and json.loads(got.body) == {"path": path}
    return sock, answers


def ctrl_c_default() -> None:
    """preexec_fn for a CLI a test stops with SIGINT (Ctrl-C). Python turns SIGINT into KeyboardInterrupt only when
    SIGINT is not ignored at its start, and a test run launched in the background (nohup, `cmd &` in a script)
    ignores it, which every child inherits: the CLI under test would never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
