"""Issue 2 benchmark: `grokemu up` to healthy, idle RSS, publish → image ready for a prebuilt image.

Run: python benchmarks/bench_startup.py   (needs Docker for the publish part)
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil

from _common import median, verdict, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grokemu.testing import GrokemuProcess  # noqa: E402
from tests.helpers import package_zip  # noqa: E402

RUNS = 5


def health(url):
    try:
        with urllib.request.urlopen(f"{url}/_grokemu/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def time_to_healthy(data_dir: Path, port: int) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "grokemu", "up", "--port", str(port), "--data-dir", str(data_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: health(f"http://127.0.0.1:{port}"), 30, 0.002)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(10)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        times = [time_to_healthy(tmp / f"d{i}", free_port()) for i in range(RUNS)]
        up = median(times)
        print(f"grokemu up → healthy: median {up * 1000:.0f} ms over {RUNS} runs "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); target ≤ 1500 ms: {verdict(up <= 1.5)}")

        server = GrokemuProcess(tmp / "server").start()
        try:
            time.sleep(2)
            rss = psutil.Process(server.proc.pid).memory_info().rss / 2**20
            print(f"idle RSS after start: {rss:.1f} MB; target ≤ 60 MB: {verdict(rss <= 60)}")

            docker_ok = subprocess.run(["docker", "info"], capture_output=True).returncode == 0
            if not docker_ok:
                print("publish → ready: SKIPPED (no Docker daemon)")
                return
            tag = f"datagrok/bench{uuid.uuid4().hex[:6]}-hello:admin"
            build = subprocess.run(["docker", "build", "-q", "-t", tag, "--label", "grokemu.test=bench", "-"],
                                   input=b"FROM scratch\nEXPOSE 8000\nLABEL bench=1\n", capture_output=True)
            assert build.returncode == 0, build.stderr
            token = server.login()
            samples = []
            try:
                for _ in range(RUNS):
                    name = f"@bench/p{uuid.uuid4().hex[:6]}"
                    files = {"package.json": json.dumps({"name": name, "version": "1.0.0"}),
                             "dockerfiles/hello/Dockerfile": "FROM scratch\nEXPOSE 8000\n",
                             "dockerfiles/hello/image.json": json.dumps({"image": tag, "fallback": False})}
                    body = package_zip(files)
                    started = time.perf_counter()
                    req = urllib.request.Request(f"{server.api}/packages/dev/{name}?debug=true&rebuild=false&dropDb=false",
                                                 data=body, method="POST", headers={"Authorization": "Dev admin"})
                    urllib.request.urlopen(req).read()

                    def ready(name=name):
                        q = urllib.request.Request(f"{server.api}/docker/images?text={name.split('/')[1]}",
                                                   headers={"Authorization": token})
                        with urllib.request.urlopen(q) as r:
                            found = json.load(r)
                        return found and found[0]["status"] == "ready"

                    wait_until(ready, 30, 0.002)
                    samples.append(time.perf_counter() - started)
            finally:
                subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
            ready_s = median(samples)
            print(f"publish (ZIP upload) → image ready, prebuilt image: median {ready_s * 1000:.0f} ms over {RUNS} "
                  f"(max {max(samples) * 1000:.0f}); target ≤ 1000 ms: {verdict(ready_s <= 1.0)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
