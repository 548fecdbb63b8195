"""What a Python relay costs at the least, against nginx and grokemu's relay loop, in one run (issue 19's CPU figure).

    python benchmarks/bench_loop_floor.py [--seconds 5] [--rounds 3]

The upstream is nginx answering `return 200` (no container, no Docker), so what is measured is the relay alone. In
front of it, each on its own port and process, in alternating rounds of `wrk -t1 -c8`:

  nginx      proxy_pass with a keepalive upstream (the yardstick)
  selectors  a minimal keep-alive relay on Python's selectors (the relay loop's technology): a request head is passed
             on as it is, a Content-Length answer passed back; no auth, no header rewriting, no bookkeeping
  asyncio    the same relay as an asyncio Protocol pair
  uvloop     the same Protocols on uvloop (the bench extra; skipped when it is not installed)
  grokemu    grokemu's relay loop in process (the in-memory orchestrator, one container published on the upstream's
             port, a dev session's token on every request): everything a fetchProxy request costs in grokemu but the
             Docker userland proxy

It prints req/s and the relay process's CPU per request (user + system of all its threads, from /proc) and the ratio
to nginx's. The minimal relays say how far the event-loop technology itself is from nginx; grokemu minus `selectors`
is grokemu's own work per request. Loopback only.
"""
from __future__ import annotations

import argparse
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, median  # noqa: I001  (puts the checkout on sys.path first)

TICK = os.sysconf("SC_CLK_TCK")
ANSWER = '{"result": 16.0}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _content_length(head: bytes) -> int:
    i = head.lower().find(b"content-length:")
    return int(head[i + 15:head.find(b"\r\n", i)]) if i >= 0 else 0


# -- the minimal relays (run in a child process: --relay KIND PORT UPSTREAM_PORT) -----------------------------------
def relay_selectors(port: int, uport: int) -> None:
    import selectors
    sel = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", port), backlog=256)
    listener.setblocking(False)

    class Pair:
        def __init__(self, c: socket.socket, u: socket.socket):
            self.c, self.u, self.cbuf, self.ubuf, self.need = c, u, b"", b"", -1

    def close(p: Pair) -> None:
        for s in (p.c, p.u):
            if s.fileno() >= 0:
                sel.unregister(s)
                s.close()

    def accepted(_unused) -> None:
        c, _ = listener.accept()
        u = socket.create_connection(("127.0.0.1", uport))
        for s in (c, u):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        p = Pair(c, u)
        sel.register(c, selectors.EVENT_READ, (from_client, p))
        sel.register(u, selectors.EVENT_READ, (from_upstream, p))

    def from_client(p: Pair) -> None:
        data = p.c.recv(65536)
        if not data:
            return close(p)
        p.cbuf += data
        end = p.cbuf.find(b"\r\n\r\n")
        if end >= 0:
            head, p.cbuf = p.cbuf[:end + 4], p.cbuf[end + 4:]
            p.u.send(head)

    def from_upstream(p: Pair) -> None:
        data = p.u.recv(65536)
        if not data:
            return close(p)
        p.ubuf += data
        if p.need < 0:
            end = p.ubuf.find(b"\r\n\r\n")
            if end < 0:
                return
            p.need = end + 4 + _content_length(p.ubuf[:end + 2])
        if len(p.ubuf) >= p.need:
            out, p.ubuf, p.need = p.ubuf[:p.need], p.ubuf[p.need:], -1
            p.c.send(out)

    sel.register(listener, selectors.EVENT_READ, (accepted, None))
    while True:
        for key, _ in sel.select():
            handler, pair = key.data
            try:
                handler(pair)
            except OSError:
                pass  # a pair closed by an earlier event of the same batch


def relay_asyncio(port: int, uport: int, use_uvloop: bool) -> None:
    import asyncio

    class Upstream(asyncio.Protocol):
        def __init__(self, down: Downstream):
            self.down, self.buf, self.need = down, b"", -1

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.need = end + 4 + _content_length(self.buf[:end + 2])
            if len(self.buf) >= self.need:
                out, self.buf, self.need = self.buf[:self.need], self.buf[self.need:], -1
                self.down.transport.write(out)

    class Downstream(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buf, self.up, self.waiting = transport, b"", None, []
            asyncio.get_running_loop().create_task(self._connect())

        async def _connect(self) -> None:
            _, self.up = await asyncio.get_running_loop().create_connection(lambda: Upstream(self), "127.0.0.1", uport)
            for head in self.waiting:
                self.up.transport.write(head)

        def data_received(self, data: bytes) -> None:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buf = self.buf[:end + 4], self.buf[end + 4:]
                if self.up is None:
                    self.waiting.append(head)
                else:
                    self.up.transport.write(head)

        def connection_lost(self, exc) -> None:
            if self.up is not None:
                self.up.transport.close()

    if use_uvloop:
        import uvloop
        uvloop.install()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Downstream, "127.0.0.1", port, backlog=256)
        await server.serve_forever()

    asyncio.run(serve())


def serve_grokemu(port: int, uport: int) -> None:
    """grokemu's server (waitress + the relay loop) in this process; prints `<token> <path>` once it answers."""
    import requests

    from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
    from grokemu.app import create_app
    from grokemu.bootstrap import create_server
    from grokemu.config import Settings
    from grokemu.server import bind
    from grokemu.web import proxy
    from grokemu.web.context import app_context
    from tests.fake_upstream import add_container, proxy_url

    data = Path(tempfile.mkdtemp(prefix="grokemu-floor-"))
    orchestrator = MemoryOrchestrator()
    orchestrator.fixed_host_port = uport
    app = create_app(Settings(data_dir=data, port=port, dev_keys={"admin": "admin"}), orchestrator=orchestrator,
                     background=True)
    server = create_server(app, bind("127.0.0.1", port, []), threads=8, max_request_body_size=2**31,
                           streamed_prefixes=(proxy.HTTP_PREFIX,))
    import threading
    threading.Thread(target=server.run, daemon=True).start()
    cid = add_container(app_context(app), {"on_demand": True}, name="floor")
    base = f"http://127.0.0.1:{port}"
    token = requests.post(f"{base}/api/users/login/dev", headers={"Authorization": "Dev admin"}, timeout=10).json()["token"]
    path = proxy_url(cid, "/x")
    for _ in range(3):  # the cold start, then the container is known started
        requests.get(base + path, headers={"Authorization": token}, timeout=10).raise_for_status()
    print(token, path, flush=True)
    select.select([sys.stdin], [], [])  # until the parent closes our stdin


# -- the run ----------------------------------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def _nginx(body: str, folder: str, name: str) -> tuple[subprocess.Popen, int]:
    conf = os.path.join(folder, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"worker_processes 1; daemon off; pid {conf}.pid; error_log stderr;\n"
                f"events {{ worker_connections 1024; }}\nhttp {{ access_log off; {body} }}\n")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", folder], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = f.read().split()
        if children:
            return proc, int(children[0])  # the worker serves; the master only waits
        time.sleep(0.05)
    raise SystemExit("nginx did not start its worker")


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def _wrk(port: int, path: str, seconds: int, token: str | None) -> tuple[float, int]:
    cmd = ["wrk", "-t1", "-c8", f"-d{seconds}s"] + (["-H", f"Authorization: {token}"] if token else [])
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    rate, count = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M), re.search(r"(\d+) requests in", out)
    if rate is None or count is None or "Non-2xx" in out:
        raise SystemExit(f"wrk on :{port} failed:\n{out}")
    return float(rate.group(1)), int(count.group(1))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--relay":
        kind, port, uport = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        if kind == "grokemu":
            serve_grokemu(port, uport)
        elif kind == "selectors":
            relay_selectors(port, uport)
        else:
            relay_asyncio(port, uport, kind == "uvloop")
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()
    try:
        import uvloop  # noqa: F401
        kinds = ["selectors", "asyncio", "uvloop", "grokemu"]
    except ImportError:
        kinds = ["selectors", "asyncio", "grokemu"]
        print("uvloop is not installed (pip install -e '.[bench]'): its row is left out")
    children: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as folder:
        uport, nport = _free_port(), _free_port()
        upstream, _ = _nginx(f'server {{ listen 127.0.0.1:{uport}; location / {{ return 200 \'{ANSWER}\'; }} }}',
                             folder, "upstream")
        children.append(upstream)
        proxy, proxy_worker = _nginx(
            f"upstream u {{ server 127.0.0.1:{uport}; keepalive 32; }} server {{ listen 127.0.0.1:{nport}; "
            f'location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}',
            folder, "proxy")
        children.append(proxy)
        relays: dict[str, tuple[int, int, str, str | None]] = {"nginx": (nport, proxy_worker, "/x", None)}
        try:
            for kind in kinds:
                port = _free_port()
                child = subprocess.Popen([sys.executable, __file__, "--relay", kind, str(port), str(uport)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                children.append(child)
                token, path = None, "/x"
                if kind == "grokemu":
                    assert child.stdout is not None
                    token, path = child.stdout.readline().split()
                _wait_listening(port)
                relays[kind] = (port, child.pid, path, token)
            print(f"{os.cpu_count()} CPUs; wrk -t1 -c8, {args.rounds} alternating rounds of {args.seconds} s; "
                  f"upstream: nginx return 200")
            results: dict[str, list[tuple[float, float]]] = {k: [] for k in relays}
            for _ in range(args.rounds):
                for name, (port, pid, path, token) in relays.items():
                    before = _cpu_seconds(pid)
                    rate, count = _wrk(port, path, args.seconds, token)
                    results[name].append((rate, (_cpu_seconds(pid) - before) / count * 1e6))
            nginx_us = median([us for _, us in results["nginx"]])
            for name, rows in results.items():
                us = median([u for _, u in rows])
                print(f"  {name:10s} req/s {median([r for r, _ in rows]):8.0f}   relay CPU us/request {us:6.1f} "
                      f"({us / nginx_us:.2f}x nginx)   rounds {[round(u, 1) for _, u in rows]}")
            if "grokemu" in results:
                own = median([u for _, u in results["grokemu"]]) - median([u for _, u in results["selectors"]])
                print(f"  grokemu's own work per request (grokemu - selectors): {own:.1f} us")
        finally:
            for child in children:
                if child.stdin is not None:
                    child.stdin.close()
                child.terminate()
            for child in children:
                child.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
