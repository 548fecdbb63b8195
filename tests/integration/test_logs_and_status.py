"""Issue 20 item 4: `GET /_grokemu/logs` (a container by any name, tailed, followed), and the CLI's `grokemu status`
and `grokemu logs NAME [-f] [--tail N]` against a running grokemu. No Docker: the route is called through the Flask
test client, the CLI against the real server in this process (ThreadedGrokemu) on the in-memory orchestrator."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.client import Client
from grokemu.domain.clock import ManualClock, iso
from grokemu.testing import ThreadedGrokemu
from tests.helpers import ctrl_c_default, free_port, hello_package, package_zip, wait_until


def publish(client, name: str, **kw) -> None:
    r = client.post(f"/api/packages/dev/{name}?debug=true", data=package_zip(hello_package(name, **kw)),
                    headers={"Authorization": "Dev admin"})
    assert r.status_code == 200, r.get_json()


def two_folders(name: str) -> dict:
    files = hello_package(name, folder="api")
    files.update({k.replace("/api/", "/worker/"): v for k, v in files.items() if k.startswith("dockerfiles/")})
    return files


@pytest.fixture
def started(client, ctx, orchestrator):
    """A started container of @acme/logs (docker folder `web`) that has printed two lines."""
    publish(client, "@acme/logs", folder="web")
    ctx.scheduler.run_once()  # validates the image; the container (not on_demand) starts
    [c] = ctx.store.list_containers()
    assert c.status.value == "started"
    orchestrator.emit(c.docker_id, "first line\n")
    orchestrator.emit(c.docker_id, "second line\n")
    return c


def logs(client, token, **query):
    return client.get("/_grokemu/logs", query_string=query, headers={"Authorization": token})


def test_logs_of_a_container_by_any_of_its_names(client, token, started):
    for name in (started.id, started.name, "web", "@acme/logs", "datagrok/logs-web:1.0.0"):
        r = logs(client, token, container=name)
        assert r.status_code == 200, (name, r.get_json())
        assert r.get_data(as_text=True).endswith("first line\nsecond line\n"), name
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert r.headers["X-Grokemu-Container"] == started.id
    assert logs(client, token, container="web", tail="1").get_data() == b"second line\n"
    assert logs(client, token, container="web", tail="0").get_data() == b""
    assert logs(client, token, container="web", tail="all").get_data(as_text=True).endswith("second line\n")


def test_logs_errors_are_api_errors(client, token, ctx, started):
    r = logs(client, token, container="nope")
    assert r.status_code == 404 and r.get_json()["#type"] == "ApiError"
    assert r.get_json()["message"].startswith("no container 'nope' among ['logs-web']")
    for query, said in (({}, "Say which container"), ({"container": "web", "tail": "-1"}, "tail must be"),
                        ({"container": "web", "tail": "ten"}, "tail must be"),
                        ({"container": "web", "follow": "maybe"}, "follow must be true or false")):
        r = logs(client, token, **query)
        assert r.status_code == 400 and said in r.get_json()["message"], (query, r.get_json())
    r = client.post("/api/packages/dev/@acme/two?debug=true", data=package_zip(two_folders("@acme/two")),
                    headers={"Authorization": "Dev admin"})
    assert r.status_code == 200
    ctx.scheduler.run_once()
    r = logs(client, token, container="@acme/two")
    assert r.status_code == 400
    message = r.get_json()["message"]
    assert "'@acme/two' names 2 containers" in message and "'two-api'" in message and "'two-worker'" in message
    assert client.get("/_grokemu/logs?container=web").status_code == 401  # a session, as every /_grokemu route


def test_a_follow_brings_new_lines_and_ends_when_the_container_stops(client, token, orchestrator, started):
    attached = orchestrator.log_streams_opened

    def later():  # once the follow is attached: a line printed before it would be the tail instead
        wait_until(lambda: orchestrator.log_streams_opened > attached or None, 20, "the follow attached")
        orchestrator.emit(started.docker_id, "third line\n")
        orchestrator.stop(started.docker_id)

    threading.Thread(target=later, daemon=True).start()
    r = logs(client, token, container="web", follow="true", tail="1")  # the test client reads to the end
    assert r.status_code == 200
    # stopped behind grokemu's back (the entity still says started): the last line says how it ended
    assert r.get_data() == b"second line\nthird line\nstopped\n[grokemu] the container exited with code 0\n"


def test_a_follow_of_a_container_killed_for_memory_ends_saying_so(client, token, ctx, orchestrator, started):
    attached = orchestrator.log_streams_opened

    def later():  # once the follow is attached (with tail 0, a crash before it would be read as nothing)
        wait_until(lambda: orchestrator.log_streams_opened > attached or None, 20, "the follow attached")
        orchestrator.crash(started.docker_id, log="allocating 400 MB\n", oom_killed=True)

    threading.Thread(target=later, daemon=True).start()
    r = logs(client, token, container="web", follow="true", tail="0")
    memory = started.config.get("memory") or 512
    assert r.get_data().decode() == ("allocating 400 MB\n[grokemu] the container was killed for running out of "
                                     f"memory: its limit is {memory:g} MB (container.json `memory`)\n")
    ctx.spawner.tick()  # the watch: error, removed, the logs kept
    c = ctx.store.get_container(started.id)
    assert c.status.value == "error" and c.docker_id == ""
    r = logs(client, token, container="web")
    assert r.get_data().decode().endswith("allocating 400 MB\n[grokemu] the container was killed for running out "
                                          f"of memory: its limit is {memory:g} MB (container.json `memory`)\n")


def test_a_stop_by_grokemu_adds_no_line(client, token, ctx, started):
    ctx.spawner.stop(started.id)
    ctx.scheduler.run_once()
    assert not logs(client, token, container="web").get_data(as_text=True).count("[grokemu]")


def test_a_stopped_container_has_the_logs_kept_on_it(client, token, ctx, started):
    ctx.spawner.stop(started.id)
    ctx.scheduler.run_once()
    assert ctx.store.get_container(started.id).docker_id == ""
    r = logs(client, token, container="web", follow="true")  # nothing runs: the kept logs, and the end
    assert r.status_code == 200 and r.get_data(as_text=True).endswith("second line\n")


# -- the CLI against a running grokemu ------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path):
    orchestrator = MemoryOrchestrator()
    with ThreadedGrokemu(tmp_path / "data", orchestrator=orchestrator) as running:
        running.orchestrator = orchestrator
        yield running


def grokemu_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "grokemu", *args], capture_output=True, text=True, timeout=60,
                          **kw)


def upload(server, name: str, files: dict) -> list[dict]:
    client = Client(server.url)
    client.upload(name, {k: v.encode() if isinstance(v, str) else v for k, v in files.items()})
    client.wait_images(name, timeout=30)
    def all_started():  # every container, not the first one up (two folders start one after the other)
        found = client.containers(name)
        return found if found and all(c["status"] == "started" for c in found) else None

    return wait_until(all_started, 10, f"the containers of {name} started")


@pytest.fixture
def timed_server(tmp_path):
    """A server whose clock the test moves (the SINCE column is an age by the server's clock)."""
    orchestrator, clock = MemoryOrchestrator(), ManualClock()
    with ThreadedGrokemu(tmp_path / "data", orchestrator=orchestrator, clock=clock) as running:
        running.orchestrator = orchestrator
        yield running


def test_status_prints_containers_and_images_as_aligned_tables(timed_server):
    server, clock = timed_server, timed_server.clock
    upload(server, "@acme/status", hello_package("@acme/status", folder="web"))
    clock.advance(3 * 3600 + 59 * 60)  # the age is the largest whole unit
    [worker, api] = sorted(upload(server, "@acme/two", two_folders("@acme/two")), key=lambda c: c["name"],
                           reverse=True)
    clock.advance(125)
    done = grokemu_cli("status", "--url", server.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"grokemu 0.1.0 at {server.url} (Docker daemon reachable)"
    head = lines.index(next(line for line in lines if line.startswith("CONTAINER")))
    table = lines[head:head + 4]
    assert table[0].split() == ["CONTAINER", "PACKAGE", "STATUS", "SINCE", "URL"]
    assert [row.split()[0] for row in table[1:]] == ["status-web", "two-api", "two-worker"]
    for column in ("PACKAGE", "STATUS", "SINCE", "URL"):  # every row's cell starts under its header
        at = table[0].index(column)
        assert all(row[at - 2:at] == "  " and row[at] != " " for row in table[1:]), (column, table)
    at = table[0].index("SINCE")
    assert [row[at:].split("  ")[0] for row in table[1:]] == ["4h ago", "2m ago", "2m ago"]
    assert table[2].endswith(f"  {server.api}/docker/containers/proxy/{api['id']}/")
    assert table[3].split()[1:3] == ["@acme/two", "started"]
    assert lines[head + 4] == ""  # one row per container
    images = lines[lines.index(next(line for line in lines if line.startswith("IMAGE"))):]
    assert images[0].split() == ["IMAGE", "PACKAGE", "TAG", "STATUS", "SINCE", "REFERENCE"]
    assert images[1].split() == ["status-web", "@acme/status", "1.0.0", "ready", "4h", "ago",
                                 "datagrok/status-web:1.0.0"]
    assert [row.split()[0] for row in images[1:]] == ["status-web", "two-api", "two-worker"]

    as_json = json.loads(grokemu_cli("status", "--json", "--url", server.url).stdout)
    assert as_json["docker"] is True and as_json["url"] == server.url
    assert [c["name"] for c in as_json["containers"]] == ["status-web", "two-api", "two-worker"]
    entity = server.context.store.get_container(worker["id"])
    assert as_json["containers"][2] == {"id": worker["id"], "name": "two-worker", "package": "@acme/two",
                                        "status": "started", "statusSince": iso(entity.status_since),
                                        "statusAge": "2m ago", "url": Client(server.url).proxy_url(worker["id"]),
                                        "error": None}
    assert {i["name"] for i in as_json["images"]} == {"status-web", "two-api", "two-worker"}
    assert {i["tag"] for i in as_json["images"]} == {"1.0.0"}


def test_status_and_logs_find_grokemu_as_publish_does(server):
    env = {**os.environ, "GROKEMU_URL": server.url, "GROKEMU_KEY": "admin"}
    done = grokemu_cli("status", env=env)
    assert done.returncode == 0 and "no containers" in done.stdout and "no images" in done.stdout
    nowhere = f"http://127.0.0.1:{free_port()}"
    for command in (["status"], ["logs", "x"]):
        done = grokemu_cli(*command, "--url", nowhere)
        assert done.returncode == 1 and "could not be reached" in done.stderr, done.stderr
    done = grokemu_cli("status", "--url", server.url, "--key", "wrong")
    assert done.returncode == 1 and "401" in done.stderr


def test_logs_prints_the_tail_and_says_clearly_what_it_cannot_find(server):
    [c] = upload(server, "@acme/tail", hello_package("@acme/tail", folder="web"))
    docker_id = server.context.store.get_container(c["id"]).docker_id
    for n in range(5):
        server.orchestrator.emit(docker_id, f"line {n}\n")
    done = grokemu_cli("logs", "web", "--tail", "2", "--url", server.url)
    assert done.returncode == 0 and done.stdout == "line 3\nline 4\n", done.stderr
    assert grokemu_cli("logs", "@acme/tail", "--url", server.url).stdout.endswith("line 0\nline 1\nline 2\nline 3\n"
                                                                                  "line 4\n")
    done = grokemu_cli("logs", "nope", "--url", server.url)
    assert done.returncode == 2
    assert done.stderr == ("grokemu logs: no container 'nope' among ['tail-web'] (a container id, container name, "
                           "docker folder, package or image name)\n")
    upload(server, "@acme/two", two_folders("@acme/two"))
    done = grokemu_cli("logs", "@acme/two", "--url", server.url)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("grokemu logs: '@acme/two' names 2 containers: 'two-api' (package @acme/two, id ")
    assert "'two-worker' (package @acme/two, id " in done.stderr
    for name in ("two-api", "worker", "datagrok/two-worker:1.0.0"):  # each of them by a name of its own
        assert grokemu_cli("logs", name, "--url", server.url).returncode == 0, name
    assert grokemu_cli("logs", "web", "--tail", "x").returncode == 2  # argparse: a number or 'all'


def line_reader(proc) -> queue.Queue:
    """The lines `proc` prints, on a queue (None once it closes its output): each is awaited with a deadline, so a
    line that never comes fails the test instead of hanging it."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_logs_follow_prints_new_lines_until_the_container_stops(server):
    [c] = upload(server, "@acme/follow", hello_package("@acme/follow", folder="web"))
    docker_id = server.context.store.get_container(c["id"]).docker_id
    server.orchestrator.emit(docker_id, "before\n")
    follower = subprocess.Popen([sys.executable, "-m", "grokemu", "logs", "-f", "--tail", "1", "web", "--url",
                                 server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=ctrl_c_default)
    lines = line_reader(follower)
    try:
        # the tail line says the follow is attached: what the container prints from now on is followed
        assert lines.get(timeout=20) == b"before\n"
        assert server.serving.takeover.streams.busy == 1  # on a stream thread, not a waitress worker
        server.orchestrator.emit(docker_id, "new line\n")
        assert lines.get(timeout=20) == b"new line\n"  # as it comes, not when the answer ends
        Client(server.url).stop(c["id"])
        assert lines.get(timeout=20) == b"stopped\n"
        assert lines.get(timeout=20) is None
        assert follower.wait(timeout=20) == 0, follower.stderr.read()
    finally:
        follower.kill()
        follower.wait()
    wait_until(lambda: server.serving.takeover.streams.busy == 0 or None, 10, "the stream thread released")


def test_a_follower_that_leaves_frees_its_stream(server):
    """Ctrl-C: the CLI exits 130; the server sees the caller gone at its next quiet tick and ends the follow."""
    [c] = upload(server, "@acme/leave", hello_package("@acme/leave", folder="web"))
    follower = subprocess.Popen([sys.executable, "-m", "grokemu", "logs", "-f", "web", "--url", server.url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_default)
    lines = line_reader(follower)
    try:
        assert lines.get(timeout=20).startswith(b"started ")
        assert server.serving.takeover.streams.busy == 1
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 130
        assert follower.stderr.read() == b""  # no traceback, nothing at all
    finally:
        follower.kill()
        follower.wait()
    wait_until(lambda: server.serving.takeover.streams.busy == 0 or None, 10, "the stream thread released")
    assert Client(server.url).container(c["id"])["status"] == "started"  # leaving stops nothing


def test_ctrl_c_while_waiting_for_grokemu_exits_130_without_a_traceback():
    """A server that accepts and never answers: once the connection is in, the CLI is inside its request."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(30)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        for command in (["status"], ["logs", "web"]):
            proc = subprocess.Popen([sys.executable, "-m", "grokemu", *command, "--url", url],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_default)
            try:
                conn, _ = silent.accept()  # the sign-in request has arrived
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=30)
                conn.close()
                assert (proc.returncode, out, err) == (130, b"", b""), (command, err)
            finally:
                proc.kill()
                proc.wait()
