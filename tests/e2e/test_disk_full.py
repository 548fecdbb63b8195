"""Issue 21 item 3: a full disk under the data directory, with the real clients. grokemu runs with its data directory
on a small tmpfs; a filler file takes the free space, then goes. Each write that meets the full disk fails with
507 (the OCI envelope for `docker push`, ApiError for `grok publish` and the API), leaves nothing behind in the data
directory, and the same action succeeds once the filler is gone (docs/faults.md §3).

Needs root (to mount the tmpfs) and a Docker daemon: CI (GROKEMU_REQUIRE_DOCKER=1) fails without them, a laptop
skips with the reason.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.e2e.test_registry_clients import DockerCli
from tests.helpers import SAMPLES, docker_available, remove_images, require, wait_until

pytestmark = pytest.mark.e2e

DISK_MB = 30
MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A DISK_MB tmpfs mounted under tmp_path, unmounted at the end whatever happened."""
    require(docker_available(), "a Docker daemon")
    require(os.geteuid() == 0, "root (to mount a small tmpfs as the data directory)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    require(mounted.returncode == 0, f"mounting a tmpfs ({mounted.stderr.strip()})")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture
def server(small_disk, tmp_path):
    proc = GrokemuProcess(small_disk / "data")
    proc.log_path = tmp_path / "grokemu.log"  # the log stays readable (and out of the count) when the disk is full
    proc.start()
    yield proc
    proc.close()


def fill(disk: Path, leave: int) -> Path:
    """Take all but `leave` bytes of the disk's free space with one file (`leave` 0: every last page)."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if free > leave:
            os.posix_fallocate(fd, os.fstat(fd).st_size, free - leave)
        if leave == 0:
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free <= leave + 64 * 1024
    return filler


def leftovers(data: Path) -> list[str]:
    """What a failed write may never leave in the data directory: an upload session, a blob whose bytes are not its
    digest, a temporary file of an atomic write, a package staging folder or package version folder."""
    found = []
    registry = data / "registry"
    found += [f"upload session {p.name}" for p in (registry / "uploads").iterdir()]
    for blob in (registry / "blobs").rglob("*"):
        if blob.is_file() and hashlib.sha256(blob.read_bytes()).hexdigest() != blob.name:
            found.append(f"partial blob {blob.relative_to(data)} ({blob.stat().st_size} bytes)")
    found += [f"temporary file {p.relative_to(data)}" for p in data.rglob(".tmp-*")]
    found += [f"package entry {p.relative_to(data)}" for p in (data / "packages").iterdir()]
    return found


def integrity(data: Path) -> str:
    with sqlite3.connect(f"file:{data / 'grokemu.db'}?mode=ro", uri=True) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def docker_login(tmp_path: Path, server) -> tuple[DockerCli, str]:
    docker = DockerCli(tmp_path / "docker-config")
    host = f"localhost:{server.port}"
    r = docker.login(host, "admin")
    assert r.returncode == 0, r.stderr
    return docker, host


def test_docker_push_onto_a_full_disk_fails_cleanly_and_succeeds_once_freed(server, small_disk, tmp_path):
    docker, host = docker_login(tmp_path, server)
    context = tmp_path / "image"
    context.mkdir()
    (context / "big.bin").write_bytes(os.urandom(8 * MiB))  # random: the layer stays 8 MiB compressed
    (context / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /big.bin\n")
    ref = f"{host}/e2e/diskfull:v1"
    docker.ok("build", "-q", "--label", "grokemu.test=1", "-t", ref, str(context))
    image_id = docker.ok("image", "inspect", "-f", "{{.Id}}", ref).strip()
    data = server.data_dir
    try:
        filler = fill(small_disk, leave=3 * MiB)
        failed = docker("push", ref, timeout=600)
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0, out
        # docker retries the layer 5 times, then prints the status: distribution's client reads the OCI envelope
        # of a 4xx only (its message is in grokemu's log and reaches clients that read it, tests/integration)
        assert "507 INSUFFICIENT STORAGE" in out, out
        print("docker push on a full disk:", out.splitlines()[-1])
        assert "disk full on PATCH" in server.log_path.read_text()  # the operator's side names the cause
        assert leftovers(data) == []
        assert requests.get(f"{server.url}/v2/e2e/diskfull/tags/list", timeout=10).status_code == 404

        filler.unlink()
        pushed = docker("push", ref, timeout=600)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        manifest = requests.get(f"{server.url}/v2/e2e/diskfull/manifests/v1", timeout=10,
                                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        assert manifest.status_code == 200, manifest.text
        [layer] = manifest.json()["layers"]
        blob = requests.get(f"{server.url}/v2/e2e/diskfull/blobs/{layer['digest']}", timeout=60)
        assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
        docker.ok("rmi", ref)
        docker.ok("pull", ref)
        assert docker.ok("image", "inspect", "-f", "{{.Id}}", ref).strip() == image_id
        assert leftovers(data) == []
    finally:
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)


@pytest.fixture
def package(tmp_path):
    """samples/squares under a unique name, with a 6 MiB random file in its Dockerfile folder."""
    short = f"disk{uuid.uuid4().hex[:6]}"
    pkg = tmp_path / short
    shutil.copytree(SAMPLES / "squares", pkg, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    meta = json.loads((pkg / "package.json").read_text())
    meta["name"] = f"@grokemu/{short}"
    (pkg / "package.json").write_text(json.dumps(meta))
    (pkg / "dockerfiles" / "squares" / "big.bin").write_bytes(os.urandom(6 * MiB))
    (pkg / ".npmignore").write_text("")
    yield pkg, short
    remove_images(short)


def test_grok_publish_and_the_store_on_a_full_disk(server, small_disk, grok, package, base_image, tmp_path):
    pkg, short = package
    data = server.data_dir
    token = server.login()
    auth = {"Authorization": token}
    grok("config", "add", "--alias", "emu", "--server", server.api, "--key", "admin", "--default")
    shim = tmp_path / "no-docker"  # a CLI that cannot run docker only uploads (`image: null`): grokemu builds
    shim.mkdir()
    (shim / "docker").write_text("#!/bin/sh\necho 'docker: not available here' >&2\nexit 1\n")
    (shim / "docker").chmod(0o755)
    no_docker = {"PATH": f"{shim}:{os.environ['PATH']}"}

    # publish: the package's files do not fit
    filler = fill(small_disk, leave=2 * MiB)
    failed = grok("publish", "emu", "--skip-check", cwd=pkg, env=no_docker)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1, out
    assert "Insufficient storage" in out and "is full" in out, out
    print("grok publish on a full disk:", out.strip())  # shown with -s, and with the failure
    assert leftovers(data) == []
    timestamps = requests.get(f"{server.api}/packages/dev/@grokemu/{short}/timestamps", headers=auth, timeout=10)
    assert timestamps.status_code == 200 and timestamps.json() == {}  # no package version was recorded
    assert requests.get(f"{server.api}/docker/images", params={"text": short}, headers=auth,
                        timeout=10).json() == []

    # the store: a write that needs one more page of the database gets 507, and the database stays whole
    fill(small_disk, leave=0)
    refused = requests.post(f"{server.api}/users/login/dev", headers={"Authorization": "Dev admin"}, timeout=10)
    assert refused.status_code == 507, refused.text
    body = refused.json()
    assert body["#type"] == "ApiError" and "Insufficient storage" in body["message"], body
    print("a store write on a full disk:", refused.status_code, body["message"])
    assert requests.get(f"{server.api}/docker/images", headers=auth, timeout=10).status_code == 200  # reads work
    assert integrity(data) == "ok"
    assert leftovers(data) == []

    # freed: the same publish goes through, the store takes writes again, grokemu builds the image
    filler.unlink()
    assert integrity(data) == "ok"
    again = requests.post(f"{server.api}/users/login/dev", headers={"Authorization": "Dev admin"}, timeout=10)
    assert again.status_code == 200, again.text
    published = grok("publish", "emu", "--skip-check", cwd=pkg, env=no_docker)
    assert published.returncode == 0 and "Published" in published.stdout, published.stdout + published.stderr
    images = wait_until(lambda: [i for i in requests.get(f"{server.api}/docker/images", params={"text": short},
                                                        headers=auth, timeout=10).json()
                                 if i["status"] in ("ready", "error")], 300, "the image validated")
    assert [i["status"] for i in images] == ["ready"], images
    assert "Successfully built" in images[0]["logs"]  # grokemu's own build, from the files it kept
    assert requests.get(f"{server.api}/packages/dev/@grokemu/{short}/timestamps", headers=auth,
                        timeout=10).json() != {}
    assert integrity(data) == "ok"
