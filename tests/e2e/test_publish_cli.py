"""Issue 11: `grokemu publish DIR` (the upload without Node, with progress and the build log on failure),
`grokemu up --demo` (the samples published and started), and `--docker-network` on a host-run grokemu (plugin
containers on a network of their own, nothing published, reached at their address there)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from grokemu.testing import Grokemu, GrokemuProcess
from tests.helpers import remove_images

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def copy_sample(tmp_path: Path, sample: str, dockerfile: str | None = None) -> tuple[Path, str]:
    short = f"{sample.replace('-', '')}{uuid.uuid4().hex[:6]}"
    folder = tmp_path / short
    shutil.copytree(SAMPLES / sample, folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    meta = json.loads((folder / "package.json").read_text())
    meta["name"] = f"@grokemu/{short}"
    (folder / "package.json").write_text(json.dumps(meta))
    if dockerfile is not None:
        (folder / "dockerfiles" / sample / "Dockerfile").write_text(dockerfile)
    return folder, short


@pytest.fixture
def server(tmp_path, base_image):
    proc = GrokemuProcess(tmp_path / "data").start()
    yield proc
    proc.close()


def publish_cli(server, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grokemu", "publish", str(folder), "--url", server.url, *extra],
                          capture_output=True, text=True, timeout=600)


def test_publish_dir_prints_progress_and_the_image_becomes_ready(server, tmp_path):
    folder, short = copy_sample(tmp_path, "squares")
    try:
        done = publish_cli(server, folder)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert f"upload @grokemu/{short}" in out and "debug" in out  # upload
        assert "Step 1/" in out or "FROM python:3.12-slim" in out  # the build output, as it came
        assert f"image {short}-squares: ready" in out  # image status
        assert f"container {short}-squares" in out and "/docker/containers/proxy/" in out
        token = server.login()
        [image] = requests.get(f"{server.api}/docker/images", params={"text": short},
                               headers={"Authorization": token}, timeout=30).json()
        assert image["status"] == "ready"

        release = publish_cli(server, folder, "--release")
        assert release.returncode == 0, release.stdout + release.stderr
        assert "release" in release.stdout
    finally:
        remove_images(short)


def test_publish_dir_fails_with_the_build_log(server, tmp_path):
    folder, short = copy_sample(tmp_path, "squares", dockerfile="FROM python:3.12-slim\nRUN exit 3\nEXPOSE 8000\n")
    try:
        done = publish_cli(server, folder)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "failed" in done.stderr
        assert "RUN exit 3" in done.stderr  # the build log
        assert f"image {short}-squares: error" in done.stdout
    finally:
        remove_images(short)


def test_publish_dir_without_grokemu_fails_clearly(tmp_path):
    folder, _ = copy_sample(tmp_path, "squares")
    done = subprocess.run([sys.executable, "-m", "grokemu", "publish", str(folder), "--url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "could not be reached" in done.stderr


def test_up_demo_publishes_and_starts_the_samples(tmp_path, base_image):
    proc = GrokemuProcess(tmp_path / "data", "--demo", instance=f"test-demo-{uuid.uuid4().hex[:6]}").start()
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("  proxied URLs"):
                break
        text = "".join(lines)
        assert "demo ready" in text, text
        token = proc.login()
        containers = requests.get(f"{proc.api}/docker/containers", headers={"Authorization": token}, timeout=30).json()
        assert {c["name"] for c in containers} >= {"squares-squares", "ws-echo-ws-echo"}
        ours = [c for c in containers if c["name"] in ("squares-squares", "ws-echo-ws-echo")]
        assert all(c["status"] == "started" for c in ours), ours
        for c in ours:
            answer = requests.get(f"{proc.api}/docker/containers/proxy/{c['id']}/health",
                                  headers={"Authorization": token}, timeout=60)
            assert answer.status_code == 200, (c["name"], answer.text)
        # samples/queue's worker: started, its functions listed in the demo's output, and they answer
        [worker] = [c for c in containers if c["name"] == "queue-demo-worker"]
        assert worker["status"] == "started", worker
        for _ in range(len(containers)):
            line = proc.proc.stdout.readline()
            if line.startswith("  queue-demo-worker:"):
                break
        assert "functions: " in line and "QueueDemo:add" in line, line
        assert Grokemu(proc.url).call("QueueDemo:add", a=1, b=2) == 3
    finally:
        proc.close()


def test_docker_network_on_the_host(tmp_path, base_image):
    """Host-run grokemu with --docker-network: containers publish nothing and are reached at their address on that
    network; they call the API at the host's address there (a bridge listener, as with host.docker.internal)."""
    network = f"grokemu-test-net-{uuid.uuid4().hex[:6]}"
    proc = GrokemuProcess(tmp_path / "data", "--docker-network", network).start()
    folder, short = copy_sample(tmp_path, "squares")
    try:
        done = publish_cli(proc, folder)
        assert done.returncode == 0, done.stdout + done.stderr
        token = proc.login()
        [c] = requests.get(f"{proc.api}/docker/containers", params={"text": short},
                           headers={"Authorization": token}, timeout=30).json()
        square = requests.get(f"{proc.api}/docker/containers/proxy/{c['id']}/square?number=5",
                              headers={"Authorization": token}, timeout=120)
        assert square.status_code == 200 and square.json() == {"result": 25.0}
        back = requests.get(f"{proc.api}/docker/containers/proxy/{c['id']}/datagrok",
                            headers={"Authorization": token}, timeout=60).json()
        assert back["status"] == 200, back
        c = requests.get(f"{proc.api}/docker/containers/{c['id']}", headers={"Authorization": token}).json()
        attrs = json.loads(subprocess.run(["docker", "inspect", c["serviceName"]], capture_output=True,
                                          text=True, check=True).stdout)[0]
        assert not any((attrs["NetworkSettings"]["Ports"] or {}).values())
        assert c["address"] == attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    finally:
        proc.close()
        remove_images(short)
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
