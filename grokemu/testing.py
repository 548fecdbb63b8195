"""pytest plugin (entry point `pytest11: grokemu`): a real `grokemu up` subprocess for end-to-end tests.

    def test_my_plugin(grokemu_server):
        requests.get(grokemu_server.api + "/info/server")

The server gets a free port, a temporary data directory and its own instance label, so its containers and
images are told apart from anything else on the daemon; teardown resets it (removing what it created in Docker)
and stops it with SIGTERM.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import time
import urllib.request
import uuid
from pathlib import Path

import pytest


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

    def start(self, timeout: float = 20) -> "GrokemuProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, env=self.env, text=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
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

    def close(self) -> None:
        """Remove what this server created in Docker (a reset), then stop it."""
        try:
            self.reset()
        except OSError:
            pass  # already gone
        self.stop()


@pytest.fixture
def grokemu_server(tmp_path_factory):
    server = GrokemuProcess(tmp_path_factory.mktemp("grokemu"))
    server.start()
    yield server
    server.close()


__all__ = ["GrokemuProcess", "grokemu_server"]

