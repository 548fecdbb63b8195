"""Issue 11 benchmark: the compose stand next to a host-run `grokemu up`.

  1. start → healthy: `docker-compose up -d` (image already built) until /_grokemu/health answers and Docker calls the
     container healthy, versus `grokemu up` on the host until /_grokemu/health answers;
  2. publish → first proxied 200: upload samples/squares under a fresh name (grokemu builds the image; Docker's layer
     cache makes the build a few seconds on every run but the first), wait until ready, then the first fetchProxy
     request, which starts the on_demand container.

Run: python benchmarks/bench_compose.py [--runs 3]   (needs Docker, docker-compose or `docker compose`, and the
python:3.12-slim image; builds compose/wheels and the stand's image first, not timed.) Not a test: timings here are
noisy, so read the ratio of the two columns, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from grokemu.client import Client  # noqa: E402
from tests.helpers import remove_images  # noqa: E402

COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
SAMPLE = ROOT / "samples" / "squares"


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_grokemu/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def wait(check, timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout} s")
        time.sleep(interval)


def docker_healthy(project: str) -> bool:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True).stdout.split()
    return len(ids) == 1 and subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", ids[0]],
                                            capture_output=True, text=True).stdout.strip() == "healthy"


def publish_to_first_200(url: str) -> tuple[float, str]:
    """Seconds from the upload of a fresh copy of samples/squares to the first proxied 200; the copy's short name."""
    short = f"squares{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / short
        shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
        meta = json.loads((folder / "package.json").read_text())
        meta["name"] = f"@grokemu/{short}"
        (folder / "package.json").write_text(json.dumps(meta))
        client = Client(url)
        _ = client.token  # sign in before the clock starts
        started = time.perf_counter()
        package, _ = client.publish(folder)
        [c] = client.containers(package)
        status, _, body = client.request("GET", f"/api/docker/containers/proxy/{c['id']}/square?number=4",
                                         timeout=300)
        elapsed = time.perf_counter() - started
    assert status == 200, body
    return elapsed, short


def run_stand(project: str) -> tuple[float, float, float]:
    """(up → health answers, up → Docker says healthy, publish → first proxied 200) for one stand."""
    port = free_port()
    env = {**os.environ, "GROKEMU_PORT": str(port), "GROKEMU_NETWORK": f"{project}-plugins",
           "GROKEMU_INSTANCE": project}
    base = [*compose_command(), "-f", str(COMPOSE_FILE), "-p", project]
    url = f"http://localhost:{port}"
    short = ""
    started = time.perf_counter()
    subprocess.run(base + ["up", "-d"], env=env, check=True, capture_output=True)
    try:
        wait(lambda: health(url), 120, "stand health")
        answering = time.perf_counter() - started
        wait(lambda: docker_healthy(project), 120, "stand healthy", interval=0.05)
        healthy = time.perf_counter() - started
        first, short = publish_to_first_200(url)
        return answering, healthy, first
    finally:
        try:
            client = Client(url)
            client.request("POST", "/_grokemu/reset", timeout=120)
        except Exception:  # noqa: BLE001 - best effort before `down`
            pass
        subprocess.run(base + ["down", "-v", "--remove-orphans"], env=env, capture_output=True)
        if short:
            remove_images(short)


def run_host() -> tuple[float, float]:
    """(grokemu up → health answers, publish → first proxied 200) for a host-run grokemu."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        instance = f"bench-{uuid.uuid4().hex[:6]}"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "grokemu", "up", "--port", str(port), "--data-dir", data,
                                 "--instance", instance], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://localhost:{port}"
        short = ""
        try:
            wait(lambda: health(url), 60, "host health")
            answering = time.perf_counter() - started
            first, short = publish_to_first_200(url)
            return answering, first
        finally:
            try:
                Client(url).request("POST", "/_grokemu/reset", timeout=120)
            except Exception:  # noqa: BLE001
                pass
            proc.terminate()
            proc.wait(20)
            if short:
                remove_images(short)


def main() -> int:
    parser = argparse.ArgumentParser(description="compose stand versus host-run grokemu")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    project = f"grokemubench{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "compose" / "wheelhouse.py")], check=True, capture_output=True)
    env = {**os.environ, "GROKEMU_NETWORK": f"{project}-plugins"}
    subprocess.run([*compose_command(), "-f", str(COMPOSE_FILE), "-p", project, "build", "-q"], env=env, check=True,
                   capture_output=True)
    print(f"wheelhouse + image build (not timed below): {time.perf_counter() - t0:.1f} s")
    # warm Docker's layer cache for the sample's image, so both columns time the same cached build
    run_host()
    stand, host = [], []
    try:
        for i in range(args.runs):
            stand.append(run_stand(project))
            host.append(run_host())
            print(f"run {i + 1}: stand up→answering {stand[-1][0]:.2f} s, up→healthy {stand[-1][1]:.2f} s, "
                  f"publish→200 {stand[-1][2]:.2f} s | host up→answering {host[-1][0]:.2f} s, "
                  f"publish→200 {host[-1][1]:.2f} s", flush=True)
    finally:
        subprocess.run(["docker", "rmi", "-f", f"{project}_grokemu", f"{project}-grokemu"], capture_output=True)

    def med(rows, i):
        return statistics.median(r[i] for r in rows)

    print(f"\nmedians of {args.runs} runs          compose stand    host-run grokemu up    ratio")
    print(f"start → health answers (s)       {med(stand, 0):>10.2f}       {med(host, 0):>10.2f}          "
          f"{med(stand, 0) / med(host, 0):.1f}x")
    print(f"start → Docker 'healthy' (s)     {med(stand, 1):>10.2f}              —")
    print(f"publish → first proxied 200 (s)  {med(stand, 2):>10.2f}       {med(host, 1):>10.2f}          "
          f"{med(stand, 2) / med(host, 1):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
