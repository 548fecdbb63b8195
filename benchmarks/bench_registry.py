"""Registry speed: `docker push` / `docker pull` of one ~500 MB image to grokemu vs the reference registry.

The reference is Debian's `docker-registry` (distribution 2.8.2, /usr/bin/docker-registry) started here on a
loopback port with filesystem storage in a temp dir; grokemu is `python -m grokemu up` with its own data dir. Both
are addressed as `localhost:PORT` (insecure, plain HTTP). The image is built FROM scratch from random files (so
gzip cannot shrink it) and labelled `grokemu.test=1`; it and everything else made here is removed at the end.

Prints the time of each operation, the ratio grokemu / reference (target <= 1.25) and grokemu's peak RSS during its
push (psutil, sampled every 10 ms). Timings on these machines are noisy: compare ratios from the same run.

    python benchmarks/bench_registry.py [--size-mb 500] [--layers 5] [--rounds 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grokemu.testing import GrokemuProcess  # noqa: E402

REFERENCE = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(env: dict, *args: str, input: str | None = None, check: bool = True) -> str:
    r = subprocess.run(["docker", *args], env=env, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def timed(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


class PeakRss:
    """Samples a process's RSS on a thread; `.peak` in bytes."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class ReferenceRegistry:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ReferenceRegistry":
        storage = self.workdir / f"storage-{uuid.uuid4().hex[:6]}"
        storage.mkdir(parents=True)
        config = self.workdir / "config.yml"
        config.write_text(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
""")
        self.proc = subprocess.Popen([REFERENCE, "serve", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "reference.log", "ab"))
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1).read()
                return self
            except (OSError, urllib.error.URLError) as e:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"reference registry did not start: {(self.workdir / 'reference.log').read_text()}") from e
                time.sleep(0.1)

    def restart_empty(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def build_image(workdir: Path, env: dict, size_mb: int, layers: int) -> str:
    ctx = workdir / "context"
    ctx.mkdir()
    per_layer = size_mb * 1024 * 1024 // layers
    lines = ["FROM scratch"]
    for i in range(layers):
        with open(ctx / f"layer{i}.bin", "wb") as f:
            left = per_layer
            while left:
                n = min(left, 8 * 1024 * 1024)
                f.write(os.urandom(n))
                left -= n
        lines.append(f"COPY layer{i}.bin /layer{i}.bin")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = f"grokemu-bench/registry:{uuid.uuid4().hex[:8]}"
    docker(env, "build", "-q", "--label", "grokemu.test=1", "--label", "grokemu.bench=registry", "-t", tag, str(ctx))
    image_id = docker(env, "image", "inspect", "-f", "{{.Id}}", tag).strip()
    shutil.rmtree(ctx)
    return image_id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="push+pull rounds per registry (fresh storage each round)")
    args = ap.parse_args()
    if not Path(REFERENCE).exists():
        raise SystemExit(f"{REFERENCE} missing: apt-get install docker-registry")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise SystemExit("no Docker daemon (scripts/ensure-docker.sh)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    env = {**os.environ, "DOCKER_CONFIG": str(workdir / "docker-config")}
    ref = ReferenceRegistry(workdir / "reference")
    ref.workdir.mkdir()
    grok = GrokemuProcess(workdir / "grokemu", instance=f"bench-{uuid.uuid4().hex[:6]}")
    image_id = None
    results: dict[str, dict[str, list[float]]] = {"reference": {"push": [], "pull": []},
                                                  "grokemu": {"push": [], "pull": []}}
    peaks: list[int] = []
    try:
        t0 = time.perf_counter()
        image_id = build_image(workdir, env, args.size_mb, args.layers)
        size = int(docker(env, "image", "inspect", "-f", "{{.Size}}", image_id))
        print(f"image {image_id[:19]} {size / 1e6:.0f} MB in {args.layers} layers (built in "
              f"{time.perf_counter() - t0:.1f} s)")
        ref.start()
        grok.start()
        hosts = {"reference": f"localhost:{ref.port}", "grokemu": f"localhost:{grok.port}"}
        docker(env, "login", hosts["grokemu"], "-u", "any", "--password-stdin", input="admin\n")
        idle_rss = psutil.Process(grok.proc.pid).memory_info().rss
        for rnd in range(args.rounds):
            if rnd:
                ref.restart_empty()
                grok.reset()
            order = ["reference", "grokemu"] if rnd % 2 == 0 else ["grokemu", "reference"]
            refs = {name: f"{hosts[name]}/bench/image:r{rnd}" for name in order}
            for name in order:
                docker(env, "tag", image_id, refs[name])
                if name == "grokemu":
                    with PeakRss(grok.proc.pid) as rss:
                        seconds = timed(docker, env, "push", refs[name])
                    peaks.append(rss.peak)
                else:
                    seconds = timed(docker, env, "push", refs[name])
                results[name]["push"].append(seconds)
                print(f"round {rnd}: push {name:9s} {seconds:7.2f} s")
            for name in order:
                docker(env, "rmi", "-f", image_id)  # every tag and layer: the pull starts from nothing
                seconds = timed(docker, env, "pull", refs[name])
                results[name]["pull"].append(seconds)
                print(f"round {rnd}: pull {name:9s} {seconds:7.2f} s")
                if docker(env, "image", "inspect", "-f", "{{.Id}}", refs[name]).strip() != image_id:
                    raise SystemExit(f"pulled image from {name} has a different id")
            for r in refs.values():  # re-tag for the next round's push
                docker(env, "tag", image_id, r)
        print()
        print(f"{'':6s} {'reference s':>12s} {'grokemu s':>10s} {'ratio':>7s}   (target ratio <= 1.25)")
        for op in ("push", "pull"):
            r = statistics.median(results["reference"][op])
            g = statistics.median(results["grokemu"][op])
            print(f"{op:6s} {r:12.2f} {g:10.2f} {g / r:7.2f}")
        r = sum(statistics.median(results["reference"][op]) for op in ("push", "pull"))
        g = sum(statistics.median(results["grokemu"][op]) for op in ("push", "pull"))
        print(f"{'total':6s} {r:12.2f} {g:10.2f} {g / r:7.2f}")
        print(f"grokemu RSS: idle {idle_rss / 2**20:.0f} MiB, peak during push {max(peaks) / 2**20:.0f} MiB")
        return 0
    finally:
        if image_id:
            subprocess.run(["docker", "rmi", "-f", image_id], env=env, capture_output=True)
        ref.stop()
        grok.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
