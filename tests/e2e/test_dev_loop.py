"""Issue 20 item 1: `grokemu dev PACKAGE_DIR` end to end, with the real Docker daemon: `grokemu dev` runs as a
subprocess against a `grokemu up` subprocess, its output read line by line with deadlines; fetchProxy is called
with plain HTTP and, for the new answer, through Datagrok's JS client (datagrok-api)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from grokemu.client import Client
from grokemu.testing import GrokemuProcess
from tests.e2e.test_publish_cli import copy_sample
from tests.helpers import ctrl_c_default, js_runner, remove_images, wait_until

pytestmark = pytest.mark.e2e

REPLACED = re.compile(r"runs sha256:\S+, ready")


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    proc = GrokemuProcess(tmp_path_factory.mktemp("dev") / "data", "--stop-timeout", "2").start()
    yield proc
    proc.close()


class Dev:
    """`grokemu dev FOLDER` as a subprocess; its output gathered by a reader thread, waited on with deadlines."""

    def __init__(self, server: GrokemuProcess, folder: Path, *extra: str):
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "grokemu", "dev", str(folder), "--url", server.url,
                                      *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=ctrl_c_default)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def since(self, mark: int) -> list[str]:
        with self._changed:
            return self.lines[mark:]

    def wait_for(self, pattern: str | re.Pattern, after: int = 0, timeout: float = 300) -> str:
        """The first line from `after` on that matches `pattern` (AssertionError with the output after `timeout`)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"no line matching {regex.pattern!r}; dev printed:\n{self.text}")
                self._changed.wait(min(remaining, 1.0))

    def interrupt(self, timeout: float = 120) -> int:
        """Ctrl-C: SIGINT, then its exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def dev_of(server, tmp_path):
    started: list[tuple[Dev, str]] = []

    def start(*extra: str) -> tuple[Dev, Path, str, dict]:
        folder, short = copy_sample(tmp_path, "squares")
        dev = Dev(server, folder, *extra)
        started.append((dev, short))
        dev.wait_for("^watching ")
        token = server.login()
        [c] = requests.get(f"{server.api}/docker/containers", params={"text": short},
                           headers={"Authorization": token}, timeout=30).json()
        return dev, folder, short, c

    yield start
    for dev, short in started:
        dev.close()
        # the containers first: an image a container still uses would be left behind untagged
        Client(server.url).delete_package(f"@grokemu/{short}")
        remove_images(short)


def proxied(server, cid: str, path: str) -> requests.Response:
    return requests.get(f"{server.api}/docker/containers/proxy/{cid}/{path.lstrip('/')}",
                        headers={"Authorization": server.login()}, timeout=120)


def snapshot_container(server, cid: str) -> dict:
    snap = requests.get(f"{server.url}/_grokemu/dashboard/snapshot", headers={"Authorization": server.login()},
                        timeout=30).json()
    return next(c for c in snap["containers"] if c["id"] == cid)


def test_an_edited_route_answers_through_fetch_proxy_with_the_same_container_id(server, dev_of):
    dev, folder, short, c = dev_of()
    assert c["status"] == "started", dev.text  # dev started it (squares is on_demand)
    assert f"{short}-squares  started  {server.api}/docker/containers/proxy/{c['id']}/" in dev.text  # status line
    assert proxied(server, c["id"], "/square?number=4").json() == {"result": 16.0}
    before = snapshot_container(server, c["id"])["grokemu"]["runningImageId"]

    app = folder / "dockerfiles" / "squares" / "app.py"
    app.write_text(app.read_text().replace('{"result": number * number}', '{"result": number * number + 1}'))
    mark = dev.mark()
    wait_until(lambda: proxied(server, c["id"], "/square?number=4").json() == {"result": 17.0}, 300,
               "the edited route's answer through fetchProxy")
    dev.wait_for("^built datagrok/", after=mark)
    dev.wait_for(REPLACED, after=mark)

    token = server.login()
    containers = requests.get(f"{server.api}/docker/containers", params={"text": short},
                              headers={"Authorization": token}, timeout=30).json()
    assert [x["id"] for x in containers] == [c["id"]]  # the same entity: plugin code keeps its id
    after = snapshot_container(server, c["id"])
    assert after["status"] == "started" and after["grokemu"]["runningImageId"] not in (None, before)
    js = js_runner(server.api, token)
    answer = js(f"""
        const r = await grok.dapi.docker.dockerContainers.fetchProxy('{c['id']}', '/square?number=5',
                                                                     {{headers: {{Authorization: token}}}});
        return {{status: r.status, body: await r.json()}};""")
    assert answer == {"status": 200, "body": {"result": 26.0}}
    dev.wait_for(rf"^{short}-squares  started  \S+  last request 200 ", timeout=60)  # the status line keeps up

    assert dev.interrupt() == 130  # Ctrl-C: exit 130, no traceback, the stand left as it is
    assert "Traceback" not in dev.text
    assert "stopped watching" in dev.text
    assert proxied(server, c["id"], "/square?number=4").json() == {"result": 17.0}


def test_a_broken_dockerfile_keeps_the_old_container_answering(server, dev_of):
    dev, folder, short, c = dev_of("--clean")
    assert proxied(server, c["id"], "/square?number=3").json() == {"result": 9.0}
    running = snapshot_container(server, c["id"])["grokemu"]["runningImageId"]

    dockerfile = folder / "dockerfiles" / "squares" / "Dockerfile"
    good = dockerfile.read_text()
    dockerfile.write_text(good.replace("EXPOSE", "RUN echo broken-on-purpose && exit 3\nEXPOSE"))
    mark = dev.mark()
    failed = dev.wait_for("FAILED", after=mark)
    assert "the previous container keeps serving" in failed
    dev.wait_for("returned a non-zero code: 3", after=mark)  # the build error, printed
    dev.wait_for("nothing uploaded", after=mark)
    dev.wait_for("FAILED, the previous image serves: the build failed: ", after=mark)  # on the status line
    assert proxied(server, c["id"], "/square?number=3").json() == {"result": 9.0}
    now = snapshot_container(server, c["id"])
    assert now["status"] == "started" and now["grokemu"]["runningImageId"] == running

    dockerfile.write_text(good)  # fixed: the next build replaces the container again
    mark = dev.mark()
    dev.wait_for(REPLACED, after=mark)
    assert proxied(server, c["id"], "/square?number=3").json() == {"result": 9.0}

    assert dev.interrupt() == 130
    dev.wait_for("^clean: ")
    token = server.login()
    for kind in ("images", "containers"):
        left = requests.get(f"{server.api}/docker/{kind}", params={"text": short}, headers={"Authorization": token},
                            timeout=30).json()
        assert left == [], (kind, left)
    local = subprocess.run(["docker", "images", "-q", f"datagrok/{short}-squares"], capture_output=True, text=True)
    assert local.stdout.strip() == ""


def test_an_app_that_no_longer_starts_keeps_the_old_container_answering(server, dev_of):
    """The build succeeds but the new container exits before it is ready (a syntax error in app.py): it is removed,
    the old one keeps answering, with its key, and the next good save replaces it."""
    dev, folder, short, c = dev_of()
    assert proxied(server, c["id"], "/datagrok").json()["status"] == 200  # it calls back with its USER_API_KEY
    app = folder / "dockerfiles" / "squares" / "app.py"
    good = app.read_text()
    mark = dev.mark()
    app.write_text(good + "\nthis is not python(\n")
    failed = dev.wait_for("the new build did not come up, the previous container keeps serving", after=mark)
    assert "SyntaxError" in failed or "exited" in failed, failed
    dev.wait_for("FAILED, the previous image serves: its new container failed", after=mark)
    assert proxied(server, c["id"], "/square?number=6").json() == {"result": 36.0}
    assert proxied(server, c["id"], "/datagrok").json()["status"] == 200  # its key still works
    assert len(subprocess.run(["docker", "ps", "-aq", "--filter", f"label=grokemu.container={c['id']}"],
                              capture_output=True, text=True).stdout.split()) == 1  # the failed one is gone

    mark = dev.mark()
    app.write_text(good.replace('{"result": number * number}', '{"result": -1}'))
    dev.wait_for(REPLACED, after=mark)
    assert proxied(server, c["id"], "/square?number=6").json() == {"result": -1}


def test_a_burst_of_ten_saves_makes_one_rebuild(server, dev_of):
    # 10 writes in a row take microseconds; a quiet time of 3 s keeps them one burst however loaded the machine
    dev, folder, short, c = dev_of("--quiet-ms", "3000")
    app = folder / "dockerfiles" / "squares" / "app.py"
    source = app.read_text()
    mark = dev.mark()
    for i in range(10):
        app.write_text(source.replace('{"result": "Healthy"}', f'{{"result": "Healthy {i}"}}'))
    dev.wait_for(REPLACED, after=mark)
    assert proxied(server, c["id"], "/health").json() == {"result": "Healthy 9"}
    # the burst's batch done (its upload too): a save before that would ride in the same upload
    dev.wait_for("^up to date", after=mark)
    # a change outside dockerfiles/ after it: any rebuild still owed to the burst would come before its upload
    (folder / "package.js").write_text((folder / "package.js").read_text() + "\n// after the burst\n")
    dev.wait_for("^uploaded .*1 changed file", after=dev.mark())
    builds = [line for line in dev.since(mark) if line.startswith("build datagrok/")]
    assert len(builds) == 1, dev.since(mark)


def test_an_edit_outside_dockerfiles_reuploads_without_a_rebuild(server, dev_of):
    dev, folder, short, c = dev_of()
    token = server.login()
    assert proxied(server, c["id"], "/square?number=2").json() == {"result": 4.0}
    service = requests.get(f"{server.api}/docker/containers/{c['id']}", headers={"Authorization": token},
                           timeout=30).json()["serviceName"]
    docker_id = json.loads(subprocess.run(["docker", "inspect", service], capture_output=True, text=True,
                                          check=True).stdout)[0]["Id"]
    meta = json.loads((folder / "package.json").read_text())
    package_js = folder / "package.js"
    package_js.write_text(package_js.read_text() + "\n//name: devProbe\nexport function devProbe() { return 1; }\n")
    mark = dev.mark()
    uploaded = dev.wait_for("^uploaded ", after=mark)
    assert "1 changed file(s)" in uploaded
    assert not [line for line in dev.since(mark) if line.startswith("build ")], dev.since(mark)
    # the server has the new file's timestamp (the grok CLI's next delta reads it), and the same container runs
    stamps = requests.get(f"{server.api}/packages/dev/{meta['name']}/timestamps",
                          headers={"Authorization": "Dev admin"}, timeout=30).json()
    from email.utils import formatdate

    assert stamps["package.js"] == formatdate(package_js.stat().st_mtime, usegmt=True)
    wait_until(lambda: requests.get(f"{server.api}/docker/images", params={"text": short},
                                    headers={"Authorization": token}, timeout=30).json()[0]["status"] == "ready",
               120, "the image revalidated after the upload")
    again = json.loads(subprocess.run(["docker", "inspect", service], capture_output=True, text=True,
                                      check=True).stdout)[0]["Id"]
    assert again == docker_id
    assert proxied(server, c["id"], "/square?number=2").json() == {"result": 4.0}
