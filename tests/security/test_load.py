"""Resource limits: no number of idle, slow or non-reading connections stalls the API (server/).

Each test runs a real server process on loopback with small limits (GROKEMU_* environment), opens the hostile
connections, and checks that health and an authenticated API call stay fast. Latencies are printed (`-s` shows them);
the asserted bounds are generous, they only catch a hang. Every loop is bounded in count and time.
"""
from __future__ import annotations

import os
import resource
import selectors
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests
import websocket

from grokemu.testing import GrokemuProcess
from tests.helpers import publish_ready, sample_copy, wait_until

ROOT = Path(__file__).resolve().parents[2]
HANG = 2.0  # seconds: any single health / API answer slower than this counts as a stall


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _serve(tmp_path, docker: bool = False, **settings) -> GrokemuProcess:
    env = {f"GROKEMU_{k.upper()}": str(v) for k, v in settings.items()}
    if not docker:
        env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    return GrokemuProcess(tmp_path / f"data-{uuid.uuid4().hex[:6]}", env=env).start()


def _probe(server: GrokemuProcess, token: str, rounds: int = 100) -> tuple[float, float]:
    """(health p99, API p99) in seconds over fresh connections; every answer must be a 200 within HANG."""
    health, api = [], []
    for i in range(rounds):
        started = time.monotonic()
        r = requests.get(f"{server.url}/_grokemu/health", timeout=HANG * 5)
        health.append(time.monotonic() - started)
        assert r.status_code == 200
        if i % 4 == 0:
            started = time.monotonic()
            r = requests.get(f"{server.api}/docker/images", headers={"Authorization": token}, timeout=HANG * 5)
            api.append(time.monotonic() - started)
            assert r.status_code == 200
    return _p99(health), _p99(api)


def _connect(port: int, n: int, rcvbuf: int | None = None) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def _socket_fds(pid: int) -> int:
    """How many sockets process `pid` holds open: the connections it has accepted, plus its listeners."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


def _closed_by_peer(sockets: list[socket.socket]) -> int:
    """How many of `sockets` the other end has closed (read at end of stream or reset), without waiting."""
    closed = 0
    for s in sockets:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def _close_all(sockets) -> None:
    for s in sockets:
        try:
            s.close()
        except OSError:
            pass


def _raise_own_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))


# -- idle and slow connections -------------------------------------------------------------------------------------
def test_300_idle_connections_do_not_stall_the_api(tmp_path):
    server = _serve(tmp_path)
    idle = []
    try:
        token = server.login()
        idle = _connect(server.port, 300)
        wait_until(lambda: _socket_fds(server.proc.pid) >= 300, 60, "the server accepted 300 connections")
        health, api = _probe(server, token)
        print(f"\n300 idle connections: health p99 {health * 1000:.1f} ms, API p99 {api * 1000:.1f} ms")
        assert health < HANG and api < HANG
        assert server.proc.poll() is None
    finally:
        _close_all(idle)
        server.stop()


def test_idle_connections_over_the_connection_limit_make_room(tmp_path):
    """At connection_limit the connections idle the longest are closed: new callers always get in."""
    server = _serve(tmp_path, connection_limit=100)
    idle = []
    try:
        token = server.login()
        idle = _connect(server.port, 400)
        # the oldest idle ones are closed to make room, as the server accepts the newer ones
        wait_until(lambda: _closed_by_peer(idle[:100]) >= 50, 60, "50 of the oldest 100 connections closed")
        health, api = _probe(server, token)
        print(f"\n400 idle connections, connection_limit 100: health p99 {health * 1000:.1f} ms, "
              f"API p99 {api * 1000:.1f} ms")
        assert health < HANG and api < HANG
    finally:
        _close_all(idle)
        server.stop()


def test_slowloris_connections_are_cut_after_header_timeout(tmp_path):
    header_timeout = 3
    server = _serve(tmp_path, header_timeout=header_timeout)
    slow: list[socket.socket] = []
    try:
        token = server.login()
        slow = _connect(server.port, 120)
        started = time.monotonic()
        for s in slow:
            s.sendall(f"GET /api/docker/images HTTP/1.1\r\nHost: localhost:{server.port}\r\n".encode())
        sel = selectors.DefaultSelector()
        for s in slow:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        closed_after: dict[int, float] = {}
        health: list[float] = []
        trickle = b"X-Slow: " + b"a" * 64
        tick = 0
        while len(closed_after) < len(slow) and time.monotonic() - started < header_timeout + 10:
            for s in slow:  # one more header byte per second on every open connection
                if s.fileno() not in closed_after:
                    try:
                        s.send(trickle[tick % len(trickle):][:1])
                    except OSError:
                        closed_after[s.fileno()] = time.monotonic() - started
            tick += 1
            t = time.monotonic()
            r = requests.get(f"{server.url}/_grokemu/health", timeout=HANG * 5)
            health.append(time.monotonic() - t)
            assert r.status_code == 200
            r = requests.get(f"{server.api}/docker/images", headers={"Authorization": token}, timeout=HANG * 5)
            assert r.status_code == 200
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    s = key.fileobj
                    try:
                        data = s.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data and s.fileno() not in closed_after:
                        closed_after[s.fileno()] = time.monotonic() - started
                        sel.unregister(s)
        latest = max(closed_after.values()) if closed_after else None
        print(f"\n120 slowloris connections: health p99 {_p99(health) * 1000:.1f} ms; all closed after "
              f"{latest and round(latest, 1)} s (header_timeout {header_timeout} s)")
        assert len(closed_after) == len(slow)
        assert max(closed_after.values()) < header_timeout + 3
        assert _p99(health) < HANG
    finally:
        _close_all(slow)
        server.stop()


def test_descriptors_past_1024_keep_the_server_serving(tmp_path):
    """poll(), not select(): descriptor numbers over 1024 neither crash nor stall the event loop."""
    _raise_own_fd_limit(4096)  # the server process inherits it (and raises its own soft limit as it needs)
    server = _serve(tmp_path, connection_limit=3000)
    many = []
    try:
        token = server.login()
        many = _connect(server.port, 1100)
        # the kernel completes the handshakes; the server accepts them when its loop gets round to it
        wait_until(lambda: _socket_fds(server.proc.pid) >= 1100, 60, "the server accepted 1100 connections")
        fds = [int(f) for f in os.listdir(f"/proc/{server.proc.pid}/fd")]
        print(f"\n1100 connections: the server holds {len(fds)} descriptors, the highest {max(fds)}")
        assert max(fds) > 1024
        # the newest connection sits on one of the server's highest descriptors: it is served
        last = many[-1]
        last.sendall(f"GET /_grokemu/health HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := last.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        health, api = _probe(server, token, rounds=40)
        print(f"health p99 {health * 1000:.1f} ms, API p99 {api * 1000:.1f} ms")
        assert health < HANG and api < HANG
        assert server.proc.poll() is None
    finally:
        _close_all(many)
        server.stop()
    assert server.proc.returncode == 0  # stopped by us, not crashed


# -- WebSockets ----------------------------------------------------------------------------------------------------
def _ws(server: GrokemuProcess, token: str) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{server.port}/_grokemu/ws-echo", timeout=5,
                                       header=[f"Authorization: {token}"])


def test_websockets_up_to_the_cap_then_a_clear_refusal(tmp_path):
    server = _serve(tmp_path, max_websockets=20)
    open_ws: list[websocket.WebSocket] = []
    try:
        token = server.login()
        open_ws = [_ws(server, token) for _ in range(20)]
        for i, ws in enumerate(open_ws):
            ws.send(f"m{i}")
        assert [ws.recv() for ws in open_ws] == [f"m{i}" for i in range(20)]
        extra = _ws(server, token)  # accepted, then closed with a reason
        opcode, frame = extra.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        code, reason = int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()
        print(f"\n21st WebSocket: close {code} {reason!r}")
        assert code == 4503 and "max_websockets" in reason
        extra.close()
        health, api = _probe(server, token, rounds=20)
        assert health < HANG and api < HANG
        # closing one frees a slot
        open_ws.pop().close()
        deadline = time.monotonic() + 30
        while True:
            again = _ws(server, token)
            again.send("again")
            try:
                if again.recv() == "again":
                    break
            except websocket.WebSocketException:
                pass
            again.close()
            assert time.monotonic() < deadline, "no WebSocket slot came free"
            time.sleep(0.1)
        open_ws.append(again)
    finally:
        for ws in open_ws:
            ws.close()
        server.stop()


def test_idle_websocket_is_closed_an_active_one_is_not(tmp_path):
    server = _serve(tmp_path, websocket_idle_timeout=3)
    try:
        token = server.login()
        idle, active = _ws(server, token), _ws(server, token)
        started = time.monotonic()
        while time.monotonic() - started < 6:
            active.send("ping")
            assert active.recv() == "ping"
            time.sleep(0.5)
        idle.settimeout(30)  # closed by now; the wait only allows for a slow machine
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            idle.recv()
        active.send("still")
        assert active.recv() == "still"
        active.close()
    finally:
        server.stop()


# -- preflight: a refused body is never read -------------------------------------------------------------------------
PREFLIGHT_SERVER = textwrap.dedent("""
    import pathlib, sys
    from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
    from grokemu.app import create_app
    from grokemu.config import Settings
    from grokemu.bootstrap import create_server
    from grokemu.server import bind, run_forever

    def preflight(environ):
        # refuse bodies without credentials or over 1 MiB, as web/guard.py does
        if "HTTP_AUTHORIZATION" not in environ or int(environ.get("CONTENT_LENGTH") or 0) > 2**20:
            return ("413 Payload Too Large", [("Content-Type", "application/json")],
                    b'{"#type": "ApiError", "message": "refused by preflight"}')
        return None

    settings = Settings(data_dir=pathlib.Path(sys.argv[1]), port=0)
    app = create_app(settings, orchestrator=MemoryOrchestrator(), background=False)
    sockets = bind("127.0.0.1", 0, [])
    server = create_server(app, sockets, settings, preflight=preflight)
    print(sockets[0].getsockname()[1], flush=True)
    run_forever(server, lambda: None)
""")


def _spooled_files(pid: int, tmp: Path) -> list[str]:
    """waitress spools a body to an unlinked temporary file: open descriptors on deleted or TMPDIR files."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "(deleted)" in target or target.startswith(str(tmp)):
            out.append(target)
    return out


def test_preflight_refuses_a_huge_body_before_reading_it(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", PREFLIGHT_SERVER, str(tmp_path / "data")], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "TMPDIR": str(tmp)}, cwd=ROOT)
    try:
        port = int(proc.stdout.readline())
        server = psutil.Process(proc.pid)
        head = (f"POST /api/packages/dev/big HTTP/1.1\r\nHost: localhost:{port}\r\n"
                f"Content-Type: application/zip\r\nContent-Length: {2**30}\r\n").encode()
        rss_before = server.memory_info().rss
        files_before = set(_spooled_files(proc.pid, tmp))  # a runtime may hold an unlinked file of its own
        latencies = []
        for i in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                expect = b"Expect: 100-continue\r\n" if i % 2 else b""
                s.sendall(head + expect + b"\r\n" + b"z" * 65536)  # 64 KiB of the 1 GiB promised
                started = time.monotonic()
                answer = s.recv(65536)
                latencies.append(time.monotonic() - started)
                assert answer.startswith(b"HTTP/1.1 413"), answer[:200]  # no 100 Continue first
                assert b"Connection: close" in answer and b"refused by preflight" in answer
                sent = 0
                try:  # the caller goes on sending: the server drops it, then closes
                    while sent < 64 * 2**20:
                        s.sendall(b"z" * 2**20)
                        sent += 2**20
                except OSError:
                    pass
                assert sent < 64 * 2**20, "the server kept reading the refused body"
        grown = (server.memory_info().rss - rss_before) / 2**20
        print(f"\npreflight refusals: answer p99 {_p99(latencies) * 1000:.1f} ms; server RSS grew "
              f"{grown:.1f} MB; new spooled files {set(_spooled_files(proc.pid, tmp)) - files_before}; "
              f"TMPDIR {os.listdir(tmp)}")
        assert _p99(latencies) < 1.0
        assert grown < 20
        assert os.listdir(tmp) == [] and set(_spooled_files(proc.pid, tmp)) <= files_before
        # a body the preflight lets through is read and served as usual
        r = requests.post(f"http://127.0.0.1:{port}/_grokemu/reset", data=b"{}", timeout=10,
                          headers={"Authorization": "nope", "Host": f"localhost:{port}"})
        assert r.status_code == 401, r.text  # read, then refused: a made-up token is no session
    finally:
        proc.terminate()
        proc.wait(10)


# -- clients that never read a big proxied answer (Docker) --------------------------------------------------------
CHUNKED_ROUTE = '''        if parts[0] == "chunked" and len(parts) == 2:  # added by tests/security/test_load.py
            size = int(parts[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 65536
            while size > 0:
                part = chunk[:size]
                self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(part), part))
                size -= len(part)
            self.wfile.write(b"0\\r\\n\\r\\n")
            return None
'''


def _publish_squares(server: GrokemuProcess, token: str) -> tuple[str, str]:
    """A copy of samples/squares with a chunked route, built by grokemu: (container id, container name)."""

    def add_chunked_route(files):
        [app_path] = [k for k in files if k.endswith("app.py")]
        source = files[app_path].decode()
        anchor = '        if parts[0] == "bytes" and len(parts) == 2:\n'
        assert anchor in source
        files[app_path] = source.replace(anchor, CHUNKED_ROUTE + anchor).encode()

    c = publish_ready(server.api, token, *sample_copy("squares", edit=add_chunked_route))
    return c["id"], c["name"]


def _non_reader(port: int, token: str, cid: str, path: str, pipelined: bool = False) -> socket.socket:
    [s] = _connect(port, 1, rcvbuf=4096)
    request = (f"GET /api/docker/containers/proxy/{cid}{path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
               f"Authorization: {token}\r\n\r\n").encode()
    if pipelined:  # a second request behind the big answer: that answer goes through waitress's buffers
        request += (f"GET /api/docker/containers/proxy/{cid}/health HTTP/1.1\r\nHost: localhost:{port}\r\n"
                    f"Authorization: {token}\r\n\r\n").encode()
    s.sendall(request)
    return s


@pytest.mark.e2e
def test_clients_that_never_read_big_answers_do_not_stall_the_api(tmp_path, base_image):
    stream_timeout = 6
    server = _serve(tmp_path, docker=True, max_streams=16, stream_timeout=stream_timeout)
    stalled: list[socket.socket] = []
    name = None
    try:
        token = server.login()
        cid, name = _publish_squares(server, token)
        proxied = f"{server.api}/docker/containers/proxy/{cid}"
        auth = {"Authorization": token}
        assert requests.get(f"{proxied}/health", headers=auth, timeout=60).status_code == 200  # started
        size = 200 * 2**20
        stalled += [_non_reader(server.port, token, cid, f"/bytes/{size}") for _ in range(8)]
        stalled += [_non_reader(server.port, token, cid, f"/chunked/{size}") for _ in range(4)]
        stalled += [_non_reader(server.port, token, cid, f"/bytes/{size}", pipelined=True) for _ in range(2)]
        time.sleep(1.5)  # the answers are under way and stuck
        stuck_at = time.monotonic()
        health, api = _probe(server, token, rounds=60)
        r = requests.get(f"{proxied}/square?number=3", headers=auth, timeout=10)
        print(f"\n14 clients not reading 200 MB answers (8 sized, 4 chunked, 2 pipelined): health p99 "
              f"{health * 1000:.1f} ms, API p99 {api * 1000:.1f} ms, a proxied request {r.status_code}")
        assert health < HANG and api < HANG
        assert r.status_code == 200 and r.json() == {"result": 9.0}
        # fill max_streams: the next proxied request is refused at once, the rest of the API is still served
        stalled += [_non_reader(server.port, token, cid, f"/bytes/{size}") for _ in range(2)]

        def refused():  # the two new answers take the last slots once the server has read their requests
            started = time.monotonic()
            r = requests.get(f"{proxied}/square?number=3", headers=auth, timeout=10)
            return (r, time.monotonic() - started) if r.status_code == 503 else None

        r, refused_in = wait_until(refused, 30, "a proxied request refused at max_streams", interval=0.2)
        print(f"at max_streams (16): a proxied request answers {r.status_code} in {refused_in * 1000:.1f} ms")
        assert r.status_code == 503 and r.json()["#type"] == "ApiError" and "max_streams" in r.json()["message"]
        assert refused_in < HANG
        assert requests.get(f"{server.url}/_grokemu/health", timeout=HANG).status_code == 200
        # after stream_timeout without progress the stuck answers are cut and the slots come back
        deadline = stuck_at + stream_timeout + 15
        while True:
            r = requests.get(f"{proxied}/square?number=3", headers=auth, timeout=10)
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, f"streams still held {time.monotonic() - stuck_at:.0f} s later"
            time.sleep(0.5)
        print(f"slots free again {time.monotonic() - stuck_at:.1f} s after the answers stalled "
              f"(stream_timeout {stream_timeout} s)")
        time.sleep(max(0.0, stuck_at + stream_timeout + 2 - time.monotonic()))  # every stuck answer is cut by now
        received = 0
        s = stalled[0]
        s.settimeout(3)
        try:
            while chunk := s.recv(2**20):
                received += len(chunk)
        except OSError:
            pass
        assert received < size  # cut, not waited for
    finally:
        _close_all(stalled)
        server.close()
        if name:
            tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"datagrok/{name}"],
                                  capture_output=True, text=True).stdout.split()
            for tag in tags:
                subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
