"""Issue: `grokemu up` + the real `grok publish`. The real CLI (datagrok-tools 6.7.5) publishes a sample package
in debug mode, again with a changed file (delta upload), and with --release; the images become ready."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "squares"


@pytest.fixture
def package(tmp_path):
    """A copy of samples/squares under a unique name, so its image tags are this test's alone."""
    suffix = uuid.uuid4().hex[:6]
    pkg = tmp_path / "pkg"
    shutil.copytree(SAMPLE, pkg)
    meta = json.loads((pkg / "package.json").read_text())
    meta["name"] = f"@grokemu/sq{suffix}"
    (pkg / "package.json").write_text(json.dumps(meta))
    yield pkg, f"sq{suffix}-squares"
    for tag in ("admin", "1.0.0"):
        subprocess.run(["docker", "rmi", "-f", f"sq{suffix}-squares:{tag}"], capture_output=True)
    tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"datagrok/sq{suffix}-squares"],
                          capture_output=True, text=True).stdout.split()
    for tag in tags:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def wait_images(server, token, name, want=("ready", "error"), timeout=180):
    deadline = time.time() + timeout
    while True:
        found = requests.get(f"{server.api}/docker/images", params={"text": name},
                             headers={"Authorization": token}).json()
        if found and all(i["status"] in want for i in found):
            return found
        if time.time() > deadline:
            raise AssertionError(f"images not {want} after {timeout}s: {found}")
        time.sleep(0.2)


def test_grok_publish_debug_delta_release(grokemu_server, grok, package, base_image):
    pkg, image_name = package
    server = grokemu_server
    added = grok("config", "add", "--alias", "emu", "--server", server.api, "--key", "admin", "--default")
    assert added.returncode == 0, added.stderr

    first = grok("publish", "emu", cwd=pkg)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Published" in first.stdout
    token = server.login()
    [image] = wait_images(server, token, image_name)
    assert image["status"] == "ready", image["logs"]
    assert image["version"] == "admin"  # debug publish tags with the user's login
    assert image["dockerFullName"] == f"datagrok/{image_name}:admin"
    [container] = requests.get(f"{server.api}/docker/containers", params={"text": image_name},
                               headers={"Authorization": token}).json()
    assert container["dockerfile"]["id"] == image["id"]

    # delta upload: only the changed file (plus image.json and timestamps.json) is sent
    app = pkg / "dockerfiles" / "squares" / "app.py"
    app.write_text(app.read_text() + "\n# changed\n")
    later = time.time() + 5
    os.utime(app, (later, later))
    second = grok("publish", "emu", "-v", cwd=pkg)
    assert second.returncode == 0 and "Published" in second.stdout, second.stdout + second.stderr
    assert "Skipping package.json" in second.stdout
    stored = server.data_dir / "packages"
    [pkg_dir] = [p for p in stored.iterdir() if not p.name.startswith(".")]
    [pkg_dir] = list(pkg_dir.iterdir())  # the one files version the package's row points at
    assert (pkg_dir / "package.json").exists()  # kept from the first upload
    assert (pkg_dir / "dockerfiles/squares/app.py").read_text().endswith("# changed\n")
    [image] = wait_images(server, token, image_name)
    assert image["status"] == "ready", image["logs"]

    third = grok("publish", "emu", "--release", cwd=pkg)
    assert third.returncode == 0 and "Published" in third.stdout, third.stdout + third.stderr
    [image] = wait_images(server, token, image_name)
    assert image["status"] == "ready", image["logs"]
    # The release build asks latest-compatible for version 1.0.0 with the folder's content hash; the debug image
    # has the same hash, so the CLI reuses it instead of building (docs/grok-publish.md §2.3 'dockerfile unchanged').
    assert "Falling back to datagrok/" in third.stdout and "dockerfile unchanged" in third.stdout
    assert image["version"] == "admin"

    # A changed Dockerfile folder no longer matches: the CLI builds <version> and tags <version>.<hash8>.
    app.write_text(app.read_text() + "\n# changed again\n")
    fourth = grok("publish", "emu", "--release", cwd=pkg)
    assert fourth.returncode == 0 and "Published" in fourth.stdout, fourth.stdout + fourth.stderr
    [image] = wait_images(server, token, image_name)
    assert image["status"] == "ready", image["logs"]
    assert image["version"].startswith("1.0.0.")  # release tag: <version>.<first 8 hex of the content hash>
    assert image["contentHash"].startswith(image["version"].split(".")[-1])


def test_grok_publish_without_docker_cli_grokemu_builds_with_labels(grokemu_server, grok, package, base_image,
                                                                    tmp_path):
    """A CLI that cannot run docker sends `image: null`; grokemu builds the Dockerfile itself and labels it."""
    pkg, image_name = package
    shim = tmp_path / "no-docker"
    shim.mkdir()
    (shim / "docker").write_text("#!/bin/sh\necho 'docker: not available here' >&2\nexit 1\n")
    (shim / "docker").chmod(0o755)
    env = {"PATH": f"{shim}:{os.environ['PATH']}"}
    grok("config", "add", "--alias", "emu", "--server", grokemu_server.api, "--key", "admin", "--default")
    result = grok("publish", "emu", cwd=pkg, env=env)
    assert result.returncode == 0 and "Published" in result.stdout, result.stdout + result.stderr
    token = grokemu_server.login()
    [image] = wait_images(grokemu_server, token, image_name)
    assert image["status"] == "ready", image["logs"]
    assert "Successfully built" in image["logs"]
    labels = json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}",
                                        image["dockerFullName"]], capture_output=True, text=True, check=True).stdout)
    assert labels["grokemu.managed"] == "true" and labels["grokemu.instance"] == grokemu_server.instance
    assert labels["grokemu.package"].startswith("@grokemu/sq")


@pytest.mark.parametrize("mutate, message", [
    (lambda pkg: (pkg / "dockerfiles/squares/container.json").write_text("{broken"), "not valid JSON"),
    (lambda pkg: (pkg / "dockerfiles/squares/container.json").write_text('{"memory": "big"}'), "'memory' must be"),
])
def test_grok_publish_prints_api_errors(grokemu_server, grok, package, mutate, message):
    pkg, image_name = package
    mutate(pkg)
    grok("config", "add", "--alias", "emu", "--server", grokemu_server.api, "--key", "admin", "--default")
    result = grok("publish", "emu", "--skip-check", cwd=pkg, env={"PATH": f"/nonexistent:{os.environ['PATH']}"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    token = grokemu_server.login()
    assert requests.get(f"{grokemu_server.api}/docker/images", headers={"Authorization": token}).json() == []


def test_grok_publish_failing_build_ends_in_error(grokemu_server, grok, package, tmp_path):
    """A Dockerfile that does not build: the CLI's own build fails, it falls back to image null, grokemu tries
    the build, and the image ends `error` with the build output."""
    pkg, image_name = package
    (pkg / "dockerfiles/squares/Dockerfile").write_text("FROM scratch\nCOPY does-not-exist.txt /\nEXPOSE 5353\n")
    grok("config", "add", "--alias", "emu", "--server", grokemu_server.api, "--key", "admin", "--default")
    result = grok("publish", "emu", cwd=pkg)
    assert result.returncode == 0, result.stdout + result.stderr  # docker failures never fail publish (docs/grok-publish.md §2.3)
    token = grokemu_server.login()
    [image] = wait_images(grokemu_server, token, image_name)
    assert image["status"] == "error"
    assert "does-not-exist.txt" in image["logs"]


def test_grok_publish_through_grokemus_registry(grokemu_server, grok, package, base_image):
    """`grok config add ... --registry localhost:<port>`: the CLI logs in with the dev key, pushes
    localhost:<port>/datagrok/<image>:<tag> and uploads; grokemu finds the image in its own registry."""
    pkg, image_name = package
    registry = f"localhost:{grokemu_server.port}"
    added = grok("config", "add", "--alias", "emu", "--server", grokemu_server.api, "--key", "admin",
                 "--registry", registry, "--default")
    assert added.returncode == 0, added.stdout + added.stderr
    result = grok("publish", "emu", cwd=pkg)
    try:
        assert result.returncode == 0 and "Published" in result.stdout, result.stdout + result.stderr
        assert "was not published" not in result.stdout  # the push went through
        token = grokemu_server.login()
        [image] = wait_images(grokemu_server, token, image_name)
        assert image["status"] == "ready", image["logs"]
        assert image["digest"] and image["digest"].startswith("sha256:")
        assert "grokemu's registry" in image["logs"]
        tags = requests.get(f"{grokemu_server.url}/v2/datagrok/{image_name}/tags/list").json()
        assert tags["tags"] == ["admin"]
        head = requests.head(f"{grokemu_server.url}/v2/datagrok/{image_name}/manifests/admin",
                             headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        assert head.headers["Docker-Content-Digest"] == image["digest"]
    finally:
        subprocess.run(["docker", "rmi", "-f", f"{registry}/datagrok/{image_name}:admin"], capture_output=True)
