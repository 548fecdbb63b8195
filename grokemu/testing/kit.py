"""The test kit's view of a grokemu (grokemu/testing/): publish a package, reach its containers through fetchProxy and
webSocketProxy as Datagrok's clients do, call its functions, read the request inspector, clean up."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from grokemu.client import Client, ClientError, PublishFailed
from grokemu.domain.names import resolve_container
from grokemu.testing.servers import GrokemuProcess, ThreadedGrokemu


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
