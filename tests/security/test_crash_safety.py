"""kill -9 at a random instant of a publish or of a registry upload, restart, check: SQLite is intact, no staging or
upload debris, what was published or pushed before is exactly there, and no partial package or blob is visible.

A real `grokemu up` subprocess on one data dir, killed and restarted again and again (no Docker needed)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess

pytestmark = pytest.mark.e2e

DEV = {"Authorization": "Dev admin"}
KEEP = "@acme/keep"
BIG = "@acme/big"
RUNS = 24
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def package_files(name: str, version: str, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    files = {
        "package.json": json.dumps({"name": name, "version": version}).encode(),
        "dockerfiles/app/Dockerfile": b"FROM scratch\nEXPOSE 8000\n",
        "dockerfiles/app/container.json": json.dumps({"cpu": 0.5, "on_demand": True}).encode(),
        "connections/db.json": json.dumps({"name": "db", "server": version}).encode(),
        "timestamps.json": json.dumps({"package.json": f"stamp {version}"}).encode(),
    }
    files.update(extra or {})
    return files


def big_files(version: str, rng: random.Random) -> dict[str, bytes]:
    """~24 MiB in 96 incompressible files: a publish long enough for a kill to land mid-write."""
    extra = {f"data/{i:03d}.bin": rng.randbytes(256 * 1024) for i in range(96)}
    return package_files(BIG, version, extra)


def db_rows(data_dir: Path) -> tuple[str, dict[str, dict]]:
    """(integrity_check result, package rows by name), read once the server is dead."""
    db = sqlite3.connect(_db_path(data_dir))
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = {json.loads(d)["name"]: json.loads(d) for (d,) in db.execute("SELECT data FROM packages")}
    finally:
        db.close()
    return check, rows


def _db_path(data_dir: Path) -> Path:
    from grokemu.config import Settings

    return Settings(data_dir=data_dir).db_path


def stored_files(data_dir: Path, name: str, row: dict) -> dict[str, str]:
    from urllib.parse import quote

    base = data_dir / "packages" / quote(name, safe="") / row["filesVersion"]
    return {p.relative_to(base).as_posix(): sha(p.read_bytes()) for p in base.rglob("*") if p.is_file()}


def hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {k: sha(v) for k, v in files.items()}


def publish(server: GrokemuProcess, name: str, body: bytes, debug: bool = False) -> requests.Response:
    return requests.post(f"{server.api}/packages/dev/{name}?debug={'true' if debug else 'false'}", data=body,
                         headers=DEV, timeout=60)


def check_after_restart(data_dir: Path, server: GrokemuProcess, keep_files: dict[str, bytes],
                        big_versions: dict[str, dict[str, str]]) -> str:
    """Everything a restarted server must show; returns which BIG version survived ('none' if never published)."""
    packages = data_dir / "packages"
    assert not list(packages.glob(".staging-*")), list(packages.iterdir())
    r = requests.get(f"{server.api}/packages/dev/{KEEP}/timestamps", headers=DEV, timeout=10)
    assert r.status_code == 200 and r.json() == json.loads(keep_files["timestamps.json"])
    token = server.login()
    containers = requests.get(f"{server.api}/docker/containers", headers={"Authorization": token}, timeout=10).json()
    assert {c["namespace"] for c in containers} <= {KEEP, BIG} and any(c["namespace"] == KEEP for c in containers)
    return "checked"


def test_kill_during_publish(tmp_path):
    rng = random.Random(int(os.environ.get("GROKEMU_CRASH_SEED", "0")) or None)
    data_dir = tmp_path / "data"
    keep_files = package_files(KEEP, "1.0.0")
    versions = {f"big-{i}": big_files(f"1.0.{i}", rng) for i in range(3)}
    bodies = {v: zip_of(f) for v, f in versions.items()}
    big_hashes = {json.loads(f["package.json"])["version"]: hashes(f) for f in versions.values()}

    server = GrokemuProcess(data_dir).start()
    assert publish(server, KEEP, zip_of(keep_files)).status_code == 200
    started = time.perf_counter()
    assert publish(server, BIG, bodies["big-0"]).status_code == 200
    full = time.perf_counter() - started
    outcomes: dict[str, int] = {}
    keep_row = None
    try:
        for run in range(RUNS):
            body = bodies[f"big-{run % 3}"]
            result: dict = {}

            def go(result=result, server=server, body=body, run=run):
                try:
                    result["status"] = publish(server, BIG, body, debug=bool(run % 2)).status_code
                except requests.RequestException as e:
                    result["error"] = type(e).__name__

            thread = threading.Thread(target=go)
            thread.start()
            time.sleep(rng.uniform(0, full * 1.1))
            server.stop(signal.SIGKILL)
            thread.join(30)

            check, rows = db_rows(data_dir)
            assert check == "ok"
            keep_row = keep_row or rows[KEEP]
            assert rows[KEEP] == keep_row  # the other package's row, exactly
            assert stored_files(data_dir, KEEP, rows[KEEP]) == hashes(keep_files)
            # BIG is one whole version, never a mix
            big_row = rows[BIG]
            assert stored_files(data_dir, BIG, big_row) == big_hashes[big_row["version"]]

            server = GrokemuProcess(data_dir).start()
            check_after_restart(data_dir, server, keep_files, big_hashes)
            home = data_dir / "packages" / "%40acme%2Fbig"
            assert [p.name for p in home.iterdir()] == [big_row["filesVersion"]]  # the sweep left only the current
            sent_version = json.loads(versions[f"big-{run % 3}"]["package.json"])["version"]
            outcome = ("answered 200" if result.get("status") == 200 else
                       "killed, new version committed" if big_row["version"] == sent_version else
                       "killed, previous version kept")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # after all that, a publish still works
        assert publish(server, BIG, bodies["big-1"]).status_code == 200
    finally:
        server.stop()
    print(f"\npublish kill -9 runs: {RUNS}, full publish {full:.3f}s, outcomes {outcomes}")
    assert outcomes.get("killed, previous version kept", 0) >= RUNS // 4  # many kills land mid-publish


# -- registry -------------------------------------------------------------------------------------------------------

REPO = "datagrok/crash"


def registry_token(server: GrokemuProcess) -> dict[str, str]:
    r = requests.get(f"{server.url}/token", params={"service": f"localhost:{server.port}",
                                                   "scope": f"repository:{REPO}:pull,push"},
                     auth=("any-user", "admin"), timeout=10)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def push_blob(server: GrokemuProcess, data: bytes, chunk: int = MiB, auth: dict | None = None) -> str:
    auth = auth or registry_token(server)
    r = requests.post(f"{server.url}/v2/{REPO}/blobs/uploads/", headers=auth, timeout=10)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        r = requests.patch(server.url + location if location.startswith("/") else location, data=piece, timeout=30,
                           headers={**auth, "Content-Type": "application/octet-stream",
                                    "Content-Range": f"{start}-{start + len(piece) - 1}"})
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
    digest = "sha256:" + sha(data)
    url = server.url + location if location.startswith("/") else location
    r = requests.put(url, params={"digest": digest}, headers=auth, timeout=30)
    assert r.status_code == 201, r.text
    return digest


def get_blob(server: GrokemuProcess, digest: str, auth: dict) -> requests.Response:
    return requests.get(f"{server.url}/v2/{REPO}/blobs/{digest}", headers=auth, timeout=30)


def test_kill_during_registry_upload(tmp_path):
    rng = random.Random(int(os.environ.get("GROKEMU_CRASH_SEED", "0")) or None)
    data_dir = tmp_path / "data"
    server = GrokemuProcess(data_dir).start()
    earlier = rng.randbytes(3 * MiB)
    earlier_digest = push_blob(server, earlier)
    big = [rng.randbytes(16 * MiB) for _ in range(2)]
    started = time.perf_counter()
    push_blob(server, big[0], chunk=2 * MiB)  # to measure a whole upload; every run below pushes a new digest
    full = time.perf_counter() - started
    outcomes: dict[str, int] = {}
    try:
        for run in range(RUNS):
            data = big[run % 2][:-(run + 1)] + bytes([run])  # a new digest every run
            digest = "sha256:" + sha(data)
            result: dict = {}
            auth = registry_token(server)

            def go(result=result, server=server, data=data, auth=auth):
                try:
                    result["digest"] = push_blob(server, data, chunk=2 * MiB, auth=auth)
                except (requests.RequestException, AssertionError) as e:
                    result["error"] = type(e).__name__

            thread = threading.Thread(target=go)
            thread.start()
            time.sleep(rng.uniform(0, full * 1.2))
            server.stop(signal.SIGKILL)
            thread.join(30)

            server = GrokemuProcess(data_dir).start()
            auth = registry_token(server)
            r = get_blob(server, earlier_digest, auth)
            assert r.status_code == 200 and sha(r.content) == earlier_digest.split(":")[1]
            r = get_blob(server, digest, auth)
            if r.status_code == 200:  # the PUT committed before the kill: then it is the whole, right blob
                assert sha(r.content) == digest.split(":")[1]
                outcomes["committed"] = outcomes.get("committed", 0) + 1
            else:
                assert r.status_code == 404, r.text
                assert requests.head(f"{server.url}/v2/{REPO}/blobs/{digest}", headers=auth, timeout=10
                                     ).status_code == 404
                outcomes["not visible"] = outcomes.get("not visible", 0) + 1
            # no upload debris (folders without metadata, temp files); blob files are whole and named by content
            uploads = data_dir / "registry" / "uploads"
            for entry in uploads.iterdir():
                assert (entry / "meta.json").is_file() and (entry / "data").is_file(), entry
            for p in (data_dir / "registry" / "blobs").rglob("*"):
                assert not p.name.startswith(".tmp-")
                if p.is_file():
                    assert sha(p.read_bytes()) == p.name, p
        assert push_blob(server, big[1]) == "sha256:" + sha(big[1])  # and pushing still works
    finally:
        server.stop()
    print(f"\nregistry kill -9 runs: {RUNS}, full upload {full:.3f}s, outcomes {outcomes}")
    assert outcomes.get("not visible", 0) >= RUNS // 4


def test_registry_sweep_removes_what_each_crash_point_leaves(tmp_path):
    """The states a kill -9 can leave, made by hand: the startup sweep removes debris, keeps resumable sessions,
    and never lets a repository claim a blob it does not have."""
    from grokemu.adapters.fs_blobs import FsBlobStore
    from grokemu.domain.clock import ManualClock
    from grokemu.services.registry import RegistryService

    reg = RegistryService(FsBlobStore(tmp_path / "registry"), ManualClock())
    store = reg.store
    resumable = reg.start_upload(REPO).upload_id
    reg.append_upload(REPO, resumable, io.BytesIO(b"partial"), 7)
    committed = reg.start_upload(REPO).upload_id
    (store.root / "uploads" / committed / "data").unlink()  # killed after the commit rename, before the cleanup
    (store.root / "uploads" / ".tmp-0123456789abcdef0123456789abcdef").mkdir()  # killed while creating a session
    missing = "sha256:" + "ab" * 32
    store.link_layer(REPO, missing, 0.0)  # killed between linking and the rename that commits the blob
    whole = reg.start_upload(REPO, digest="sha256:" + sha(b"whole"), stream=io.BytesIO(b"whole"), length=5)
    blob_dir = store.blob_path(whole.digest).parent
    (blob_dir / ".tmp-abc").write_bytes(b"half a manifest")  # killed inside an atomic write

    assert reg.sweep() == 4
    assert {p.name for p in (store.root / "uploads").iterdir()} == {resumable}
    assert reg.upload_status(REPO, resumable).offset == 7  # resumable: the client can go on from byte 7
    assert not store.layer_linked(REPO, missing)
    assert reg.stat_blob(REPO, whole.digest).size == 5
    assert [p.name for p in blob_dir.iterdir()] == [whole.digest.split(":")[1]]
    assert reg.sweep() == 0
