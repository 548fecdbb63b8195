"""Fuzzing publish bodies, package names and list queries through the Flask test client: never a 5xx, nothing
written outside the data dir, no staging debris left, the published package readable afterwards."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.helpers import hello_package, package_zip

# random entry names repeat now and then: zipfile warns, and a duplicate entry is a case the tests want
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name")

DEV = {"Authorization": "Dev admin"}
NAME = "@acme/grokprobe"
FUZZ = hsettings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


def _outside(tmp_path: Path, data_dir: Path) -> set[str]:
    """Every path under the test's tmp dir that is not inside the data dir."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p == data_dir or data_dir in p.parents:
                continue
            out.add(str(p))
    return out


@pytest.fixture
def world(client, ctx, tmp_path):
    resp = client.post(f"/api/packages/dev/{NAME}?debug=false", data=package_zip(hello_package()), headers=DEV)
    assert resp.status_code == 200
    return {"client": client, "ctx": ctx, "tmp": tmp_path, "outside": _outside(tmp_path, ctx.settings.data_dir)}


def check_world(world, resp):
    assert resp.status_code < 500, resp.get_data(as_text=True)[:1000]
    if resp.status_code >= 400:
        body = resp.get_json()
        assert body and body.get("message")
    ctx = world["ctx"]
    root = ctx.settings.data_dir
    assert _outside(world["tmp"], root) == world["outside"]
    packages = root / "packages"
    assert not list(packages.glob(".staging-*"))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            assert not p.is_symlink() and Path(os.path.realpath(p)).is_relative_to(root.resolve())
    # every package folder holds exactly its current version
    for record in ctx.store.list_packages():
        current = ctx.packages.files_dir(record["name"])
        assert [p.name for p in current.parent.iterdir()] == [current.name]
        assert (current / "package.json").is_file()


def post(world, body: bytes, name: str = NAME, debug: bool = True):
    return world["client"].post(f"/api/packages/dev/{name}?debug={'true' if debug else 'false'}", data=body,
                                headers=DEV)


@FUZZ
@given(body=st.binary(max_size=4096), debug=st.booleans())
def test_random_bodies(world, body, debug):
    check_world(world, post(world, body, debug=debug))


VALID = package_zip({**hello_package(container={"cpu": 1}), "connections/db.json": json.dumps({"name": "db"})})


@st.composite
def mutated_zip(draw):
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "int"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif kind == "int" and len(data) >= pos + 4:
            # a header field (size, offset, count) set to an extreme
            data[pos:pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\x00\x00",
                                                      b"\x00\x00\x00\x80"]))
    return bytes(data)


@FUZZ
@given(body=mutated_zip(), debug=st.booleans())
def test_mutated_zips(world, body, debug):
    check_world(world, post(world, body, debug=debug))


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                    max_leaves=12)
CONFIG_KEYS = ["cpu", "memory", "gpu", "shm_size", "storage", "port", "on_demand", "shutdown_timeout", "env",
               "environmentVars", "image"]


@FUZZ
@given(config=st.dictionaries(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=10)), JSON, max_size=6),
       raw=st.one_of(st.none(), st.sampled_from(["1e400", "-1e400", "NaN", "[" * 3000, '{"cpu": 1e-320}', "9" * 5000,
                                                  '{"port": 65535.5}', '{"gpu": -0.0}'])))
def test_random_container_json(world, config, raw):
    text = raw if raw is not None else json.dumps(config, allow_nan=True)
    files = hello_package(container=text)
    resp = post(world, package_zip(files), debug=False)
    check_world(world, resp)
    if resp.status_code == 200:
        # whatever was accepted, the spawner turns it into a bounded, never-unlimited run spec
        ctx = world["ctx"]
        [container] = ctx.store.list_containers()
        image = ctx.store.get_image(container.image_id)
        spec, _ = ctx.spawner.run_specs.build(container, image)
        assert spec.nano_cpus >= 10_000_000 and spec.mem_bytes >= 6 * 1024 * 1024 and spec.shm_bytes > 0


@FUZZ
@given(entries=st.lists(st.tuples(st.text(min_size=1, max_size=40), st.binary(max_size=32)), max_size=6),
       debug=st.booleans())
def test_random_entry_names(world, entries, debug):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in hello_package().items():
            z.writestr(name, data)
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name), data)
    check_world(world, post(world, buf.getvalue(), debug=debug))


@FUZZ
@given(name=st.text(min_size=1, max_size=300), encode=st.booleans())
def test_random_package_names(world, name, encode):
    path_name = quote(name, safe="/@") if encode else quote(name, safe="/@%.")
    body = package_zip(hello_package(name=name))
    client = world["client"]
    resp = client.post(f"/api/packages/dev/{path_name}?debug=true", data=body, headers=DEV)
    check_world(world, resp)
    check_world(world, client.get(f"/api/packages/dev/{path_name}/timestamps", headers=DEV))


QUERY_TEXT = st.one_of(st.text(max_size=200), st.sampled_from([
    " " * 3000 + "x", "name" + " " * 3000 + "=", 'name = "' + " " * 3000, "a and " * 500, "%" * 100, "%25" * 100,
    "name contains", "status != started and name starts with g", "x" * 5000]))


@FUZZ
@given(text=st.one_of(st.none(), QUERY_TEXT), order=st.one_of(st.none(), st.text(max_size=40),
                                                             st.sampled_from(["package", "!package,name", "dockerfile",
                                                                              "warnings,!cpu", "environmentVars"])),
       limit=st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 10**20).map(str)),
       page=st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 10**20).map(str)),
       path=st.sampled_from(["/api/docker/images", "/api/docker/containers", "/api/docker/images/count",
                             "/api/docker/containers/count"]))
def test_list_queries(world, token, text, order, limit, page, path):
    args = {k: v for k, v in {"text": text, "order": order, "limit": limit, "page": page}.items() if v is not None}
    resp = world["client"].get(path, query_string=args, headers={"Authorization": token})
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    if resp.status_code >= 400:
        assert resp.get_json()["message"]
