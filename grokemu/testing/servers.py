"""The grokemu a test starts for itself (grokemu/testing/): `grokemu up` as a subprocess (GrokemuProcess), or the same
app and server on a thread of the test process (ThreadedGrokemu). Both offer `url`, `api`, `port`, `login`, `reset`,
`stop` and `close`."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from grokemu.client import Client, ClientError

if TYPE_CHECKING:
    from grokemu.bootstrap import Serving


class GrokemuProcess:
    def __init__(self, data_dir: Path, *extra_args: str, env: dict | None = None, instance: str | None = None,
                 source: Path | None = None):
        self.data_dir = Path(data_dir)
        # source: another grokemu tree to run (`python -m` puts the working directory first on sys.path), as the
        # proxy benchmark's --baseline does
        self.cwd = source
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
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log, env=self.env, text=True,
                                     cwd=self.cwd)
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
