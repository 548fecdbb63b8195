"""Issue 20 item 3: the test kit knows the package. `grokemu.container(...)` takes any name a person would use (the
package's, the image's, ...; domain/names.py), and grokemu can run in the test process (ThreadedGrokemu: the app and
the server `grokemu up` runs, on a thread). No Docker: the in-memory orchestrator builds and runs the packages."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.client import Client, ClientError
from grokemu.testing import ContainerHandle, Grokemu, ThreadedGrokemu
from tests.helpers import hello_package, package_folder


def root_package(tmp_path, name: str):
    """A package with one root Dockerfile (dockerfiles/Dockerfile): its container is named after the package."""
    files = {"package.json": json.dumps({"name": name, "version": "1.0.0"}),
             "dockerfiles/Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\nEXPOSE 8000\n",
             "dockerfiles/hello.txt": "hello\n"}
    return package_folder(files, tmp_path / name.strip("@").replace("/", "-"))


def two_folder_package(tmp_path, name: str):
    files = hello_package(name, folder="api")
    files.update({k.replace("/api/", "/worker/"): v for k, v in files.items() if k.startswith("dockerfiles/")})
    return package_folder(files, tmp_path / name.strip("@").replace("/", "-"))


@pytest.fixture
def kit(tmp_path):
    with ThreadedGrokemu(tmp_path / "data", orchestrator=MemoryOrchestrator()) as server:
        kit = Grokemu(server.url, process=server)
        yield kit
        kit.cleanup()


def test_container_by_package_name_when_the_package_has_one(kit, tmp_path):
    """Issue 20's example: `grokemu.container("HeldoutRoot")` used to fail with
    `no container 'HeldoutRoot' among ['heldout-root']`."""
    [image] = kit.publish(root_package(tmp_path, "HeldoutRoot"))
    by_package = kit.container("HeldoutRoot")
    assert by_package.name == "heldout-root"
    for name in (by_package.id, "heldout-root", image["id"], image["name"], image["dockerFullName"]):
        assert kit.container(name).id == by_package.id, name
    assert kit.container(by_package) is by_package  # a handle stands for itself (every method takes either)
    assert isinstance(by_package, ContainerHandle) and by_package.start().status == "started"


def test_ambiguous_and_unknown_names_say_which_containers_there_are(kit, tmp_path):
    kit.publish(two_folder_package(tmp_path, "@acme/multi"))
    assert kit.container("worker").name == "multi-worker"
    with pytest.raises(LookupError) as raised:
        kit.container("@acme/multi")
    assert str(raised.value).startswith("'@acme/multi' names 2 containers: 'multi-api' (package @acme/multi, id ")
    assert "'multi-worker'" in str(raised.value) and "use the container's name or id" in str(raised.value)
    with pytest.raises(LookupError, match=r"^no container 'HeldoutRoot' among \['multi-api', 'multi-worker'\]"):
        kit.container("HeldoutRoot")


def test_only_what_the_session_published_is_found(kit, tmp_path):
    other = Client(kit.url)
    files = hello_package("@acme/elsewhere")
    other.upload("@acme/elsewhere", {k: v.encode() if isinstance(v, str) else v for k, v in files.items()})
    kit.publish(root_package(tmp_path, "Mine"))
    with pytest.raises(LookupError, match="among \\['mine'\\]"):
        kit.container("@acme/elsewhere")


def test_the_in_process_server_serves_like_grokemu_up_and_stops_cleanly(tmp_path):
    orchestrator = MemoryOrchestrator()
    server = ThreadedGrokemu(orchestrator=orchestrator, dev_keys=("k1", "k2=alice"), proxy_request_timeout=7).start()
    data_dir, port = server.data_dir, server.port
    try:
        assert data_dir.is_dir() and (data_dir / "grokemu.db").exists()
        assert server.context.settings.port == port and server.context.settings.proxy_request_timeout == 7
        assert server.context.settings.instance == server.instance and server.instance.startswith("test-")
        client = Client(server.url, "k2")
        assert Client(server.url, server.key).json("GET", "users/current")["login"] == "admin"  # k1
        health = client.health()
        assert health["apiUrl"] == server.api and health["relay"] is not None  # the server, not the test client
        assert client.json("GET", "users/current")["login"] == "alice"
        with pytest.raises(ClientError) as refused:
            _ = Client(server.url, "admin").token  # only the dev keys it was given
        assert refused.value.status == 401, refused.value
    finally:
        server.stop()
    assert not data_dir.exists()  # a temporary data dir goes with the server
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    server.stop()  # twice is fine


def test_the_kit_fixture_can_run_grokemu_in_process(tmp_path):
    """`--grokemu-in-process` (or GROKEMU_IN_PROCESS=1): the session's grokemu is a ThreadedGrokemu (here with no
    Docker daemon: the plugin test runs in a pytest of its own, as a plugin author's would)."""
    (tmp_path / "test_inprocess.py").write_text(textwrap.dedent("""
        from grokemu.testing import ThreadedGrokemu

        def test_kit(grokemu):
            assert isinstance(grokemu.process, ThreadedGrokemu)
            assert grokemu.client.healthy() and grokemu.containers() == []
            assert grokemu.client.health()["docker"]["reachable"] is False
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("GROKEMU_URL", "GROKEMU_IN_PROCESS")}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    for extra, more_env in ((["--grokemu-in-process"], {}), ([], {"GROKEMU_IN_PROCESS": "1"})):
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra,
                               str(tmp_path / "test_inprocess.py")], cwd=tmp_path, env={**env, **more_env},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


@pytest.fixture
def no_docker(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


def test_the_bare_in_process_fixture(no_docker, grokemu_inprocess):
    """`grokemu_inprocess`, beside the subprocess `grokemu_server`: a ThreadedGrokemu on `grokemu up`'s own
    orchestrator (Docker; none here), reset and stopped afterwards."""
    assert isinstance(grokemu_inprocess, ThreadedGrokemu)
    client = Client(grokemu_inprocess.url)
    assert client.health()["docker"]["reachable"] is False
    assert client.containers() == [] and grokemu_inprocess.login()


def test_requests_returns_what_the_inspector_saw(tmp_path):
    """`grokemu.requests(container)`: the inspector's entries, newest first, so a plugin test can assert what its
    code sent; by handle or by any name, credentials redacted."""
    from tests.fake_upstream import Upstream

    up = Upstream()
    orchestrator = MemoryOrchestrator()
    orchestrator.fixed_host_port = up.port
    try:
        with ThreadedGrokemu(tmp_path / "data", orchestrator=orchestrator) as server:
            kit = Grokemu(server.url, process=server)
            kit.publish(root_package(tmp_path, "HeldoutRoot"))
            app = kit.container("HeldoutRoot").start()
            assert app.fetch("/echo", method="POST", json={"a": 1}).json() == {"a": 1}
            assert app.fetch("/status/404").status_code == 404
            newest, posted = kit.requests("HeldoutRoot")
            assert (newest["method"], newest["path"], newest["status"]) == ("GET", "/status/404", 404)
            assert posted["method"] == "POST" and json.loads(posted["requestBody"]) == {"a": 1}
            assert dict(posted["requestHeaders"])["Authorization"] == "[redacted]"
            assert kit.token not in json.dumps([newest, posted])
            assert app.requests(limit=1) == kit.requests(app, limit=1) == [newest]
            with pytest.raises(LookupError):
                kit.requests("nope")
            kit.cleanup()
    finally:
        up.close()
