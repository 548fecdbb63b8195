"""pytest plugin (entry point `pytest11: grokemu`): the test kit for plugin authors, and a `grokemu up` subprocess.

    def test_square(grokemu):
        grokemu.publish("path/to/my-package")            # upload as `grok publish` does, wait until images are ready
        squares = grokemu.container("squares")            # by id, container, docker folder, package or image name
        squares.start()
        assert squares.fetch("/square?number=4").json() == {"result": 16.0}  # through fetchProxy
        with squares.websocket("/ws") as ws:                # through webSocketProxy (after its CONNECTED frame)
            ws.send("hi"); assert ws.recv() == "hi"
        print(squares.logs()); squares.stop()
        assert grokemu.requests(squares)[0]["kind"] == "websocket"  # the request inspector's entries, newest first
        assert grokemu.call("QueueDemo:add", a=40, b=2) == 42    # a Python function in a Celery worker

`grokemu` is session-scoped. It uses a running grokemu when given one (`--grokemu-url URL` or `GROKEMU_URL`, e.g. the
compose stand at http://localhost:8080; `--grokemu-key` / `GROKEMU_KEY` for the dev key, default admin), otherwise
it starts one on a free port with a temporary data directory and its own instance label: `grokemu up` as a
subprocess, or, with `--grokemu-in-process` (or `GROKEMU_IN_PROCESS=1`), the same app and server on a thread of the
test process (ThreadedGrokemu, moto's ThreadedMotoServer pattern), which is up in milliseconds. Teardown removes
what the session published (its images and containers, and their Docker images); a server it started is reset and
stopped. For tests of grokemu itself: `grokemu_server` (function-scoped) is a bare `grokemu up` subprocess,
`grokemu_inprocess` (function-scoped) a bare ThreadedGrokemu.

The kit needs only the standard library; `.websocket()` needs `websocket-client`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from grokemu.client import Client, ClientError, PublishFailed
from grokemu.domain.names import resolve_container

if TYPE_CHECKING:
    from grokemu.bootstrap import Serving


class GrokemuProcess:
    def __init__(self, data_dir: Path, *extra_args: str, env: dict | None = None, instance: str | None = None):
        self.data_dir = Path(data_dir)
        self.instance = instance or f"test-{uuid.uuid4().hex[:8]}"
        self.args = [sys.executable, "-m", "grokemu", "up", "--port", "0", "--data-dir", str(self.data_dir),
                     "--instance", self.instance, *extra_args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.output: list[str] = []
        self.log_path = self.data_dir / "grokemu-test.log"

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def start(self, timeout: float = 20) -> GrokemuProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, env=self.env, text=True)
        stdout = self.proc.stdout
        assert stdout is not None  # stdout=PIPE
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"grokemu exited with {self.proc.returncode}: {self.log_path.read_text()}")
                continue
            self.output.append(line)
            m = re.search(r"serving http://[^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if "grok config add" in line:
                break
        self.wait_healthy(deadline - time.time())
        return self

    def wait_healthy(self, timeout: float) -> dict:
        deadline = time.time() + max(timeout, 1)
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_grokemu/health", timeout=2) as resp:
                    return json.load(resp)
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def login(self, key: str = "admin") -> str:
        req = urllib.request.Request(f"{self.api}/users/login/dev", method="POST", headers={"Authorization": f"Dev {key}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["token"]

    def reset(self, key: str = "admin") -> None:
        """Drop every entity and what this server created in Docker (an admin route: it needs a session)."""
        req = urllib.request.Request(f"{self.url}/_grokemu/reset", method="POST",
                                     headers={"Authorization": self.login(key)})
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def close(self, key: str = "admin") -> None:
        """Remove what this server created in Docker (a reset), then stop it."""
        try:
            self.reset(key)
        except OSError:
            pass  # already gone
        self.stop()


class ThreadedGrokemu:
    """grokemu in this process: the app `create_app` builds and the server `grokemu up` runs (server/serve.py
    `prepare`: the same sockets, Docker networking, guard and connection takeover), served on a thread, on a free
    port, with a temporary data directory (removed at `stop` unless given) and its own instance label; after moto's
    ThreadedMotoServer. The interface of GrokemuProcess (`url`, `api`, `port`, `login`, `reset`, `stop`, `close`),
    and a context manager. `orchestrator` is the container engine (default: what `grokemu up` uses, the host's
    Docker daemon; grokemu's own tests pass the in-memory one); `dev_keys` as `--dev-key` takes them (`key` or
    `key=login`; the first signs in for `login` / `reset`); `clock` the server's clock (domain/clock.py; default
    the system's: a ManualClock lets a test move the server's time); `settings` are more settings by name
    (`proxy_request_timeout=5`); the GROKEMU_* environment applies as for `grokemu up`.

        with ThreadedGrokemu() as server:
            Client(server.url).containers()
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, *, dev_keys: tuple[str, ...] = ("admin",),
                 orchestrator=None, instance: str | None = None, clock=None, **settings):
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.instance = instance or f"test-{uuid.uuid4().hex[:8]}"
        self.dev_keys = tuple(dev_keys)
        self.orchestrator = orchestrator
        self.clock = clock
        self.extra_settings = settings
        self.serving: Serving | None = None

    @property
    def port(self) -> int:
        return self._running().port

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    @property
    def context(self):
        """The app's context (web/context.py): its store, services and settings, for tests of grokemu itself."""
        return self._running().context

    def _running(self) -> Serving:
        if self.serving is None:
            raise RuntimeError("this in-process grokemu is not started: call start() first")
        return self.serving

    def start(self) -> ThreadedGrokemu:
        import tempfile

        from grokemu.bootstrap import prepare
        from grokemu.cli import orchestrator_for
        from grokemu.config import load_settings

        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="grokemu-"))
        settings = load_settings(overrides={**self.extra_settings, "host": "127.0.0.1", "port": 0,
                                            "data_dir": str(self.data_dir), "instance": self.instance,
                                            "dev_keys": list(self.dev_keys)})
        orchestrator = self.orchestrator if self.orchestrator is not None else orchestrator_for(settings)
        try:
            self.serving = prepare(settings, orchestrator, clock=self.clock).start()
        except BaseException:
            self.stop()  # a temporary data dir goes again
            raise
        return self

    @property
    def key(self) -> str:
        return self.dev_keys[0].partition("=")[0]

    def login(self, key: str | None = None) -> str:
        return Client(self.url, key or self.key).token

    def reset(self, key: str | None = None) -> None:
        """Drop every entity and what this server created in Docker."""
        Client(self.url, key or self.key).json("POST", "/_grokemu/reset", timeout=120)

    def stop(self) -> None:
        if self.serving is not None:
            self.serving.stop()
            self.serving = None
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def close(self, key: str | None = None) -> None:
        """Remove what this server created in Docker (a reset), then stop it."""
        if self.serving is not None:
            try:
                self.reset(key)
            except ClientError:
                pass
        self.stop()

    def __enter__(self) -> ThreadedGrokemu:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Response:
    """A proxied answer: `status_code`, `headers`, `content`, `text`, `json()` (the shape of `requests`')."""

    def __init__(self, status: int, headers: dict, content: bytes):
        self.status_code = status
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.content[:80]!r}>"


class ContainerHandle:
    """One plugin container of a published package, reached through grokemu as Datagrok's clients reach it."""

    def __init__(self, kit: Grokemu, entity: dict):
        self._kit = kit
        self.entity = entity

    @property
    def id(self) -> str:
        return self.entity["id"]

    @property
    def name(self) -> str:
        return self.entity["name"]

    @property
    def status(self) -> str:
        self.entity = self._kit.client.container(self.id)
        return self.entity["status"]

    def start(self) -> ContainerHandle:
        """Run it and wait until it is `started` (AssertionError with its logs when it ends in `error`)."""
        self.entity = self._kit.client.run(self.id, await_start=True)
        if self.entity["status"] != "started":
            raise AssertionError(f"container {self.name} is {self.entity['status']}, not started: "
                                 f"{self.entity.get('errorMessage') or ''}\n{self.logs()}")
        return self

    def stop(self) -> ContainerHandle:
        self.entity = self._kit.client.stop(self.id, await_stop=True)
        return self

    def logs(self) -> str:
        return self._kit.client.logs(self.id)

    def url(self, path: str = "/") -> str:
        """fetchProxy's URL for `path` (an on_demand container starts on the first request to it)."""
        return f"{self._kit.api}/docker/containers/proxy/{self.id}/{path.lstrip('/')}"

    def fetch(self, path: str = "/", method: str = "GET", *, json=None, data: bytes | str | None = None,
              headers: dict | None = None, timeout: float = 300) -> Response:
        """One request through fetchProxy, signed in as the kit's user; the container's answer as it came."""
        body, all_headers = None, dict(headers or {})
        if json is not None:
            import json as _json

            body = _json.dumps(json).encode()
            all_headers.setdefault("Content-Type", "application/json")
        elif data is not None:
            body = data.encode() if isinstance(data, str) else data
        status, got, content = self._kit.client.request(method, self.url(path).removeprefix(self._kit.client.url),
                                                        body=body, headers=all_headers, timeout=timeout)
        return Response(status, got, content)

    def requests(self, limit: int | None = None) -> list[dict]:
        """What the request inspector recorded for this container, newest first (Grokemu.requests)."""
        return self._kit.requests(self, limit)

    def websocket(self, path: str = "/", timeout: float = 60):
        """A WebSocket through webSocketProxy (websocket-client's WebSocket, a context manager), once grokemu has
        linked it to the container and sent its `CONNECTED` frame."""
        import websocket  # websocket-client

        url = self._kit.api.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        ws = websocket.create_connection(f"{url}/docker/containers/proxy-ws/{self.id}/{path.lstrip('/')}",
                                         header=[f"Authorization: {self._kit.client.token}"], timeout=timeout)
        first = ws.recv()
        if first != "CONNECTED":
            ws.close()
            raise AssertionError(f"webSocketProxy sent {first!r} before CONNECTED")
        return _ClosingWebSocket(ws)


class _ClosingWebSocket:
    """websocket-client's WebSocket (send, recv, close, ...) usable in a `with` block."""

    def __init__(self, ws):
        self._ws = ws

    def __getattr__(self, name):
        return getattr(self._ws, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._ws.close()


class Grokemu:
    """The kit's view of one grokemu: `publish`, `container`, and `client` for anything else."""

    def __init__(self, url: str, key: str = "admin", process: GrokemuProcess | ThreadedGrokemu | None = None):
        self.client = Client(url, key)
        self.process = process
        self.published: list[tuple[str, list[dict]]] = []

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def api(self) -> str:
        return self.client.api

    @property
    def token(self) -> str:
        return self.client.token

    def publish(self, path: str | os.PathLike, release: bool = False, timeout: float = 600) -> list[dict]:
        """Upload the package folder at `path` as `grok publish` does and wait until its images are `ready`; fails
        with the build log when one ends in `error`. Returns the images; teardown removes them again."""
        try:
            package, images = self.client.publish(path, release=release, timeout=timeout)
        except PublishFailed as e:
            pytest.fail(f"publishing {path} failed: {e}\n{e.logs}", pytrace=False)
        self.published.append((package, images))
        return images

    def call(self, nq_name: str, timeout: float = 300, **params):
        """Call a Python function of a published worker as plugin code does (`grok.functions.call`): the value of
        its output. Dataframes go in as CSV text or a pandas DataFrame and come back as a pandas DataFrame when
        pandas is installed (else CSV text), blobs as bytes, bigint as int, datetime as datetime. A task error or a
        cancel raises grokemu.function_call.FunctionCallError with the task's message (and `.stack`)."""
        return self.call_outcome(nq_name, timeout=timeout, **params).value

    def call_outcome(self, nq_name: str, timeout: float = 300, **params):
        """Like call(), with the progress reports and log lines the task sent (a CallOutcome)."""
        from grokemu.function_call import call_function, find_function

        func = find_function(lambda path: self.client.json("GET", path), nq_name)
        return call_function(self.api, self.token, func, params, timeout=timeout)

    def containers(self) -> list[dict]:
        packages = {p for p, _ in self.published}
        return [c for c in self.client.containers() if (c.get("package") or {}).get("name") in packages]

    def container(self, name: str | ContainerHandle) -> ContainerHandle:
        """A container of what this session published, by any name a person would use (domain/names.py): its id,
        its name (`squares-squares`) or friendly name, its docker folder (`squares`), its package's name when the
        package has one container (`HeldoutRoot`), or its image's name or reference. LookupError when nothing
        matches, or when the name matches several containers (the message lists them). A ContainerHandle is
        returned as it is, so every method that takes a container takes either."""
        if isinstance(name, ContainerHandle):
            return name
        packages = {p for p, _ in self.published}
        images = [i for i in self.client.images() if (i.get("package") or {}).get("name") in packages]
        return ContainerHandle(self, dict(resolve_container(name, self.containers(), images)))

    def requests(self, container: str | ContainerHandle, limit: int | None = None) -> list[dict]:
        """The request inspector's entries for `container` (a handle or any name `container()` takes), newest first:
        each fetchProxy request, WebSocket session and queue call with `time`, `kind`, `method`, `path`, `status`,
        `durationMs`, `requestHeaders`, `responseHeaders`, `requestBody`, `responseBody` (the first 4 KiB, text or
        hex) and `truncated`, credentials redacted (docs/inspector.md). A plugin test asserts with it what its code
        sent:

            squares.fetch("/echo", method="POST", json={"a": 1})
            [last, *_] = grokemu.requests(squares)
            assert last["method"] == "POST" and json.loads(last["requestBody"]) == {"a": 1}
        """
        return self.client.requests(self.container(container).id, limit)

    def cleanup(self) -> None:
        """Remove what this session published: containers (stopped, removed from Docker), images, Docker images."""
        docker = shutil.which("docker")
        for package, images in reversed(self.published):
            try:
                current = self.client.images(package) or images
                self.client.delete_package(package)
            except ClientError:
                current = images
            for image in current if docker else ():
                ref = image.get("dockerFullName")
                if docker and ref and not image.get("imageRef"):
                    subprocess.run([docker, "image", "rm", "-f", ref], capture_output=True)
        self.published.clear()


def pytest_addoption(parser):
    group = parser.getgroup("grokemu")
    group.addoption("--grokemu-url", default=None,
                    help="use the grokemu running at this URL (default $GROKEMU_URL; else start one)")
    group.addoption("--grokemu-key", default=None, help="dev key for it (default $GROKEMU_KEY or admin)")
    group.addoption("--grokemu-in-process", action="store_true", default=None,
                    help="when starting grokemu for the session, run it on a thread of the test process instead of "
                         "as a `grokemu up` subprocess (default $GROKEMU_IN_PROCESS=1)")


KIT_STOP_TIMEOUT = 2.0  # seconds between SIGTERM and SIGKILL for the kit's own grokemu (Docker's default: 10)


@pytest.fixture(scope="session")
def grokemu(request, tmp_path_factory):
    """The test kit: a running grokemu (`--grokemu-url` / `GROKEMU_URL`) or one started for the session."""
    url = request.config.getoption("--grokemu-url") or os.environ.get("GROKEMU_URL")
    key = request.config.getoption("--grokemu-key") or os.environ.get("GROKEMU_KEY") or "admin"
    in_process = request.config.getoption("--grokemu-in-process") or os.environ.get("GROKEMU_IN_PROCESS") == "1"
    process: ThreadedGrokemu | GrokemuProcess | None = None
    if not url:
        # a test suite starts and stops containers often: a short grace, unless GROKEMU_STOP_TIMEOUT says otherwise
        grace = None if "GROKEMU_STOP_TIMEOUT" in os.environ else KIT_STOP_TIMEOUT
        if in_process:
            server = ThreadedGrokemu(tmp_path_factory.mktemp("grokemu"), dev_keys=(key,)) if grace is None else \
                ThreadedGrokemu(tmp_path_factory.mktemp("grokemu"), dev_keys=(key,), stop_timeout=grace)
            process = server.start()
        else:
            flags = [f"--stop-timeout={grace:g}"] if grace is not None else []
            process = GrokemuProcess(tmp_path_factory.mktemp("grokemu"), "--dev-key", key, *flags).start()
        url = process.url
    kit = Grokemu(url, key, process)
    if not kit.client.healthy():
        pytest.fail(f"no grokemu answers at {url}", pytrace=False)
    yield kit
    try:
        kit.cleanup()
    finally:
        if process is not None:
            process.close(key)


@pytest.fixture
def grokemu_server(tmp_path_factory):
    server = GrokemuProcess(tmp_path_factory.mktemp("grokemu"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def grokemu_inprocess(tmp_path_factory):
    """A bare grokemu on a thread of the test process (ThreadedGrokemu) on the host's Docker daemon: reset and
    stopped afterwards."""
    server = ThreadedGrokemu(tmp_path_factory.mktemp("grokemu")).start()
    yield server
    server.close()


__all__ = ["ContainerHandle", "Grokemu", "GrokemuProcess", "Response", "ThreadedGrokemu", "grokemu",
           "grokemu_inprocess", "grokemu_server"]

