"""The compose stand (compose/docker-compose.yml) brought up by pytest-docker for the whole session.

pytest-docker runs `<docker_compose_command> -f compose/docker-compose.yml -p <project> up --build -d` and, at the
end, `down -v --rmi local --remove-orphans`. Debian's engine ships docker-compose v1 while pytest-docker defaults to
`docker compose` (v2): `docker_compose_command` picks whichever answers. The project name, the host port and the
plugin network are unique per session, so a developer's own stand (`make stand`) is left alone. Before pytest-docker's
`down`, the stand's grokemu is reset (its plugin containers and images go), or the network could not be removed.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.helpers import docker_available, free_port, healthy, require

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
PROJECT = f"grokemutest{uuid.uuid4().hex[:8]}"


def compose_command() -> str | None:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return "docker compose"
    if shutil.which("docker-compose"):
        return "docker-compose"
    return None



@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    require(docker_available(), "a Docker daemon")
    found = compose_command()
    require(found is not None, "docker compose or docker-compose (apt-get install docker-compose)")
    found_base = subprocess.run(["docker", "image", "inspect", "python:3.12-slim"], capture_output=True).returncode == 0
    require(found_base, "the python:3.12-slim image (run scripts/ensure-base-image.sh)")
    return found


@pytest.fixture(scope="session")
def stand_env(docker_compose_command):
    """The stand's settings, in the environment docker-compose interpolates the file with."""
    env = {"GROKEMU_PORT": str(free_port()), "GROKEMU_NETWORK": f"{PROJECT}-plugins",
           "GROKEMU_INSTANCE": PROJECT, "GROKEMU_BROKER_PASSWORD": secrets.token_hex(24)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def docker_compose_file(stand_env) -> str:
    """The wheelhouse the image installs from is built first (on the host: containers cannot reach an index)."""
    built = subprocess.run([sys.executable, str(ROOT / "compose" / "wheelhouse.py")], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return PROJECT


@pytest.fixture(scope="session")
def docker_setup():
    return ["up --build -d"]


@pytest.fixture(scope="session")
def docker_cleanup():
    return ["down -v --rmi local --remove-orphans"]


def container_healthy(project: str) -> bool:
    """Docker's verdict on the stand's grokemu (the image's HEALTHCHECK)."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", "label=com.docker.compose.service=grokemu"],
                         capture_output=True, text=True).stdout.split()
    if len(ids) != 1:
        return False
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", ids[0]], capture_output=True,
                           text=True).stdout.strip()
    return state == "healthy"



class Stand:
    def __init__(self, env: dict, command: str):
        self.port = int(env["GROKEMU_PORT"])
        self.network = env["GROKEMU_NETWORK"]
        self.url = f"http://localhost:{self.port}"
        self.api = f"{self.url}/api"
        self.command = command
        self.project = PROJECT

    def compose(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command.split(), "-f", str(COMPOSE_FILE), "-p", self.project, *args],
                              capture_output=True, text=True, timeout=600)

    def login(self) -> str:
        req = urllib.request.Request(f"{self.api}/users/login/dev", method="POST",
                                     headers={"Authorization": "Dev admin"})
        import json

        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["token"]

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/_grokemu/reset", method="POST",
                                     headers={"Authorization": self.login()})
        with urllib.request.urlopen(req, timeout=180) as resp:
            resp.read()


@pytest.fixture(scope="session")
def stand(docker_compose_command, stand_env, docker_services):
    s = Stand(stand_env, docker_compose_command)
    started = time.monotonic()
    try:
        docker_services.wait_until_responsive(check=lambda: healthy(s.url) and container_healthy(PROJECT),
                                              timeout=120, pause=0.2)
    except Exception:
        print(s.compose("logs", "--no-color").stdout[-5000:])
        raise
    s.healthy_after = time.monotonic() - started
    yield s
    try:
        s.reset()  # plugin containers off the network, grokemu's images gone: `down` can remove everything
    except OSError:
        pass
