"""End-to-end fixtures: the real clients (grok CLI from .tools/, the docker CLI) against `grokemu up`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import docker_available, require

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("GROKEMU_TOOLS", ROOT / ".tools"))


@pytest.fixture(scope="session")
def docker_ready():
    require(docker_available(), "a Docker daemon")


@pytest.fixture(scope="session")
def base_image(docker_ready):
    """Samples build FROM python:3.12-slim; offline machines get a stand-in (scripts/ensure-base-image.sh)."""
    found = subprocess.run(["docker", "image", "inspect", "python:3.12-slim"], capture_output=True).returncode == 0
    require(found, "the python:3.12-slim image (run scripts/ensure-base-image.sh)")


class Grok:
    """The real `grok` CLI (datagrok-tools 6.7.5) with an isolated HOME."""

    def __init__(self, binary: Path, home: Path):
        self.binary = binary
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if k != "GROK_PRIVATE_KEY"}
        self.env["HOME"] = str(home)

    def __call__(self, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
        return subprocess.run([str(self.binary), *args], cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def grok(tmp_path):
    binary = TOOLS / "node_modules" / ".bin" / "grok"
    require(binary.exists() and shutil.which("node") is not None,
            "the grok CLI (run scripts/ensure-clients.sh to install datagrok-tools 6.7.5)")
    home = tmp_path / "home"
    home.mkdir()
    return Grok(binary, home)


JS_CLIENT = Path(__file__).resolve().parent / "js" / "proxy-client.mjs"


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
