"""Attacks on publish and the list/JSON endpoints: each gets a clear 4xx, nothing is written, the previous package's
files and rows are kept exactly, and a zip bomb costs neither memory nor disk."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import struct
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import psutil
import pytest

from grokemu.app import create_app
from grokemu.domain.errors import BadRequest
from grokemu.web.context import app_context
from tests.helpers import hello_package, package_zip

DEV = {"Authorization": "Dev admin"}
NAME = "@acme/grokprobe"
MiB = 1024 * 1024


# -- helpers --------------------------------------------------------------------------------------------------------

def publish(client, files_or_body, name: str = NAME, *, debug: bool = True, path: str | None = None):
    body = files_or_body if isinstance(files_or_body, bytes) else package_zip(files_or_body)
    url = path or f"/api/packages/dev/{name}?debug={'true' if debug else 'false'}"
    return client.post(url, data=body, headers=DEV)


def snapshot(ctx) -> dict:
    """Every file and folder under the data dir (content hashes, symlinks as their target) except SQLite's own
    files, plus every row grokemu keeps about packages, images and containers."""
    root: Path = ctx.settings.data_dir
    db = ctx.settings.db_path
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.name.startswith(db.name):
                continue
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                tree[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                tree[rel] = "dir"
            else:
                tree[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    store = ctx.store
    return {"tree": tree,
            "packages": sorted((json.dumps(r, sort_keys=True) for r in store.list_packages())),
            "images": sorted(json.dumps(i.to_wire(), sort_keys=True) for i in store.list_images()),
            "containers": sorted(json.dumps(c.to_wire(), sort_keys=True) for c in store.list_containers())}


def assert_4xx(resp, fragment: str | None = None):
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:500])
    body = resp.get_json()
    assert body and body.get("message"), resp.get_data(as_text=True)[:500]
    if fragment:
        assert fragment in body["message"], body["message"]
    return body


def current_files(ctx, name: str = NAME) -> dict[str, bytes]:
    base = ctx.packages.files_dir(name)
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def published(client, ctx):
    """A first, good package, with a connection (read for container env) and a Dockerfile folder."""
    files = hello_package(container={"cpu": 1, "memory": 256})
    files["connections/db.json"] = json.dumps({"name": "db", "server": "x"})
    resp = publish(client, files)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return snapshot(ctx)


class PeakMemory:
    """Peak growth of this process's RSS (sampled every 2 ms) and of Python allocations (tracemalloc)."""

    def __enter__(self):
        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        tracemalloc.start()
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        _, self.traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    @property
    def rss_growth(self) -> int:
        return self.peak - self.base


# -- names ----------------------------------------------------------------------------------------------------------

BAD_NAMES = [
    (".", "."), ("..", ".."), ("a/../b", "a/../b"), ("x" * 300, "x" * 300), ("bad%01name", "bad\x01name"),
    ("%2e%2e", ".."), ("%2E", "."), ("@acme/..", "@acme/.."), ("@../x", "@../x"), ("a%5cb", "a\\b"),
    (".hidden", ".hidden"), ("@acme/a/b", "@acme/a/b"), ("a%0Ab", "a\nb"), ("%C3%A9" * 100, "é" * 100),
]


@pytest.mark.parametrize("url_name, name", BAD_NAMES, ids=[n[:20] for n, _ in BAD_NAMES])
def test_bad_package_names_are_400_and_write_nothing(client, ctx, published, url_name, name):
    files = hello_package(name=name)
    # debug=true: with `..` the old code read the whole data dir as the package's "current files"
    assert_4xx(publish(client, files, path=f"/api/packages/dev/{url_name}?debug=true"))
    assert_4xx(client.get(f"/api/packages/dev/{url_name}/timestamps", headers=DEV))
    assert snapshot(ctx) == published


@pytest.mark.parametrize("name", [".", "..", "a/../b", "x" * 215, "a\x00b", "a\\b", "@x/..", "", "@/x", "@x/",
                                  "ü" * 100, " a", "a\x7f"])
def test_service_checks_the_name_itself(ctx, published, name):
    """Whatever the web layer lets through, the service refuses the name before reading or writing."""
    with pytest.raises(BadRequest):
        ctx.packages.publish(name, package_zip(hello_package(name=name)), debug=True, login="admin")
    with pytest.raises(BadRequest):
        ctx.packages.timestamps(name)
    assert snapshot(ctx) == published


def test_good_names_still_publish(client, ctx):
    for name in ["plain", "@datagrok/chem", "CvmTests", "a-b_c.d", "@a.b/c~d"]:
        resp = publish(client, hello_package(name=name), name=name)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert (ctx.packages.files_dir(name) / "package.json").is_file()


# -- zip bombs ------------------------------------------------------------------------------------------------------

def _zip_header_bomb(size: int) -> bytes:
    """`size` zero bytes deflated, streamed (the test itself stays small)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("package.json", json.dumps({"name": NAME, "version": "1.0.0"}))
        with z.open("bomb.bin", "w", force_zip64=True) as f:
            block = bytes(MiB)
            for _ in range(size // len(block)):
                f.write(block)
    return buf.getvalue()


def _raw_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A ZIP built by hand: (name, method, data as stored, file size claimed, crc). Lets a test lie in headers."""
    out = io.BytesIO()
    central = []
    for name, method, data, file_size, crc in entries:
        offset = out.tell()
        raw = name.encode()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), file_size,
                              len(raw), 0) + raw + data)
        central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data),
                                   file_size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
    start = out.tell()
    cd = b"".join(central)
    out.write(cd)
    out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(cd), start, 0))
    return out.getvalue()


def _deflate(data_size: int) -> tuple[bytes, int]:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts, crc, block = [], 0, bytes(MiB)
    for _ in range(data_size // len(block)):
        parts.append(comp.compress(block))
        crc = zlib.crc32(block, crc)
    parts.append(comp.flush())
    return b"".join(parts), crc


@pytest.fixture(scope="module")
def gib_bomb() -> bytes:
    return _zip_header_bomb(1023 * MiB)  # 1 GiB of zeros but for the room package.json needs under the limit


@pytest.fixture(scope="module")
def padded_bomb() -> bytes:
    """1 GiB of zeros whose entry claims ~10 MiB of compressed data (the real deflate stream is ~1 MiB, then
    padding): the header ratio looks like ~100, so only counting while decompressing can catch it."""
    deflated, crc = _deflate(1023 * MiB)
    stored = deflated + bytes(10 * MiB)
    meta = json.dumps({"name": NAME, "version": "1.0.0"}).encode()
    return _raw_zip([("package.json", 0, meta, len(meta), zlib.crc32(meta)),
                     ("bomb.bin", 8, stored, 1023 * MiB, crc)])


def test_gib_zip_bomb_is_413_with_small_memory(client, ctx, published, gib_bomb):
    assert len(gib_bomb) < 2 * MiB
    with PeakMemory() as mem:
        resp = publish(client, gib_bomb, debug=False)
    assert_4xx(resp, "max_compression_ratio")
    assert resp.status_code == 413
    assert mem.rss_growth < 64 * MiB and mem.traced_peak < 64 * MiB, (mem.rss_growth, mem.traced_peak)
    assert snapshot(ctx) == published


def test_bomb_with_lying_headers_is_caught_while_decompressing(client, ctx, published, padded_bomb):
    disk_before = shutil.disk_usage(ctx.settings.data_dir).used
    with PeakMemory() as mem:
        resp = publish(client, padded_bomb, debug=False)
    assert resp.status_code == 413
    assert_4xx(resp, "max_compression_ratio")
    assert mem.rss_growth < 64 * MiB and mem.traced_peak < 64 * MiB, (mem.rss_growth, mem.traced_peak)
    assert snapshot(ctx) == published
    assert abs(shutil.disk_usage(ctx.settings.data_dir).used - disk_before) < 64 * MiB


def limited_client(ctx, orchestrator, clock, **limits):
    """Another app on the same data dir and store, with some settings changed (Settings is frozen)."""
    app = create_app(dataclasses.replace(ctx.settings, **limits), store=ctx.store, orchestrator=orchestrator,
                     clock=clock, background=False)
    return app.test_client()


def test_total_unpacked_bytes_are_counted(ctx, orchestrator, clock, published):
    client = limited_client(ctx, orchestrator, clock, max_package_unpacked_bytes=4 * MiB)
    files = hello_package()
    for i in range(3):
        files[f"blob{i}.bin"] = os.urandom(2 * MiB)  # incompressible: the ratio check does not fire
    assert publish(client, files, debug=False).status_code == 413
    assert_4xx(publish(client, files, debug=False), "max_package_unpacked_bytes")
    assert snapshot(ctx) == published


def test_declared_sizes_are_not_trusted(client, ctx, published):
    """An entry claiming 10 bytes but holding 3 MiB: zipfile stops at the claim, the CRC fails: 400, no write."""
    data = os.urandom(3 * MiB)
    meta = json.dumps({"name": NAME}).encode()
    body = _raw_zip([("package.json", 0, meta, len(meta), zlib.crc32(meta)),
                     ("big.bin", 0, data, 10, zlib.crc32(data))])
    assert_4xx(publish(client, body, debug=False))
    assert snapshot(ctx) == published


def test_many_entries_bomb_is_413(client, ctx, published):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("package.json", json.dumps({"name": NAME}))
        for i in range(ctx.settings.max_package_entries + 1):
            z.writestr(f"f/{i}", b"")
    body = buf.getvalue()
    with PeakMemory() as mem:
        resp = publish(client, body, debug=False)
    assert resp.status_code == 413
    assert_4xx(resp, "max_package_entries")
    assert mem.traced_peak < 64 * MiB
    # the end record lying about the count changes nothing: entries are counted in the central directory
    lying = bytearray(body)
    eocd = lying.rfind(b"PK\x05\x06")
    lying[eocd + 8:eocd + 12] = struct.pack("<HH", 1, 1)
    assert publish(client, bytes(lying), debug=False).status_code == 413
    assert snapshot(ctx) == published


def test_bzip2_and_lzma_entries_are_refused(client, ctx, published):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as z:
        for name, data in hello_package().items():
            z.writestr(name, data)
    assert_4xx(publish(client, buf.getvalue(), debug=False), "compression method")
    assert snapshot(ctx) == published


def test_body_over_max_package_bytes_is_413(ctx, orchestrator, clock, published):
    client = limited_client(ctx, orchestrator, clock, max_package_bytes=64 * 1024)
    files = hello_package()
    files["big.bin"] = os.urandom(128 * 1024)
    resp = publish(client, files)
    assert resp.status_code == 413
    assert "max_package_bytes" in resp.get_json()["message"]
    assert snapshot(ctx) == published


# -- inputs that used to answer 500 ---------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJ = '{"a":' * 50_000 + "1" + "}" * 50_000


@pytest.mark.parametrize("path, data", [
    ("package.json", DEEP), ("package.json", DEEP_OBJ), ("timestamps.json", DEEP),
    ("dockerfiles/hello/container.json", DEEP), ("dockerfiles/hello/container.json", '{"x": ' + "[" * 200 + "]" * 200 + "}"),
    ("dockerfiles/hello/image.json", DEEP), ("package.json", '{"name": "@acme/grokprobe", "version": NaN}'),
    ("dockerfiles/hello/container.json", '{"port": 1e400}'), ("dockerfiles/hello/container.json", '{"gpu": NaN}'),
    ("dockerfiles/hello/container.json", '{"cpu": Infinity}'), ("dockerfiles/hello/container.json", '{"cpu": 1e300}'),
    ("dockerfiles/hello/container.json", '{"memory": -Infinity}'),
    ("dockerfiles/hello/container.json", '{"port": ' + "9" * 5000 + "}"),
    ("dockerfiles/hello/container.json", '{"port": 1e20}'), ("dockerfiles/hello/container.json", '{"gpu": 1e300}'),
    ("dockerfiles/hello/container.json", '{"shutdown_timeout": 1e308}'),
    ("package.json", '{"name": "@acme/grokprobe", "description": {"a": 1}}'),
    ("package.json", '{"name": "@acme/grokprobe", "version": [1]}'),
    ("x/..", "a"), ("x/../../y", "a"), ("./..", "a"), ("/abs", "a"), ("C:/x", "a"), ("a\\..\\..\\b", "a"),
    ("y/" + "z" * 300, "a"),
])
def test_bad_file_contents_are_400(client, ctx, published, path, data):
    files = hello_package()
    files[path] = data
    assert_4xx(publish(client, files, debug=False))
    assert_4xx(publish(client, files, debug=True))
    assert snapshot(ctx) == published


@pytest.mark.parametrize("entries", [
    [("a", "1"), ("a/b", "2")], [("a/b", "2"), ("a", "1")], [("dockerfiles", "x")], [("package.json/x", "x")],
])
def test_file_folder_clashes_are_400(client, ctx, published, entries):
    files = hello_package()
    for name, data in entries:
        files[name] = data
    assert_4xx(publish(client, files, debug=False), "clashes")
    assert snapshot(ctx) == published


def test_debug_delta_clashing_with_kept_files_gives_way_to_the_upload(client, ctx, published):
    """A kept file `dockerfiles/hello/hello.txt` and an uploaded `dockerfiles/hello/hello.txt/x`: the upload wins."""
    resp = publish(client, {"dockerfiles/hello/hello.txt/x": "new"}, debug=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    files = current_files(ctx)
    assert files["dockerfiles/hello/hello.txt/x"] == b"new" and "package.json" in files


def test_list_queries_never_500(client, ctx, token, published):
    auth = {"Authorization": token}
    for path in ("/api/docker/containers", "/api/docker/images"):
        for order in ("package", "!package", "package,name", "dockerfile,!warnings", "nope", "environmentVars",
                      ",,,", "!"):
            resp = client.get(path, query_string={"order": order}, headers=auth)
            assert resp.status_code == 200, (order, resp.get_data(as_text=True))
        for args in ({"limit": "x"}, {"limit": "-1"}, {"page": "1e400"}, {"limit": "9" * 5000},
                     {"text": "nosuchfield = 1"}, {"text": '"unbalanced'}, {"text": "a" * 5000}):
            assert_4xx(client.get(path, query_string=args, headers=auth))
        assert client.get(path, query_string={"limit": "9" * 100, "page": "9" * 100}, headers=auth).get_json() == []
    assert_4xx(client.get("/api/docker/containers/count", query_string={"text": "x" * 5000}, headers=auth))


@pytest.mark.parametrize("text", [
    "name" + " " * 4000 + "=", "name =" + " " * 4000 + "x", " " * 4090 + "x", "name = " + "a " * 2000,
    ("a" + " " * 50 + "and" + " " * 50) * 30, "\t" * 4000 + "and",
])
def test_text_search_is_linear(client, token, published, text):
    started = time.perf_counter()
    resp = client.get("/api/docker/containers", query_string={"text": text}, headers={"Authorization": token})
    assert resp.status_code < 500
    assert time.perf_counter() - started < 0.5


def test_save_container_json_body_never_500(client, token, published):
    auth = {"Authorization": token, "Content-Type": "application/json"}
    for body in (DEEP, DEEP_OBJ, '{"id": NaN}', '{"id": 1e999}', "", "nul", '"x"', '{"id": {"a": [' + "1," * 1000 + "1]}}",
                 '{"id": "' + "x" * 1000 + '", "desiredInstances": 1e400}'):
        resp = client.post("/api/docker/containers", data=body, headers=auth)
        assert_4xx(resp)


def test_container_logs_limit_never_500(client, ctx, token, published):
    [container] = ctx.store.list_containers()
    for limit in ("x", "-1", "9" * 30, "1e3"):
        assert_4xx(client.get(f"/api/docker/containers/{container.id}/logs", query_string={"limit": limit},
                              headers={"Authorization": token}))


def test_tiny_cpu_and_memory_are_raised_to_dockers_minimum(ctx):
    from grokemu.domain.model import DockerContainer, DockerImage

    image = DockerImage(name="x", package="p", docker_dir="x", version="1", port=80)
    c = DockerContainer(name="x", package="p", image_id=image.id,
                        config={"cpu": 1e-12, "memory": 1e-9, "shm_size": 1e-12, "env": {}})
    spec, warnings = ctx.spawner.run_specs.build(c, image)
    assert spec.nano_cpus == 10_000_000 and spec.mem_bytes == 6 * MiB and spec.shm_bytes > 0
    assert sum("below Docker's minimum" in w for w in warnings) == 3
    c.config = {"cpu": 2, "memory": 512, "shm_size": 64, "env": {}}
    spec, warnings = ctx.spawner.run_specs.build(c, image)
    assert spec.nano_cpus == 2 * 10**9 and spec.mem_bytes == 512 * MiB and spec.shm_bytes == 64 * MiB
    assert not [w for w in warnings if "minimum" in w]


# -- all-or-nothing ---------------------------------------------------------------------------------------------------

def _second_version() -> dict:
    files = hello_package(version="2.0.0", container={"cpu": 2})
    files["dockerfiles/other/Dockerfile"] = "FROM scratch\nEXPOSE 9000\n"
    files["connections/db.json"] = json.dumps({"name": "db", "server": "changed"})
    return files


def _boom(*args, **kwargs):
    raise OSError("injected failure")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("step", ["extract", "link", "rename", "put_package", "put_image", "put_container",
                                  "delete_image", "sync"])
def test_failure_at_any_step_keeps_the_previous_state(client, ctx, published, monkeypatch, step, debug):
    import grokemu.services.package_archive as archive_module
    import grokemu.services.packages as packages_module

    if debug:
        # a delta: link must be used (kept files), and delete_image must run (a folder disappears)
        files = {"dockerfiles/hello/hello.txt": "changed\n"}
    else:
        files = _second_version()
    store = ctx.store
    if step == "delete_image":
        files = hello_package(folder="renamed")  # the `hello` image goes: delete_image runs in the transaction
        debug = False  # (a delta would keep the `hello` folder)
    if step == "extract":
        monkeypatch.setattr(archive_module, "open", _boom, raising=False)
    elif step == "link":
        monkeypatch.setattr(packages_module.os, "link", _boom)
        monkeypatch.setattr(packages_module.shutil, "copyfile", _boom)
        files = {"dockerfiles/hello/hello.txt": "changed\n"}
    elif step == "rename":
        monkeypatch.setattr(packages_module.os, "rename", _boom)
    elif step == "sync":
        monkeypatch.setattr(ctx.packages, "_sync_entities", _boom)
    else:
        monkeypatch.setattr(store, step, _boom)
    resp = publish(client, files, debug=debug)
    assert resp.status_code >= 400
    monkeypatch.undo()
    assert snapshot(ctx) == published
    assert ctx.packages.entities(NAME)[0]["server"] == "x"
    # and the next publish works
    assert publish(client, _second_version(), debug=False).status_code == 200
    assert ctx.packages.entities(NAME)[0]["server"] == "changed"


def test_failure_removing_the_old_version_still_publishes_and_sweep_cleans(client, ctx, settings, orchestrator,
                                                                           clock, published, monkeypatch):
    import grokemu.adapters.fs_package_files as package_files_module

    monkeypatch.setattr(package_files_module, "_remove", lambda path: None)
    assert publish(client, _second_version(), debug=False).status_code == 200
    monkeypatch.undo()
    home = ctx.packages.files_dir(NAME).parent
    assert len(list(home.iterdir())) == 2  # the old version is still there
    assert (ctx.packages.files_dir(NAME) / "dockerfiles/other/Dockerfile").is_file()
    (settings.data_dir / "packages" / ".staging-0123").mkdir()
    app2 = create_app(settings, store=ctx.store, orchestrator=orchestrator, clock=clock, background=False)
    ctx2 = app_context(app2)
    assert [p.name for p in home.iterdir()] == [ctx2.packages.files_dir(NAME).name]
    assert not list((settings.data_dir / "packages").glob(".staging-*"))


def test_old_layout_is_still_read_and_replaced(client, ctx, settings, orchestrator, clock):
    """A package published before versioned folders (files directly in its folder, no filesVersion) is read and
    replaced on its next publish."""
    home = settings.data_dir / "packages" / "%40acme%2Fgrokprobe"
    (home / "connections").mkdir(parents=True)
    (home / "package.json").write_text(json.dumps({"name": NAME}))
    (home / "connections/db.json").write_text(json.dumps({"name": "db", "server": "legacy"}))
    ctx.store.put_package({"name": NAME, "version": "1.0.0", "timestamps": {}})
    create_app(settings, store=ctx.store, orchestrator=orchestrator, clock=clock, background=False)
    assert (home / "package.json").is_file()  # the sweep keeps an old layout
    assert ctx.packages.entities(NAME)[0]["server"] == "legacy"
    resp = publish(client, {"dockerfiles/hello/Dockerfile": "FROM scratch\nEXPOSE 1\n"}, debug=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert [p.name for p in home.iterdir()] == [ctx.packages.files_dir(NAME).name]
    assert set(current_files(ctx)) == {"package.json", "connections/db.json", "dockerfiles/hello/Dockerfile"}


def test_debug_delta_never_follows_symlinks_out_of_the_package(client, ctx, published):
    base = ctx.packages.files_dir(NAME)
    secret = ctx.settings.data_dir / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, base / "leak.txt")
    os.symlink(ctx.settings.data_dir, base / "data")
    os.symlink(ctx.settings.db_path, base / "db")
    resp = publish(client, {"dockerfiles/hello/hello.txt": "changed\n"}, debug=True)
    assert resp.status_code == 200
    files = current_files(ctx)
    assert not {"leak.txt", "db"} & set(files) and not any(p.startswith("data/") for p in files)
    assert files["dockerfiles/hello/hello.txt"] == b"changed\n" and "package.json" in files
    # the database is untouched and fine
    assert ctx.store.list_packages()[0]["name"] == NAME


def test_spooled_body_is_bounded_and_leaves_no_file(tmp_path):
    """However the body is framed (the guard checks Content-Length; this is what reads it), at most
    max_package_bytes are taken, and the spool file has no name to leave behind."""
    from grokemu.domain.errors import PayloadTooLarge
    from grokemu.services.packages import spool_body

    class Endless(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            b[:] = bytes(len(b))
            return len(b)

    with PeakMemory() as mem, pytest.raises(PayloadTooLarge, match="max_package_bytes"):
        spool_body(Endless(), 64 * MiB, tmp_path)
    assert mem.traced_peak < 16 * MiB
    assert list(tmp_path.iterdir()) == []
    with spool_body(io.BytesIO(b"x" * (9 * MiB)), 10 * MiB, tmp_path) as body:
        assert body.read() == b"x" * (9 * MiB)
        assert list(tmp_path.iterdir()) == []  # rolled over to disk, unnamed
