"""A full disk under the data directory (issue 21 item 3, docs/faults.md §3) without root or Docker: the writers'
`open` is swapped for files that stop with ENOSPC, and SQLite's own limit (`PRAGMA max_page_count`) makes it answer
SQLITE_FULL as on a full disk. Each write gets 507 in the right envelope and leaves nothing; freed, it works again.
The same faults on a real full tmpfs with the real docker and grok CLIs: tests/e2e/test_disk_full.py."""
from __future__ import annotations

import builtins
import errno
import hashlib
import json
import sqlite3

import pytest

from grokemu.adapters import fs_blobs
from grokemu.services import package_archive
from tests.helpers import hello_package, package_zip
from tests.integration.test_registry_api import DOCKER_MANIFEST, manifest_for, push_token, sha, upload

DEV = {"Authorization": "Dev admin"}


@pytest.fixture
def data_dir(settings):
    return settings.data_dir


class _Disk:
    """`room` more bytes fit; then every write stops with ENOSPC, as on a full disk."""

    def __init__(self, room: int):
        self.room = room

    def open(self, *args, **kwargs):
        return _FullFile(builtins.open(*args, **kwargs), self)


class _FullFile:
    def __init__(self, f, disk: _Disk):
        self._f, self._disk = f, disk

    def write(self, data) -> int:
        n = min(len(data), max(self._disk.room, 0))
        self._f.write(data[:n])
        self._disk.room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full(monkeypatch, module, room: int) -> None:
    monkeypatch.setattr(module, "open", _Disk(room).open, raising=False)


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def assert_507(resp, envelope: str) -> str:
    assert resp.status_code == 507, resp.data
    body = resp.get_json()
    if envelope == "oci":
        [error] = body["errors"]
        assert error["code"] == "UNKNOWN"
        message = error["message"]
    else:
        assert body["#type"] == "ApiError" and body["code"] == 507
        message = body["message"]
    assert "Insufficient storage" in message and "is full" in message, message
    return message


def no_registry_leftovers(data_dir) -> None:
    registry = data_dir / "registry"
    assert list((registry / "uploads").iterdir()) == []
    for blob in (registry / "blobs").rglob("*"):
        if blob.is_file():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"partial blob {blob}"
    assert list(data_dir.rglob(".tmp-*")) == []


# -- the registry -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["patch", "put", "monolithic"])
def test_an_upload_that_meets_a_full_disk_is_507_and_dropped(client, data_dir, monkeypatch, how):
    headers = push_token(client, "acme/full")
    layer = bytes(range(256)) * 4096  # 1 MiB: several CHUNK writes
    full(monkeypatch, fs_blobs, room=300_000)
    if how == "monolithic":
        resp = client.post(f"/v2/acme/full/blobs/uploads/?digest={sha(layer)}", data=layer, headers=headers)
    else:
        start = client.post("/v2/acme/full/blobs/uploads/", headers=headers)
        assert start.status_code == 202
        location = start.headers["Location"]
        if how == "patch":
            resp = client.patch(location, data=layer, headers=headers)
        else:
            resp = client.put(f"{location}?digest={sha(layer)}", data=layer, headers=headers)
        # the session went with its bytes: docker starts over with a new POST
        assert client.get(location, headers=headers).status_code == 404
    assert_507(resp, "oci")
    no_registry_leftovers(data_dir)
    assert client.head(f"/v2/acme/full/blobs/{sha(layer)}", headers=headers).status_code == 404

    monkeypatch.undo()
    assert upload(client, "acme/full", layer, headers) == sha(layer)
    assert client.get(f"/v2/acme/full/blobs/{sha(layer)}", headers=headers).data == layer
    no_registry_leftovers(data_dir)


def test_a_manifest_that_meets_a_full_disk_keeps_nothing(client, data_dir, monkeypatch):
    headers = push_token(client, "acme/full")
    config, layer = b'{"architecture":"amd64"}', b"layer bytes"
    upload(client, "acme/full", config, headers)
    upload(client, "acme/full", layer, headers)
    body = manifest_for(config, [layer])
    put = {**headers, "Content-Type": DOCKER_MANIFEST}

    def no_room(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs_blobs.FsBlobStore, "set_tag", no_room)  # the blob and its link were written by then
    assert_507(client.put("/v2/acme/full/manifests/v1", data=body, headers=put), "oci")
    assert client.get(f"/v2/acme/full/manifests/{sha(body)}", headers=headers).status_code == 404
    assert not (data_dir / "registry" / "blobs" / "sha256" / sha(body)[7:9] / sha(body)[7:]).exists()
    no_registry_leftovers(data_dir)

    monkeypatch.undo()
    assert client.put("/v2/acme/full/manifests/v1", data=body, headers=put).status_code == 201
    assert client.get("/v2/acme/full/manifests/v1", headers=headers).data == body


# -- a package publish ------------------------------------------------------------------------------------------------

def publish(client, name="@acme/grokprobe", version="1.0.0", timestamps: int = 0):
    """hello_package with a 512 KiB file; `timestamps` entries in its timestamps.json (kept in the package's row)."""
    files = hello_package(name, version)
    if timestamps:
        files["timestamps.json"] = json.dumps({f"file{i}.js": "2026-01-01T00:00:00.000Z" for i in range(timestamps)})
    files["dockerfiles/hello/big.bin"] = bytes(range(256)) * 2048
    return client.post(f"/api/packages/dev/{name}?debug=true", data=package_zip(files), headers=DEV)


def test_a_publish_that_meets_a_full_disk_is_507_and_keeps_the_previous_version(client, settings, monkeypatch,
                                                                                  token):
    auth = {"Authorization": token}
    packages = settings.data_dir / "packages"
    assert publish(client).status_code == 200
    before = files_under(packages)
    stamps = client.get("/api/packages/dev/@acme/grokprobe/timestamps", headers=DEV).get_json()

    full(monkeypatch, package_archive, room=100_000)
    message = assert_507(publish(client, version="2.0.0"), "api")
    assert "nothing of this request was kept" in message
    assert files_under(packages) == before  # no staging folder, no new version folder, the old one whole
    assert client.get("/api/packages/dev/@acme/grokprobe/timestamps", headers=DEV).get_json() == stamps
    assert [i["version"] for i in client.get("/api/docker/images", headers=auth).get_json()] == ["1.0.0"]

    monkeypatch.undo()
    assert publish(client, version="2.0.0").status_code == 200
    assert [i["version"] for i in client.get("/api/docker/images", headers=auth).get_json()] == ["2.0.0"]


# -- the SQLite store -------------------------------------------------------------------------------------------------

def db_full(ctx, on: bool) -> None:
    db = ctx.store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages if on else 1_000_000_000}")


def test_a_store_write_on_a_full_disk_is_507_and_the_database_stays_whole(client, ctx, settings, token):
    auth = {"Authorization": token}
    db_full(ctx, True)
    # a publish's rows do not fit: 507, and its files folder goes with the transaction
    assert_507(publish(client, timestamps=5000), "api")
    assert files_under(settings.data_dir / "packages") == []
    assert client.get("/api/docker/images", headers=auth).get_json() == []  # reads still work
    # logins (session rows) until one needs a new page: the transaction SQLite rolled back by itself is 507, not
    # a second error ("cannot rollback - no transaction is active")
    for _ in range(200):
        resp = client.post("/api/users/login/dev", headers=DEV)
        if resp.status_code != 200:
            break
    assert_507(resp, "api")
    assert client.get("/api/users/current", headers=auth).get_json()["login"] == "admin"
    with sqlite3.connect(settings.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    db_full(ctx, False)
    assert client.post("/api/users/login/dev", headers=DEV).status_code == 200
    assert publish(client, timestamps=5000).status_code == 200
    assert len(client.get("/api/docker/images", headers=auth).get_json()) == 1


# -- a build ----------------------------------------------------------------------------------------------------------

def test_a_build_whose_result_meets_a_full_disk_is_recorded_once_there_is_room(client, ctx, token, monkeypatch):
    auth = {"Authorization": token}
    assert publish(client).status_code == 200
    store, builds = ctx.store, []
    real_put, real_build = store.put_image, ctx.orchestrator.build_image

    def put_image(image):
        if image.status.value != "validating":  # the claim fits; the verdict does not
            raise sqlite3.OperationalError("database or disk is full")
        real_put(image)

    monkeypatch.setattr(store, "put_image", put_image)
    monkeypatch.setattr(ctx.orchestrator, "build_image", lambda *a: builds.append(a) or real_build(*a))
    ctx.scheduler.run_once()
    [image] = client.get("/api/docker/images", headers=auth).get_json()
    assert image["status"] == "validating" and len(builds) == 1
    ctx.scheduler.run_once()  # still full: the result keeps waiting, nothing is built again
    assert client.get("/api/docker/images", headers=auth).get_json()[0]["status"] == "validating"

    monkeypatch.setattr(store, "put_image", real_put)
    ctx.scheduler.run_once()
    [image] = client.get("/api/docker/images", headers=auth).get_json()
    assert image["status"] == "ready" and "Successfully built" in image["logs"], image
    assert len(builds) == 1
