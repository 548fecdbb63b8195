"""Issue 11 pieces that need no Docker: the compose file's promises, the shared-socket peer rule, the endpoint a
container is reached at, the docker_network setting, and what a `grokemu publish DIR` upload carries."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from types import SimpleNamespace

import yaml

from grokemu.adapters.upstream_headers import upstream_address
from grokemu.cli import build_parser
from grokemu.client import package_files, package_zip
from grokemu.config import load_settings
from grokemu.domain.ports import RunningContainer
from grokemu.server.listener import GrokemuServer

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_publishes_on_loopback_only_with_socket_volume_and_network():
    spec = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    service = spec["services"]["grokemu"]
    assert service["ports"] and all(p.startswith("127.0.0.1:") for p in service["ports"])  # decision 4
    assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
    named = [v.split(":")[0] for v in service["volumes"] if not v.startswith("/")]
    assert named and all(n in spec["volumes"] for n in named)
    env = service["environment"]
    assert env["GROKEMU_DOCKER_NETWORK"] == spec["networks"]["plugins"]["name"]
    assert env["GROKEMU_CONTAINER_API_URL"].startswith("http://grokemu:")  # the service name on that network
    assert "grokemu" in env["GROKEMU_ALLOWED_HOSTS"].split(",")
    assert service["networks"] == ["plugins"]
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "pip install" not in dockerfile  # installs from the wheelhouse (install.py), never an index first


def test_shared_socket_tells_the_host_from_containers_by_peer():
    shared = SimpleNamespace(grokemu_host_peers=frozenset({"127.0.0.1", "::1", "172.18.0.1"}),
                             grokemu_listener="main")
    assert GrokemuServer.listener_for(shared, ("172.18.0.1", 40000)) == "main"  # the published port (gateway)
    assert GrokemuServer.listener_for(shared, ("127.0.0.1", 40000)) == "main"  # the healthcheck inside
    assert GrokemuServer.listener_for(shared, ("::ffff:172.18.0.1", 1, 0, 0)) == "main"
    assert GrokemuServer.listener_for(shared, ("172.18.0.7", 40000)) == "bridge"  # a plugin container
    plain = SimpleNamespace(grokemu_host_peers=None, grokemu_listener="bridge")
    assert GrokemuServer.listener_for(plain, ("172.18.0.1", 1)) == "bridge"  # per socket, as before


def test_running_container_endpoint_published_or_on_the_network():
    published = RunningContainer(id="a", name="a", labels={}, state="running", host_port=32768, app_ip="172.17.0.2",
                                 app_port=8000)
    assert published.endpoint() == ("127.0.0.1", 32768)
    on_network = RunningContainer(id="b", name="b", labels={}, state="running", host_port=None,
                                  app_ip="172.20.0.3", app_port=8000)
    assert on_network.endpoint() == ("172.20.0.3", 8000)
    assert upstream_address(SimpleNamespace(address=None)) == "127.0.0.1"
    assert upstream_address(SimpleNamespace(address="172.20.0.3")) == "172.20.0.3"


def test_docker_network_setting_from_env_and_flag():
    assert load_settings(environ={}).docker_network == ""
    assert load_settings(environ={"GROKEMU_DOCKER_NETWORK": "plugins"}).docker_network == "plugins"
    args = build_parser().parse_args(["up", "--docker-network", "n1", "--demo"])
    assert args.docker_network == "n1" and args.demo
    publish = build_parser().parse_args(["publish", "pkg", "--release", "--url", "http://localhost:1"])
    assert publish.dir == "pkg" and publish.release and publish.url == "http://localhost:1"


def test_publish_upload_respects_npmignore_and_skips_node_modules(tmp_path):
    (tmp_path / "package.json").write_text('{"name": "p", "version": "1.0.0"}')
    (tmp_path / ".npmignore").write_text("# comment\nsecret.txt\nbuild/\n")
    for rel in ("dockerfiles/app/Dockerfile", "secret.txt", "build/out.js", "node_modules/x/index.js",
                "dockerfiles/app/__pycache__/a.pyc", "package.js"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    files = package_files(tmp_path)
    assert set(files) == {"package.json", ".npmignore", "dockerfiles/app/Dockerfile", "package.js"}
    with zipfile.ZipFile(io.BytesIO(package_zip(files))) as z:
        assert sorted(z.namelist()) == sorted(files)
