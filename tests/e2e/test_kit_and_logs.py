"""Issue 20 items 3 and 4 on the real Docker daemon: `grokemu logs -f` following a real plugin container through a
`grokemu up` subprocess, and the example plugin test (samples/squares/tests) run against grokemu in the test process
(`--grokemu-in-process`: ThreadedGrokemu)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from grokemu.client import Client
from grokemu.testing import GrokemuProcess
from tests.helpers import remove_images, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def renamed_copy(folder: Path, sample: str, short: str, *, with_tests: bool = False) -> Path:
    """samples/<sample> copied to `folder/<sample>` as package @grokemu/<short> (unique names: the daemon is
    shared, and its images are removed afterwards)."""
    ignore = ("__pycache__",) if with_tests else ("tests", "__pycache__")
    target = folder / sample
    shutil.copytree(SAMPLES / sample, target, ignore=shutil.ignore_patterns(*ignore))
    meta = json.loads((target / "package.json").read_text())
    meta["name"] = f"@grokemu/{short}"
    (target / "package.json").write_text(json.dumps(meta))
    return target


@pytest.fixture
def server(tmp_path, base_image):
    proc = GrokemuProcess(tmp_path / "data").start()
    yield proc
    proc.close()


def test_logs_follow_a_real_container_until_it_stops(server, tmp_path):
    short = f"logs{uuid.uuid4().hex[:6]}"
    client = Client(server.url)
    try:
        package, _ = client.publish(renamed_copy(tmp_path, "squares", short), timeout=300)
        [c] = client.containers(package)
        c = client.run(c["id"])
        assert c["status"] == "started", c
        follower = subprocess.Popen([sys.executable, "-m", "grokemu", "logs", "-f", "--tail", "0", package,
                                     "--url", server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, b"")), daemon=True)
        reader.start()
        try:
            def asked() -> bool:  # the follow may start after a first request: ask until the line shows
                status, _, body = client.request("GET", f"/api/docker/containers/proxy/{c['id']}/square?number=4")
                assert status == 200 and json.loads(body) == {"result": 16.0}
                return any(b"GET /square?number=4" in line for line in lines)

            wait_until(asked, 60, "the proxied request in the followed logs", interval=0.5)
            assert follower.poll() is None  # still following
            client.stop(c["id"])
            follower.wait(60)  # the container stopped: the follow ends by itself
            reader.join(10)
            assert follower.returncode == 0, follower.stderr.read()
        finally:
            follower.kill()
        assert client.container(c["id"])["status"] == "stopped by user"
    finally:
        remove_images(short)


def test_the_example_plugin_test_runs_against_grokemu_in_process(tmp_path, base_image):
    """A plugin author's test (samples/squares/tests/test_squares_container.py, unchanged) with the session's
    grokemu in the test process: publish, fetchProxy, on-demand start, webSocketProxy, logs, stop."""
    short = f"kit{uuid.uuid4().hex[:6]}"
    folder = tmp_path / "plugins"
    renamed_copy(folder, "squares", short, with_tests=True)
    renamed_copy(folder, "ws-echo", f"{short}ws")
    env = {k: v for k, v in os.environ.items() if k not in ("GROKEMU_URL", "GROKEMU_IN_PROCESS")}
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--grokemu-in-process",
                               str(folder / "squares" / "tests")], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout[-5000:] + done.stderr[-3000:]
    finally:
        remove_images(short)
