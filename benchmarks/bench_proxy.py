"""fetchProxy / webSocketProxy overhead: grokemu versus going straight to the container, in one run.

    python benchmarks/bench_proxy.py [--seconds 5] [--threads 8] [--gib 1]

Starts `grokemu up` (a subprocess on a free port, its own data dir and instance label), publishes a small
standard-library app (samples/ws-echo's WebSocket code plus /small, /bytes/<n> and /sink), starts its container, and
measures the same client against the container's published port (direct) and through grokemu's proxy:

  small GET req/s (N client threads, keep-alive)   target: grokemu >= 0.60 of direct, p50 added <= 2 ms
  1 GiB upload and 1 GiB download                   target: >= 0.70 of direct; grokemu RSS growth <= 32 MB
  WebSocket echo round trips/s (100 B messages)     target: >= 0.60 of direct
  cold start added over raw `docker run` + ready   target: <= 100 ms

The `nginx` section (issue 14) puts Debian's nginx (`apt-get install -y nginx wrk`; started here on loopback with a
generated config and a keepalive upstream, never the system service) in front of the same containers and loads
direct, nginx and grokemu with wrk in 5 alternating rounds (--rounds), for two apps: the tuned raw-socket app and a
plain ThreadingHTTPServer app with TCP_NODELAY; it prints the medians, grokemu/direct and nginx/direct. A second
`grokemu up` with the request inspector off (`inspector_size: 0`, issue 20) serves its own copy of the apps in the
same rounds, so the inspector's cost is measured in one run: grokemu/no-inspector (target >= 0.95). With
`--baseline REV` a third one runs the grokemu/ package of that git revision, so a change is measured before and after
in one run (issue 19: this tree's req/s at least the baseline's; grokemu's CPU per request <= 1.5x nginx's).
    python benchmarks/bench_proxy.py --only nginx [--baseline 10b0b18]

Loopback only, bounded loops, everything it creates removed at the end. Numbers are printed whether met or not.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import psutil
import requests
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grokemu.testing import GrokemuProcess  # noqa: E402
from tests.helpers import package_zip  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK = 256 * 1024

BENCH_APP = r'''
"""The benchmark's container: ws-echo's WebSocket, plus /small, /bytes/<n> and POST /sink."""
import json
from wsecho import Handler as EchoHandler, Server

BLOCK = memoryview(b"x" * (256 * 1024))
SMALL = json.dumps({"result": "ok"}).encode()


class Handler(EchoHandler):
    def _raw(self, status, body, content_type="application/json"):
        # status line, headers and body in one write: one segment per answer, as a tuned app would send
        self.wfile.write(b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                         % (status, content_type.encode(), len(body)) + body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/small":
            return self._raw(200, SMALL)
        if path.startswith("/bytes/"):
            size = int(path.split("/")[2])
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                             % size)
            while size > 0:
                self.wfile.write(BLOCK[:size])
                size -= len(BLOCK)
            return None
        return super().do_GET()

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/sink":
            return self._raw(404, b"{}")
        left = int(self.headers.get("Content-Length") or 0)
        size, buf = 0, bytearray(256 * 1024)
        while left > 0:
            n = self.rfile.readinto(memoryview(buf)[:min(left, len(buf))])
            if not n:
                break
            left -= n
            size += n
        return self._raw(200, json.dumps({"size": size}).encode())

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    import signal, sys
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server(("0.0.0.0", 8080), Handler).serve_forever()
'''

# The second app: a plain standard-library server (ThreadingHTTPServer, BaseHTTPRequestHandler's own send_response /
# send_header / end_headers), with TCP_NODELAY as any Python plugin app can set.
PLAIN_APP = r'''
import signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SMALL = b'{"result": "ok"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY on every accepted connection

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(SMALL)))
        self.end_headers()
        self.wfile.write(SMALL)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server(("0.0.0.0", 8080), Handler).serve_forever()
'''

PLAIN_DOCKERFILE = """FROM python:3.12-slim
WORKDIR /app
COPY plain.py /app/
EXPOSE 8080
CMD ["python", "-u", "/app/plain.py"]
"""

DOCKERFILE = """FROM python:3.12-slim
WORKDIR /app
COPY wsecho.py bench.py /app/
EXPOSE 8080
CMD ["python", "-u", "/app/bench.py"]
"""


# -- load generators ---------------------------------------------------------------------------------------------
def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytearray]:
    """One HTTP/1.1 answer with a Content-Length: (status, leftover bytes)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buf += data
    head = bytes(buf[:end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    rest = buf[end + 4:]
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed mid-body")
        rest += data
    return status, rest[length:]


def small_gets(port: int, path: str, headers: dict, threads: int, seconds: float) -> dict:
    request = (f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0]
    stop_at = [0.0]
    start = threading.Barrier(threads + 1)

    def worker(i):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        start.wait()
        mine = latencies[i]
        clock = time.perf_counter
        while clock() < stop_at[0]:
            t0 = clock()
            sock.sendall(request)
            status, buf = _read_response(sock, buf)
            mine.append(clock() - t0)
            if status != 200:
                errors[0] += 1
        sock.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for lst in latencies for x in lst)
    return {"rps": len(flat) / elapsed, "p50_ms": flat[len(flat) // 2] * 1000,
            "p99_ms": flat[int(len(flat) * 0.99)] * 1000, "n": len(flat), "errors": errors[0]}


def upload(url: str, headers: dict, size: int) -> float:
    """POST `size` bytes with a Content-Length (not chunked), sent in 1 MiB writes; seconds until the answer."""
    parts = urlsplit(url)
    block = b"u" * MiB
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    t0 = time.perf_counter()
    conn.putrequest("POST", parts.path)
    for k, v in {**headers, "Content-Length": str(size), "Content-Type": "application/octet-stream"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    left = size
    while left > 0:
        conn.send(block[:left])
        left -= len(block)
    r = conn.getresponse()
    body = r.read()
    elapsed = time.perf_counter() - t0
    conn.close()
    assert r.status == 200 and json.loads(body)["size"] == size, (r.status, body[:200])
    return elapsed


def download(url: str, headers: dict, size: int) -> float:
    t0 = time.perf_counter()
    got = 0
    with requests.get(url, headers=headers, stream=True, timeout=600) as r:
        assert r.status_code == 200, r.status_code
        for chunk in r.raw.stream(CHUNK, decode_content=False):
            got += len(chunk)
    elapsed = time.perf_counter() - t0
    assert got == size, (got, size)
    return elapsed


def ws_round_trips(url: str, headers: list[str], cookie: str | None, connections: int, count: int,
                   proxied: bool) -> float:
    message = "m" * 100
    sockets = []
    for _ in range(connections):
        ws = websocket.create_connection(url, header=headers, cookie=cookie, timeout=30)
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxied:
            assert ws.recv() == "CONNECTED"
        sockets.append(ws)
    for ws in sockets:  # warm-up
        for _ in range(50):
            ws.send(message)
            ws.recv()
    barrier = threading.Barrier(connections + 1)

    def run(ws):
        barrier.wait()
        for _ in range(count):
            ws.send(message)
            assert ws.recv() == message

    pool = [threading.Thread(target=run, args=(ws,)) for ws in sockets]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    for ws in sockets:
        ws.close()
    return connections * count / elapsed


class RssWatch:
    """Peak RSS of a process while a block runs (sampled every 20 ms)."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.before = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

    def __enter__(self):
        self.before = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.after = self.proc.memory_info().rss
        self.peak = max(self.peak, self.after)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / MiB


def wait_http(port: int, path: str, deadline: float, interval: float = 0.005) -> None:
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                s.settimeout(1)
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"nothing answered on {port}")


def raw_cold_start(image: str, container_port: int) -> float:
    """`docker run -d` (same limits as grokemu gives it, port on 127.0.0.1) until the first 200, in seconds."""
    name = f"grokemu-bench-raw-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    subprocess.run(["docker", "run", "-d", "--name", name, "--cpus", "2", "--memory", "1024m",
                    "-p", f"127.0.0.1::{container_port}", image], check=True, capture_output=True)
    port = int(subprocess.run(["docker", "port", name, str(container_port)], check=True, capture_output=True,
                              text=True).stdout.split(":")[-1])
    try:
        wait_http(port, "/small", time.perf_counter() + 60)
        return time.perf_counter() - t0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


# -- the run -----------------------------------------------------------------------------------------------------
class Report:
    def __init__(self):
        self.rows = []

    def __call__(self, metric, direct, grokemu, verdict, target, unit=""):
        self.rows.append((metric, direct, grokemu, verdict, target, unit))
        print(f"  {metric:<42} direct {direct:>8} {unit:<3} grokemu {grokemu:>8} {unit:<3} {verdict:<22} "
              f"target {target}", flush=True)


def bench_small(args, direct_port, gport, proxy_path, auth, record) -> None:
    small_gets(direct_port, "/small", {}, args.threads, 1.0)  # warm both paths
    small_gets(gport, f"{proxy_path}/small", auth, args.threads, 1.0)
    d = small_gets(direct_port, "/small", {}, args.threads, args.seconds)
    g = small_gets(gport, f"{proxy_path}/small", auth, args.threads, args.seconds)
    assert d["errors"] == 0 and g["errors"] == 0, (d, g)
    ratio = g["rps"] / d["rps"]
    record(f"small GET req/s ({args.threads} threads)", f"{d['rps']:.0f}", f"{g['rps']:.0f}",
           f"{ratio:.2f} of direct {'MET' if ratio >= 0.6 else 'NOT MET'}", ">= 0.60")
    record(f"small GET p50 ms ({args.threads} threads)", f"{d['p50_ms']:.2f}", f"{g['p50_ms']:.2f}",
           f"+{g['p50_ms'] - d['p50_ms']:.2f} ms", "(under load, for reference)")
    own = small_gets(gport, "/api/users/current", auth, args.threads, min(args.seconds, 3))
    record("  reference: grokemu's own /api/users/current", "-", f"{own['rps']:.0f}",
           f"{g['rps'] / own['rps']:.2f} of it", "(waitress+Flask+auth ceiling)")
    d1 = small_gets(direct_port, "/small", {}, 1, min(args.seconds, 3))
    g1 = small_gets(gport, f"{proxy_path}/small", auth, 1, min(args.seconds, 3))
    added = g1["p50_ms"] - d1["p50_ms"]
    record("small GET p50 ms (1 connection)", f"{d1['p50_ms']:.2f}", f"{g1['p50_ms']:.2f}",
           f"+{added:.2f} ms {'MET' if added <= 2 else 'NOT MET'}", "added <= 2 ms")


NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{upstreams}
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """Debian's nginx on loopback with a generated config (keepalive upstream per app), in a temp dir; never the
    system service. `/<app>/...` goes to that app's container."""

    def __init__(self, ports: dict[str, int]):
        self.dir = Path(tempfile.mkdtemp(prefix="grokemu-bench-nginx-"))
        self.port = free_port()
        upstreams = "".join(f"    upstream {app} {{ server {p if ':' in str(p) else f'127.0.0.1:{p}'}; "
                            f"keepalive 32; }}\n" for app, p in ports.items())
        locations = "".join(f"        location /{app}/ {{ proxy_pass http://{app}/; proxy_http_version 1.1; "
                            "proxy_set_header Connection '';  proxy_buffering on; }\n" for app in ports)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, upstreams=upstreams, locations=locations, port=self.port))
        self.proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for app in ports:
            wait_http(self.port, f"/{app}/small", time.perf_counter() + 10)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk(url: str, headers: dict, connections: int, seconds: float) -> dict:
    """wrk (one thread, `connections` keep-alive connections): req/s and p50 ms."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = p50 = None
    errors = 0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif words[:1] == ["50%"]:
            v = words[1]
            p50 = float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else \
                float(v[:-1]) * 1000
        elif line.strip().startswith("Non-2xx") or line.strip().startswith("Socket errors"):
            errors += 1
    assert rps is not None and p50 is not None and not errors, out
    return {"rps": rps, "p50_ms": p50}


class CpuMeter:
    """CPU seconds (user + system) spent by each party of a proxied request while one wrk run lasts: grokemu, the
    app's container, Docker's port forwarder (docker-proxy, on both the direct and the proxied path), nginx, and
    wrk itself. Divided by the requests served, it says where the two cores went."""

    def __init__(self, grokemu_pid: int, nginx_pid: int | None, app_ports: dict[str, int],
                 more: dict[str, int] | None = None):
        self.parties = {"grokemu": [grokemu_pid], "nginx": [nginx_pid] if nginx_pid else []}
        self.parties.update({name: [pid] for name, pid in (more or {}).items()})
        for app, port in app_ports.items():
            ids = subprocess.run(["docker", "ps", "-q", "--filter", f"publish={port}"], capture_output=True,
                                 text=True).stdout.split()
            pids = [int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", i], capture_output=True,
                                       text=True).stdout.strip() or 0) for i in ids]
            self.parties[f"{app} app"] = [p for p in pids if p]

    @staticmethod
    def _tree_seconds(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                for p in [proc, *proc.children(recursive=True)]:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def snapshot(self) -> dict[str, float]:
        shot = {name: self._tree_seconds(pids) for name, pids in self.parties.items()}
        shot["docker-proxy"] = self._tree_seconds([p.pid for p in psutil.process_iter(["name"])
                                                   if p.info["name"] == "docker-proxy"])
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
        shot["wrk"] = children.ru_utime + children.ru_stime
        return shot

    @staticmethod
    def threads(pid: int) -> dict[int, float]:
        """CPU seconds of each thread of one process."""
        try:
            return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
        except psutil.Error:
            return {}

    @staticmethod
    def busiest(before: dict[int, float], after: dict[int, float], requests: float) -> float:
        """CPU microseconds per request of the thread that spent the most between two `threads` snapshots: during
        small keep-alive GETs that is grokemu's relay loop, which serves them all on one thread. A thread's own CPU
        time hardly moves with what else loads the machine, unlike requests per second."""
        return max((after[t] - before.get(t, 0.0) for t in after), default=0.0) / requests * 1e6

    @staticmethod
    def per_request(before: dict[str, float], after: dict[str, float], requests: float) -> dict[str, float]:
        return {k: (after[k] - before[k]) / requests * 1e6 for k in after if after[k] - before[k] > 0.001}


def inspector_cost_us(n: int = 20000) -> float:
    """The request inspector's own work for one small relayed GET, measured in this process: what the relay loop
    and ProxyService.fast_forward call (begin, the answer's head, one body chunk, finish) with a shaped head reused,
    as the loop reuses it. Microseconds per request."""
    from grokemu.domain.clock import SystemClock
    from grokemu.domain.upstream import ProxiedRequest
    from grokemu.services.inspector import RequestInspector

    inspector = RequestInspector(200, ["admin"], SystemClock())
    token = "t" * 43
    relayed = ProxiedRequest(f"Host: localhost\r\nAuthorization: {token}\r\nAccept: */*".encode())
    environ: dict = {}
    headers = (("Content-Type", "application/json"), ("Content-Length", "16"), ("Server", "x"),
               ("Date", "Thu, 01 Jan 2026 00:00:00 GMT"))
    body = b'{"result": "ok"}'
    meta = None
    start = time.perf_counter()
    for _ in range(n):
        rec = inspector.begin("c", "GET", "/small", environ, token, relayed=relayed)
        if meta is None:
            meta = rec.response_meta(headers)
        rec.answered(200, meta)
        rec.body(body)
        rec.finish(200)
    return (time.perf_counter() - start) / n * 1e6


class Peer(NamedTuple):
    """A second grokemu serving its own copy of the apps in the same rounds: the inspector-off one, or the baseline
    revision's (--baseline)."""
    kind: str
    port: int
    auth: dict
    apps: dict
    pid: int


def bench_side_by_side(args, apps, gport, auth, grokemu_pid: int | None = None, peers: tuple[Peer, ...] = ()) -> None:
    """Small GETs: direct, nginx in front, grokemu in front (and each peer), for both apps, in `--rounds` alternating
    rounds (the order rotates each round); medians. One wrk thread with `--threads` connections, then one connection
    for p50."""
    if not (shutil.which("wrk") and (shutil.which("nginx") or Path("/usr/sbin/nginx").exists())):
        print("  nginx side-by-side skipped: needs `apt-get install -y nginx wrk`", flush=True)
        return
    ports = {app: c["port"] for app, (c, _) in apps.items()}
    # with the docker_network setting (GROKEMU_DOCKER_NETWORK) containers publish nothing: direct is their address
    direct = {app: f"{c.get('address') or '127.0.0.1'}:{c['port']}" for app, (c, _) in apps.items()}
    nginx = Nginx(direct)
    meter = CpuMeter(grokemu_pid, nginx.proc.pid, ports, {f"grokemu ({p.kind})": p.pid for p in peers}) \
        if grokemu_pid else None
    try:
        paths = {app: {"direct": (f"http://{direct[app]}/small", {}),
                       "nginx": (f"http://127.0.0.1:{nginx.port}/{app}/small", {}),
                       "grokemu": (f"http://127.0.0.1:{gport}/api/docker/containers/proxy/{c['id']}/small", auth)}
                 for app, (c, _) in apps.items()}
        kinds = ["direct", "nginx", "grokemu"]
        for peer in peers:
            for app, (c, _) in peer.apps.items():
                paths[app][peer.kind] = (
                    f"http://127.0.0.1:{peer.port}/api/docker/containers/proxy/{c['id']}/small", peer.auth)
            kinds.append(peer.kind)
        for app in apps:  # warm-up
            for kind in kinds:
                wrk(paths[app][kind][0], paths[app][kind][1], args.threads, 1)
        print(f"  small GETs, {args.rounds} alternating rounds of {args.seconds:g} s, wrk -t1 -c{args.threads}; "
              f"nginx {subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip()} "
              f"(1 worker, keepalive upstream)", flush=True)
        loop_pid = {"grokemu": grokemu_pid, **{p.kind: p.pid for p in peers}}
        party = {"grokemu": "grokemu", **{p.kind: f"grokemu ({p.kind})" for p in peers}}
        for app in apps:
            rps: dict[str, list[float]] = {k: [] for k in kinds}
            p50: dict[str, list[float]] = {k: [] for k in kinds}
            cpu: dict[str, list[dict]] = {k: [] for k in kinds}
            loop: dict[str, list[float]] = {k: [] for k in loop_pid}  # relay loop thread us/request
            for r in range(args.rounds):
                for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                    url, headers = paths[app][kind]
                    before = meter.snapshot() if meter else None
                    pid = loop_pid.get(kind)
                    threads_before = CpuMeter.threads(pid) if pid else {}
                    rps[kind].append(wrk(url, headers, args.threads, args.seconds)["rps"])
                    if pid:
                        loop[kind].append(CpuMeter.busiest(threads_before, CpuMeter.threads(pid),
                                                           rps[kind][-1] * args.seconds))
                    if meter:
                        cpu[kind].append(meter.per_request(before, meter.snapshot(), rps[kind][-1] * args.seconds))
                    p50[kind].append(wrk(url, headers, 1, min(args.seconds, 2))["p50_ms"])
            m = {k: statistics.median(v) for k, v in rps.items()}
            lat = {k: statistics.median(v) for k, v in p50.items()}
            g, n = m["grokemu"] / m["direct"], m["nginx"] / m["direct"]
            target = " (target >= 0.60)" if app == "plain" else ""
            print(f"  {app + ' app':<12} req/s direct {m['direct']:>7.0f}  nginx {m['nginx']:>7.0f}  "
                  f"grokemu {m['grokemu']:>7.0f}   grokemu/direct {g:.2f}{target}  nginx/direct {n:.2f}", flush=True)
            print(f"  {'':<12} rounds: " + " ".join(f"{k} {[round(x) for x in rps[k]]}" for k in kinds), flush=True)
            print(f"  {'':<12} p50 at 1 connection ms: direct {lat['direct']:.2f}  nginx {lat['nginx']:.2f} "
                  f"(+{lat['nginx'] - lat['direct']:.2f})  grokemu {lat['grokemu']:.2f} "
                  f"(+{lat['grokemu'] - lat['direct']:.2f}{', target <= 1 ms' if app == 'plain' else ''})",
                  flush=True)
            # grokemu's own CPU per request (all its threads), whatever else loads the machine
            own = {k: statistics.median(shot.get(party[k], 0.0) for shot in cpu[k]) for k in loop_pid if meter}
            nginx_cpu = statistics.median(shot.get("nginx", 0.0) for shot in cpu["nginx"]) if meter else 0.0
            if meter:
                print(f"  {'':<12} proxy CPU us/request: nginx {nginx_cpu:.1f}  "
                      + "  ".join(f"{k} {v:.1f} ({v / nginx_cpu:.2f}x nginx)" for k, v in own.items() if nginx_cpu)
                      + " (target grokemu <= 1.5x nginx)", flush=True)
            for peer in peers:
                label = {"no-inspector": "request inspector on/off", "baseline": "this tree/baseline"}.get(
                    peer.kind, f"grokemu/{peer.kind}")
                goal = " (target >= 0.95)" if peer.kind == "no-inspector" else \
                    " (target >= 1.00)" if peer.kind == "baseline" and app == "plain" else ""
                pairs = zip(rps["grokemu"], rps[peer.kind], strict=True)
                print(f"  {'':<12} {label}: req/s {m['grokemu']:.0f} / {m[peer.kind]:.0f} = "
                      f"{m['grokemu'] / m[peer.kind]:.3f}{goal}; by round {[round(a / b, 3) for a, b in pairs]}",
                      flush=True)
                if meter:
                    print(f"  {'':<12} {label}: grokemu CPU us/request {own['grokemu']:.1f} / {own[peer.kind]:.1f}: "
                          f"{peer.kind}/this {own[peer.kind] / own['grokemu']:.3f}", flush=True)
                if loop["grokemu"] and loop[peer.kind]:
                    a, b = statistics.median(loop["grokemu"]), statistics.median(loop[peer.kind])
                    print(f"  {'':<12} {label}: relay loop thread CPU us/request {a:.1f} / {b:.1f}: "
                          f"{peer.kind}/this {b / a:.3f} (rounds {[round(x, 1) for x in loop['grokemu']]} / "
                          f"{[round(x, 1) for x in loop[peer.kind]]})", flush=True)
            if any(p.kind == "no-inspector" for p in peers):
                cost = inspector_cost_us()
                print(f"  {'':<12} inspector work per request, measured in process: {cost:.2f} us", flush=True)
            for kind in kinds if meter else ():
                parties = sorted({k for shot in cpu[kind] for k in shot})
                median = {k: statistics.median(shot.get(k, 0.0) for shot in cpu[kind]) for k in parties}
                busy = sum(median.values()) * m[kind] / 1e6
                print(f"  {'':<12} CPU us/request, {kind:<7}: " + "  ".join(f"{k} {v:.0f}" for k, v in median.items())
                      + f"  = {sum(median.values()):.0f} us ({busy:.2f} of {os.cpu_count()} cores busy)", flush=True)
    finally:
        nginx.close()


def bench_body(kind, args, pid, direct_port, gport, proxy_path, auth, record) -> None:
    """Alternating rounds, direct then grokemu; medians, since one 1 GiB transfer on 2 shared cores is noisy."""
    size, gib = int(args.gib * GiB), f"{args.gib:g} GiB"
    direct_times, grokemu_times, growth = [], [], 0.0
    for _ in range(args.body_rounds):
        if kind == "upload":
            direct_times.append(upload(f"http://127.0.0.1:{direct_port}/sink", {}, size))
            with RssWatch(pid) as rss:
                grokemu_times.append(upload(f"http://127.0.0.1:{gport}{proxy_path}/sink", auth, size))
        else:
            direct_times.append(download(f"http://127.0.0.1:{direct_port}/bytes/{size}", {}, size))
            with RssWatch(pid) as rss:
                grokemu_times.append(download(f"http://127.0.0.1:{gport}{proxy_path}/bytes/{size}", auth, size))
        growth = max(growth, rss.growth_mb)
    d, g = statistics.median(direct_times), statistics.median(grokemu_times)
    ratio = d / g
    record(f"{gib} {kind} MB/s (median of {args.body_rounds})", f"{size / MiB / d:.0f}", f"{size / MiB / g:.0f}",
           f"{ratio:.2f} of direct {'MET' if ratio >= 0.7 else 'NOT MET'}", ">= 0.70")
    record(f"{gib} {kind}: grokemu RSS growth (peak)", "-", f"{growth:.1f}",
           "MET" if growth <= 32 else "NOT MET", "<= 32 MB", "MB")


def bench_ws(args, direct_port, gport, cid, token, record) -> None:
    for conns in (1, 4):
        d = ws_round_trips(f"ws://127.0.0.1:{direct_port}/ws", [], None, conns, args.ws_count, False)
        g = ws_round_trips(f"ws://127.0.0.1:{gport}/api/docker/containers/proxy-ws/{cid}/ws", [],
                           f"auth={token}", conns, args.ws_count, True)
        ratio = g / d
        record(f"WebSocket echo round trips/s ({conns} conn)", f"{d:.0f}", f"{g:.0f}",
               f"{ratio:.2f} of direct {'MET' if ratio >= 0.6 else 'NOT MET'}", ">= 0.60")


def bench_cold(args, server, cid, auth, image_ref, gport, proxy_path, record) -> None:
    raw, through, reported = [], [], []
    for _ in range(args.cold_runs):
        raw.append(raw_cold_start(image_ref, 8080))
        r = requests.get(f"{server.api}/docker/containers/{cid}/stop", params={"awaitStop": "true"}, headers=auth,
                         timeout=120)
        assert r.status_code == 200, r.text
        t0 = time.perf_counter()
        r = requests.get(f"http://127.0.0.1:{gport}{proxy_path}/small", headers=auth, timeout=120)
        through.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        reported.append(float(r.headers["X-Grokemu-Cold-Start-Ms"]))
    raw_ms, through_ms = statistics.median(raw) * 1000, statistics.median(through) * 1000
    added = through_ms - raw_ms
    record("cold start ms (run + first 200, median)", f"{raw_ms:.0f}", f"{through_ms:.0f}",
           f"{added:+.0f} ms {'MET' if added <= 100 else 'NOT MET'}", "added <= 100 ms")
    print(f"    raw `docker run` runs {[round(x * 1000) for x in raw]} ms; through grokemu "
          f"{[round(x * 1000) for x in through]} ms; X-Grokemu-Cold-Start-Ms {[round(x) for x in reported]}")


def publish_bench_app(server, auth) -> tuple[dict, str]:
    package = f"@grokemu/bench{uuid.uuid4().hex[:6]}"
    files = {
        "package.json": json.dumps({"name": package, "version": "1.0.0", "description": "proxy benchmark"}),
        "package.js": "//name: benchInfo\nexport function benchInfo() { return 'ok'; }\n",
        "dockerfiles/bench/Dockerfile": DOCKERFILE,
        "dockerfiles/bench/bench.py": BENCH_APP,
        "dockerfiles/bench/wsecho.py": (ROOT / "samples/ws-echo/dockerfiles/ws-echo/app.py").read_text(),
        # cpu 2: the container must not be the bottleneck of either path
        "dockerfiles/bench/container.json": json.dumps({"cpu": 2, "memory": 1024, "on_demand": True}),
        "dockerfiles/plain/Dockerfile": PLAIN_DOCKERFILE,
        "dockerfiles/plain/plain.py": PLAIN_APP,
        "dockerfiles/plain/container.json": json.dumps({"cpu": 2, "memory": 512, "on_demand": True}),
    }
    r = requests.post(f"{server.api}/packages/dev/{package}?debug=true", data=package_zip(files),
                      headers={"Authorization": "Dev admin"}, timeout=60)
    assert r.status_code == 200, r.text
    found = {}
    for app in ("bench", "plain"):
        name = f"{package.split('/')[1]}-{app}"
        deadline = time.time() + 300
        while True:
            [image] = requests.get(f"{server.api}/docker/images", params={"text": name}, headers=auth).json()
            if image["status"] in ("ready", "error"):
                break
            assert time.time() < deadline, image
            time.sleep(0.2)
        assert image["status"] == "ready", image["logs"]
        [c] = requests.get(f"{server.api}/docker/containers", params={"text": name}, headers=auth).json()
        r = requests.get(f"{server.api}/docker/containers/{c['id']}/run", params={"awaitStart": "true"},
                         headers=auth, timeout=120)
        assert r.status_code == 200, r.text
        found[app] = (requests.get(f"{server.api}/docker/containers/{c['id']}", headers=auth).json(),
                      image["dockerFullName"])
    return found


@contextlib.contextmanager
def peer_server(kind: str, env: dict, source: Path | None = None):
    """A second `grokemu up` with its own data dir and copy of the apps, removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"grokemu-bench-{kind}-"))
    server = GrokemuProcess(data_dir, env=env, source=source)
    server.start()
    try:
        auth = {"Authorization": server.login()}
        yield Peer(kind, server.port, auth, publish_bench_app(server, auth), server.proc.pid)
    finally:
        try:
            server.reset()
        except OSError:
            pass
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def baseline_tree(rev: str, stack: contextlib.ExitStack) -> Path:
    """The grokemu/ package of git revision `rev`, exported to a temporary folder (removed with the stack)."""
    folder = Path(tempfile.mkdtemp(prefix="grokemu-bench-baseline-"))
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "grokemu"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True,
                            text=True).stdout.strip()
    print(f"  baseline: grokemu of {commit}", flush=True)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each small-GET run")
    parser.add_argument("--threads", type=int, default=8, help="client threads for small GETs")
    parser.add_argument("--gib", type=float, default=1.0, help="upload / download size in GiB")
    parser.add_argument("--body-rounds", type=int, default=3, help="alternating rounds per upload / download")
    parser.add_argument("--ws-count", type=int, default=3000, help="round trips per WebSocket connection")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the nginx side-by-side")
    parser.add_argument("--only", default="nginx,small,upload,download,ws,cold", help="comma-separated sections")
    parser.add_argument("--baseline", metavar="REV", help="nginx section: also run the grokemu of this git revision "
                        "(exported to a temporary folder) in the same rounds, for a before/after in one run")
    args = parser.parse_args()
    only = set(args.only.split(","))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # still clean up (grokemu, container, image) when killed
    data_dir = Path(tempfile.mkdtemp(prefix="grokemu-bench-"))
    server = GrokemuProcess(data_dir)
    server.start()
    try:
        token = server.login()
        auth = {"Authorization": token}
        apps = publish_bench_app(server, auth)
        c, image_ref = apps["bench"]
        cid, direct_port, gport = c["id"], c["port"], server.port
        proxy_path = f"/api/docker/containers/proxy/{cid}"
        print(f"grokemu on :{gport}, container {c['name']} on 127.0.0.1:{direct_port}; {os.cpu_count()} CPUs; "
              f"small GETs from {args.threads} client threads", flush=True)
        record = Report()
        if "small" in only:
            bench_small(args, direct_port, gport, proxy_path, auth, record)
        if "nginx" in only:
            with contextlib.ExitStack() as peers:
                no_inspector = peers.enter_context(peer_server("no-inspector", {"GROKEMU_INSPECTOR_SIZE": "0"}))
                more = (peers.enter_context(peer_server("baseline", {}, baseline_tree(args.baseline, peers))),) \
                    if args.baseline else ()
                bench_side_by_side(args, apps, gport, auth, server.proc.pid, peers=(no_inspector, *more))
        for kind in ("upload", "download"):
            if kind in only:
                bench_body(kind, args, server.proc.pid, direct_port, gport, proxy_path, auth, record)
        if "ws" in only:
            bench_ws(args, direct_port, gport, cid, token, record)
        if "cold" in only:
            bench_cold(args, server, cid, auth, image_ref, gport, proxy_path, record)
    finally:
        try:
            server.reset()  # removes the container and the image it built
        except OSError:
            pass
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
