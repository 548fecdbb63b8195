"""Issue 3 benchmark: `run?awaitStart=true` latency versus a direct start of the same image with the docker SDK
(create + start, publish the port on 127.0.0.1, wait until the app answers), measured alternately in one run.

Run: python benchmarks/bench_spawner.py   (needs Docker and the python:3.12-slim base image)
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker

from _common import median, verdict, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grokemu.adapters.docker_orchestrator import http_answers  # noqa: E402
from grokemu.testing import GrokemuProcess  # noqa: E402
from tests.helpers import package_zip  # noqa: E402

RUNS = 7
APP = Path(__file__).resolve().parents[1] / "samples" / "squares" / "dockerfiles" / "squares"


def api(server, path, token, method="GET", data=None, headers=None):
    req = urllib.request.Request(f"{server.api}{path}", data=data, method=method,
                                 headers={"Authorization": token, **(headers or {})})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def direct_start(client, image: str) -> float:
    started = time.perf_counter()
    c = client.containers.run(image, detach=True, ports={"5353/tcp": ("127.0.0.1", None)},
                              labels={"grokemu.test": "bench"}, nano_cpus=250_000_000, mem_limit=512 * 2**20)
    try:
        c.reload()
        port = int(c.attrs["NetworkSettings"]["Ports"]["5353/tcp"][0]["HostPort"])
        wait_until(lambda: http_answers("127.0.0.1", port), 60, 0.02)
        return time.perf_counter() - started
    finally:
        c.remove(force=True)


def main():
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        server = GrokemuProcess(Path(tmp) / "server").start()
        try:
            token = server.login()
            name = f"@bench/run{uuid.uuid4().hex[:6]}"
            files = {"package.json": json.dumps({"name": name, "version": "1.0.0"})}
            for f in APP.iterdir():
                files[f"dockerfiles/squares/{f.name}"] = f.read_bytes()
            files["dockerfiles/squares/container.json"] = json.dumps({"on_demand": True})
            api(server, f"/packages/dev/{name}?debug=false", "", "POST", package_zip(files),
                {"Authorization": "Dev admin"})
            short = name.split("/")[1]
            image = wait_until(lambda: [i for i in api(server, f"/docker/images?text={short}", token)
                                        if i["status"] in ("ready", "error")], 300, 0.1)[0]
            assert image["status"] == "ready", image["logs"]
            [c] = api(server, f"/docker/containers?text={short}", token)

            ours, direct = [], []
            for _ in range(RUNS):
                direct.append(direct_start(client, image["dockerFullName"]))
                started = time.perf_counter()
                result = api(server, f"/docker/containers/{c['id']}/run?awaitStart=true", token)
                ours.append(time.perf_counter() - started)
                assert result["status"] == "started", result
                api(server, f"/docker/containers/{c['id']}/stop?awaitStop=true", token)
            added = (median(ours) - median(direct)) * 1000
            print(f"direct start + ready (docker SDK, same image): median {median(direct) * 1000:.0f} ms over {RUNS}")
            print(f"grokemu run?awaitStart=true:                  median {median(ours) * 1000:.0f} ms over {RUNS}")
            print(f"added by grokemu: {added:.0f} ms (ratio {median(ours) / median(direct):.2f}); "
                  f"target ≤ 100 ms added: {verdict(added <= 100)}")
        finally:
            server.reset()
            server.stop()


if __name__ == "__main__":
    main()
