"""End-to-end fixtures: the real clients (grok CLI from .tools/, the docker CLI) against `grokemu up`."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TOOLS, require


# docker_ready and base_image (shared with the security suite) are in tests/conftest.py


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
