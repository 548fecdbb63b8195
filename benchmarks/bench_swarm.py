"""Issue 12 benchmark: plugin containers on Docker Swarm.

1. Cold start: the first proxied request to a stopped on_demand container through `grokemu up --orchestrator swarm`
   (fetchProxy until 200), against the floor done by hand with the docker SDK on the same image: scale a 0-replica
   service to 1, find the task's address, poll until the app answers 200. Alternating rounds, medians.
   Target: ≤ 150 ms added.
2. Steady state: small proxied GETs per second through grokemu on the Swarm backend and on the Docker backend (the
   same plain app, the same client), each also as a ratio of direct requests to the container. Target: Swarm no worse
   than Docker. "Direct" differs: on Docker it passes the docker-proxy of the published port, on Swarm it reaches
   the task's address, so the verdict compares what grokemu serves.

Run: python benchmarks/bench_swarm.py   (needs Docker, a swarm manager or none at all — then a single-node swarm on
loopback is initialised and left afterwards — and the python:3.12-slim base image)
"""
from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker
from docker.types import RestartPolicy, ServiceMode

from _common import median, verdict, wait_until
from bench_proxy import PLAIN_APP, PLAIN_DOCKERFILE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grokemu.testing import GrokemuProcess  # noqa: E402
from tests.helpers import entities, publish_ready, sample_copy  # noqa: E402

NETWORK = "grokemu-bench-swarm"


def get(host: str, port: int, path: str, headers=None, conn=None):
    c = conn or http.client.HTTPConnection(host, port, timeout=60)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    r.read()
    return r.status, c


def answers(host: str, port: int, path: str = "/health") -> bool:
    try:
        status, c = get(host, port, path)
        c.close()
        return status == 200
    except OSError:
        return False


def floor_start(client, image: str, port: int) -> float:
    """By hand: a 0-replica service on the same network, scaled to 1, polled until the app answers."""
    service = client.services.create(image, name=f"bench-floor-{uuid.uuid4().hex[:6]}", networks=[NETWORK],
                                     mode=ServiceMode("replicated", replicas=0),
                                     restart_policy=RestartPolicy(condition="none"),
                                     labels={"grokemu.test": "bench"})
    try:
        started = time.perf_counter()
        service.scale(1)

        def address():
            for task in client.api.tasks(filters={"service": service.id, "desired-state": "running"}):
                cid = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
                if task["Status"].get("State") == "running" and cid:
                    nets = client.api.inspect_container(cid)["NetworkSettings"]["Networks"]
                    return (nets.get(NETWORK) or {}).get("IPAddress")
            return None

        ip = wait_until(address, 120, 0.01)
        wait_until(lambda: answers(ip, port), 60, 0.01)
        return time.perf_counter() - started
    finally:
        service.remove()


def rate(host: str, port: int, path: str, headers: dict, seconds: float, threads: int = 8) -> float:
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(i):
        conn = None
        while time.perf_counter() < stop:
            status, conn = get(host, port, path, headers, conn)
            if status == 200:
                done[i] += 1
        conn.close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    client = docker.from_env()
    created_swarm = False
    if client.info()["Swarm"]["LocalNodeState"] != "active":
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True)
        created_swarm = True
    try:
        return run(client, args)
    finally:
        if created_swarm:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)


def run(client, args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        swarm = GrokemuProcess(Path(tmp) / "swarm", "--orchestrator", "swarm",
                               env={"GROKEMU_SWARM_NETWORK": NETWORK}).start()
        plain = GrokemuProcess(Path(tmp) / "docker").start()
        try:
            results = {}
            for label, server in (("swarm", swarm), ("docker", plain)):
                token = server.login()
                c = publish_ready(server.api, token, *sample_copy("squares", container={"on_demand": True}))
                results[label] = (server, token, c)
            server, token, c = results["swarm"]
            [image] = entities(server.api, token, "images", c["name"])
            auth = {"Authorization": token}
            # one start first: grokemu creates the plugin network the floor's service joins too
            get("127.0.0.1", server.port, f"/api/docker/containers/proxy/{c['id']}/health", auth)[1].close()
            get("127.0.0.1", server.port, f"/api/docker/containers/{c['id']}/stop?awaitStop=true", auth)[1].close()
            ours, floor = [], []
            for _ in range(args.rounds):
                floor.append(floor_start(client, image["dockerFullName"], 5353))
                started = time.perf_counter()
                status, conn = get("127.0.0.1", server.port, f"/api/docker/containers/proxy/{c['id']}/health", auth)
                conn.close()
                ours.append(time.perf_counter() - started)
                assert status == 200, status
                get("127.0.0.1", server.port, f"/api/docker/containers/{c['id']}/stop?awaitStop=true", auth)[1].close()
            added = (median(ours) - median(floor)) * 1000
            print(f"cold start, floor (service scale 0→1 + first 200 by hand): median {median(floor) * 1000:.0f} ms"
                  f" over {args.rounds}")
            print(f"cold start through grokemu on swarm (first fetchProxy 200):  median {median(ours) * 1000:.0f} ms")
            print(f"  added by grokemu: {added:.0f} ms; target ≤ 150 ms added: {verdict(added <= 150)}")

            ratios, rates = {}, {}
            for label in ("swarm", "docker"):
                server, token, _ = results[label]
                auth = {"Authorization": token}
                # a plain standard-library app with TCP_NODELAY and 2 CPUs, so the app is not what bounds the rate
                name, files = sample_copy("squares", edit=lambda f: plain_app(f))
                c = publish_ready(server.api, token, name, files)
                path = f"/api/docker/containers/proxy/{c['id']}/"
                get("127.0.0.1", server.port, path, auth)[1].close()  # started
                fresh = json.loads(urllib_get(server, f"/docker/containers/{c['id']}", token))
                host, port = fresh["address"], fresh["port"]
                direct = rate(host, port, "/", {}, args.seconds)
                proxied = rate("127.0.0.1", server.port, path, auth, args.seconds)
                ratios[label] = proxied / direct
                rates[label] = proxied
                print(f"small GET req/s on {label:6}: direct {direct:7.0f}  grokemu {proxied:6.0f}  "
                      f"{ratios[label]:.2f} of direct")
            # "direct" differs by backend: on Docker it goes through the docker-proxy of the published 127.0.0.1 port,
            # on Swarm straight to the task's address; so the overhead is compared as what grokemu serves
            print(f"steady state: grokemu serves {rates['swarm']:.0f} req/s on swarm vs {rates['docker']:.0f} on docker "
                  f"({ratios['swarm']:.2f} vs {ratios['docker']:.2f} of each backend's direct); target swarm no worse "
                  f"than docker (within 10%): {verdict(rates['swarm'] >= 0.9 * rates['docker'])}")
        finally:
            for server in (swarm, plain):
                server.close()
        subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True)
    return 0


def plain_app(files: dict) -> None:
    """Turn a squares copy into bench_proxy's plain app (port 8080, answers every GET)."""
    for key in [k for k in files if k.startswith("dockerfiles/")]:
        del files[key]
    files["dockerfiles/plain/Dockerfile"] = PLAIN_DOCKERFILE.encode()
    files["dockerfiles/plain/plain.py"] = PLAIN_APP.encode()
    files["dockerfiles/plain/container.json"] = json.dumps({"cpu": 2, "memory": 512, "on_demand": True}).encode()


def urllib_get(server, path: str, token: str) -> str:
    import urllib.request

    req = urllib.request.Request(f"{server.api}{path}", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode()


if __name__ == "__main__":
    sys.exit(main())
