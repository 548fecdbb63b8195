"""Shared test helpers: package ZIPs as the grok CLI builds them, and the Docker requirement."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests

REQUIRE_DOCKER = os.environ.get("GROKEMU_REQUIRE_DOCKER") == "1"


def package_zip(files: dict[str, bytes | str], duplicates: dict[str, bytes | str] | None = None) -> bytes:
    """A raw ZIP like `grok publish` sends (deflate; duplicate entry names allowed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about duplicate names; the CLI really sends them
            for name, data in (duplicates or {}).items():
                z.writestr(name, data)
    return buf.getvalue()


def hello_package(name: str = "@acme/grokprobe", version: str = "1.0.0", *, dockerfile: str | None = None,
                  container: dict | str | None = None, image_json: dict | None = None,
                  folder: str = "hello") -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {
        "package.json": json.dumps({"name": name, "version": version, "description": "probe"}),
        "package.js": "//name: probeInfo\nexport function probeInfo() { return 'ok'; }\n",
        f"dockerfiles/{folder}/Dockerfile": dockerfile or "FROM scratch\nCOPY hello.txt /hello.txt\nEXPOSE 8000\n",
        f"dockerfiles/{folder}/hello.txt": "hello\n",
    }
    if container is not None:
        files[f"dockerfiles/{folder}/container.json"] = container if isinstance(container, str) else json.dumps(container)
    if image_json is not None:
        files[f"dockerfiles/{folder}/image.json"] = json.dumps(image_json)
    return files


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def require(condition: bool, what: str) -> None:
    """Skip when something a test needs is missing, but fail in CI (GROKEMU_REQUIRE_DOCKER=1): docker and e2e
    tests must never silently skip there."""
    if condition:
        return
    if REQUIRE_DOCKER:
        pytest.fail(f"{what} is required (GROKEMU_REQUIRE_DOCKER=1) but missing")
    pytest.skip(f"{what} not available")


# -- against a running grokemu (e2e, security, benchmarks) ---------------------------------------------------------
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """Call `check` until it returns something truthy (returned) or `timeout` seconds pass (AssertionError naming
    `what` and the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g} s (last seen: {value!r})")
        time.sleep(interval)


def sample_copy(sample: str, *, container: dict | None = None, edit=None) -> tuple[str, dict[str, bytes]]:
    """(package name, files) of samples/<sample> under a unique package name; `container` entries are merged into its
    container.json; `edit(files)` may change files further."""
    root = SAMPLES / sample
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    meta = json.loads(files["package.json"])
    meta["name"] = f"@grokemu/{sample.replace('-', '')}{uuid.uuid4().hex[:6]}"
    files["package.json"] = json.dumps(meta).encode()
    if container:
        [path] = [k for k in files if k.endswith("container.json")]
        files[path] = json.dumps({**json.loads(files[path]), **container}).encode()
    if edit:
        edit(files)
    return meta["name"], files


def entities(api: str, token: str, kind: str, text: str) -> list[dict]:
    """GET /docker/<kind> filtered by `text` (kind: images | containers)."""
    r = requests.get(f"{api}/docker/{kind}", params={"text": text}, headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def publish_ready(api: str, token: str, name: str, files: dict, *, debug: bool = True, timeout: float = 180) -> dict:
    """Upload a package as `grok publish` does, wait until its one image is validated, and return its container
    (AssertionError with the build log if the image ends in error)."""
    r = requests.post(f"{api}/packages/dev/{name}?debug={'true' if debug else 'false'}", data=package_zip(files),
                      headers={"Authorization": "Dev admin"}, timeout=60)
    assert r.status_code == 200, r.text
    short = name.split("/")[-1]
    [image] = wait_until(lambda: [i for i in entities(api, token, "images", short)
                                  if i["status"] in ("ready", "error")], timeout, f"image of {name} validated")
    assert image["status"] == "ready", image.get("logs")
    [container] = entities(api, token, "containers", short)
    return container


def swarm_state() -> str:
    out = subprocess.run(["docker", "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def swarm():
    """A single-node swarm on loopback: initialised when the daemon is in none, and left afterwards only then."""
    require(docker_available(), "a Docker daemon")
    created = False
    state = swarm_state()
    if state.startswith("inactive"):
        init = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True,
                              text=True, timeout=60)
        require(init.returncode == 0, f"a swarm manager (docker swarm init failed: {init.stderr.strip()})")
        created = True
    else:
        require(state == "active true", f"a swarm manager (this daemon is {state!r})")
    yield
    if created:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60)


def free_port() -> int:
    """A loopback port nothing listens on right now (for a server whose address must be known before it starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2) -> bool:
    """Does the grokemu at `url` answer its public health check?"""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/_grokemu/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def package_folder(files: dict, folder: Path) -> Path:
    """Write a package's files as the grok CLI expects a package folder (with the `.npmignore` it insists on)."""
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data if isinstance(data, bytes) else data.encode())
    (folder / ".npmignore").write_text("")
    return folder


def remove_images(*shorts: str) -> None:
    """Remove every local image whose reference contains one of `shorts` (the unique names tests publish under)."""
    refs = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                          text=True).stdout.split()
    for ref in refs:
        if any(short in ref for short in shorts):
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def publish_queue_worker(api: str, token: str, timeout: float = 600) -> dict:
    """samples/queue's hand-written worker under a unique name (its python/ folder left out: only the grok CLI turns
    that into a worker), validated; its container with `namespace_`, the prefix callers write (`QueueDemoAb12cd:`)."""
    suffix = uuid.uuid4().hex[:6]

    def edit(files):
        for path in [p for p in files if p.startswith("python/")]:
            del files[path]
        meta = json.loads(files["package.json"])
        meta["friendlyName"] = f"Queue Demo {suffix}"
        files["package.json"] = json.dumps(meta).encode()

    c = publish_ready(api, token, *sample_copy("queue", edit=edit), timeout=timeout)
    funcs = requests.get(f"{api}/docker/functions", headers={"Authorization": token}, timeout=30).json()
    c["namespace_"] = next(f["namespace"] for f in funcs if f["container"]["id"] == c["id"])
    return c
