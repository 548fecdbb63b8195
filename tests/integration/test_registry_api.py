"""The /v2 registry API and the token endpoints through the Flask test client: wire headers docker depends on
(docs/registry.md), auth as Datagrok's proxy does it, the OCI error envelope. No Docker needed."""
from __future__ import annotations

import base64
import hashlib
import io
import json

import jwt
import pytest

from grokemu.app import create_app
from grokemu.config import Settings
from grokemu.domain.clock import ManualClock
from grokemu.web.context import app_context

HOST = "localhost:5000"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def app(tmp_path, clock):
    return create_app(Settings(data_dir=tmp_path, port=5000), orchestrator=None, clock=clock, background=False)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path


def get_token(client, *scopes: str, key: str | None = "admin", path="/token") -> str:
    query = "&".join(f"scope={s}" for s in scopes)
    headers = basic("any", key) if key is not None else {}
    r = client.get(f"{path}?service={HOST}&{query}", headers=headers, base_url=f"http://{HOST}")
    assert r.status_code == 200, r.data
    return r.json["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def push_token(client, repo: str) -> dict[str, str]:
    return bearer(get_token(client, f"repository:{repo}:push,pull"))


def upload(client, repo: str, data: bytes, headers) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/", headers=headers)
    assert r.status_code == 202, r.data
    r = client.put(f"{r.headers['Location']}?digest={sha(data)}", data=data, headers=headers)
    assert r.status_code == 201, r.data
    return sha(data)


def manifest_for(config: bytes, layers: list[bytes], media_type=DOCKER_MANIFEST) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type,
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "size": len(config), "digest": sha(config)},
                       "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                   "size": len(x), "digest": sha(x)} for x in layers]}).encode()


def push_image(client, repo: str, tag: str, headers, layers=(b"layer one", b"layer two")) -> tuple[str, bytes]:
    config = b'{"architecture":"amd64","os":"linux"}'
    for b in (config, *layers):
        upload(client, repo, b, headers)
    body = manifest_for(config, list(layers))
    r = client.put(f"/v2/{repo}/manifests/{tag}", data=body, headers={**headers, "Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 201, r.data
    assert r.headers["Docker-Content-Digest"] == sha(body)
    return sha(body), body


def assert_oci_error(r, status: int, code: str):
    assert r.status_code == status, (r.status_code, r.data)
    body = r.json
    assert body["errors"][0]["code"] == code and body["errors"][0]["message"], body
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def blob_files(data_dir) -> list:
    root = data_dir / "registry" / "blobs"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- auth -------------------------------------------------------------------------------------------------------------

def test_base_challenges_with_absolute_realm_from_host(client):
    r = client.get("/v2/", base_url="http://localhost:5123")
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="http://localhost:5123/token",service="localhost:5123"'
    r = client.get("/v2/", base_url="http://127.0.0.1:5123")
    assert 'realm="http://127.0.0.1:5123/token"' in r.headers["WWW-Authenticate"]


def test_docker_login_flow(client):
    # docker login: token request without scope, then GET /v2/ with the token must be 200 (trap T8)
    r = client.get(f"/token?account=any&client_id=docker&offline_token=true&service={HOST}",
                   headers=basic("any", "admin"))
    assert r.status_code == 200
    body = r.json
    assert body["token"] == body["access_token"] and body["expires_in"] == 1800 and "refresh_token" not in body
    r = client.get("/v2/", headers=bearer(body["token"]))
    assert r.status_code == 200 and r.json == {}
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_bad_key_is_refused_with_json_error(client):
    for path in ("/token", "/api/docker/token"):
        r = client.get(f"{path}?service={HOST}&scope=repository:a:push,pull", headers=basic("any", "wrong"))
        assert r.status_code == 401
        assert r.json["errors"][0] == {"code": "UNAUTHORIZED", "message": "bad credentials", "detail": None}


def test_legacy_key_as_user_name(client):
    r = client.get("/token?scope=repository:a:push", headers=basic("admin", "whatever"))
    assert r.status_code == 200


def test_oauth_form_token_request(client):
    r = client.post("/token", data={"grant_type": "password", "username": "any", "password": "admin",
                                    "service": HOST, "scope": "repository:team/app:push,pull", "client_id": "x"})
    assert r.status_code == 200 and r.json["scope"] == "repository:team/app:push,pull"
    claims = jwt.decode(r.json["access_token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["push", "pull"]}]
    r = client.post("/api/docker/token", data={"grant_type": "password", "username": "any", "password": "nope"})
    assert r.status_code == 401 and r.json["errors"][0]["message"] == "bad credentials"
    assert client.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x"}).status_code == 401


def test_token_claims_and_jwks(client, clock):
    token = get_token(client, "repository:team/app:push,pull", "repository:other:pull", path="/api/docker/token")
    jwks = client.get("/api/docker/keys").json
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False, "verify_exp": False,
                                                                     "verify_iat": False, "verify_nbf": False})
    assert claims["lim"] == "docker" and claims["sub"] == "admin" and claims["exp"] - claims["iat"] == 1800
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["push", "pull"]},
                                {"type": "repository", "name": "other", "actions": ["pull"]}]


def test_anonymous_token_is_pull_only(client):
    token = get_token(client, "repository:team/app:push,pull", key=None)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
    r = client.post("/v2/team/app/blobs/uploads/", headers=bearer(token))
    assert_oci_error(r, 403, "DENIED")  # RFC 6750 §3.1: insufficient_scope is a 403, with the scope needed
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert 'scope="repository:team/app:pull,push"' in r.headers["WWW-Authenticate"]


def test_push_without_token(client):
    r = client.post("/v2/team/app/blobs/uploads/", base_url=f"http://{HOST}")
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"] == (f'Bearer realm="http://{HOST}/token",service="{HOST}",'
                                             'scope="repository:team/app:pull,push"')
    for method, url in (("PUT", "/v2/team/app/manifests/v1"), ("DELETE", "/v2/team/app/manifests/v1"),
                        ("PATCH", "/v2/team/app/blobs/uploads/" + "0" * 32),
                        ("DELETE", f"/v2/team/app/blobs/{sha(b'x')}")):
        assert client.open(url, method=method, data=b"{}").status_code == 401


def test_token_for_repo_a_does_not_open_repo_b(client):
    headers = push_token(client, "team/a")
    upload(client, "team/a", b"fine", headers)
    r = client.post("/v2/team/b/blobs/uploads/", headers=headers)
    assert_oci_error(r, 403, "DENIED")
    assert 'scope="repository:team/b:pull,push"' in r.headers["WWW-Authenticate"]
    r = client.put("/v2/team/b/manifests/v1", data=b"{}", headers={**headers, "Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 403
    r = client.delete(f"/v2/team/a/blobs/{sha(b'fine')}", headers=headers)  # push does not imply delete
    assert r.status_code == 403


def test_session_of_repo_a_cannot_be_finished_through_repo_b(client):
    a, b = push_token(client, "team/a"), push_token(client, "team/b")
    loc = client.post("/v2/team/a/blobs/uploads/", headers=a).headers["Location"]
    r = client.put(loc.replace("team/a", "team/b") + f"?digest={sha(b'')}", headers=b)
    assert_oci_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_expired_token(client, clock):
    headers = push_token(client, "team/a")
    upload(client, "team/a", b"before", headers)
    clock.advance(1801)
    r = client.post("/v2/team/a/blobs/uploads/", headers=headers)
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert client.get("/v2/", headers=headers).status_code == 401
    upload(client, "team/a", b"after", push_token(client, "team/a"))  # a fresh token works


def test_garbage_and_foreign_tokens(client, tmp_path, clock):
    from grokemu.services.tokens import TokenService
    foreign = TokenService(tmp_path / "elsewhere", clock).issue(
        "admin", [{"type": "repository", "name": "a", "actions": ["push"]}])
    for token in ("garbage", foreign):
        assert_oci_error(client.post("/v2/a/blobs/uploads/", headers=bearer(token)), 401, "UNAUTHORIZED")


# -- push and pull ----------------------------------------------------------------------------------------------------

def test_docker_style_push_and_pull(client, data_dir):
    headers = push_token(client, "team/app")
    layer = b"L" * 300_393
    # one PATCH, chunked, no Content-Length, no Content-Range (trap T4), then PUT ?digest= with an empty body
    r = client.post("/v2/team/app/blobs/uploads/", headers=headers)
    assert r.status_code == 202 and r.headers["Range"] == "0-0" and r.headers["Content-Length"] == "0"
    assert r.headers["Docker-Upload-UUID"] and r.headers["Location"].startswith("/v2/team/app/blobs/uploads/")
    loc = r.headers["Location"]
    r = client.patch(loc, input_stream=io.BytesIO(layer), headers={**headers, "Transfer-Encoding": "chunked"},
                     environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 202 and r.headers["Range"] == "0-300392"  # no `bytes=` (trap T1), end = size-1 (T2)
    r = client.put(f"{loc}?digest={sha(layer)}", headers=headers)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha(layer)
    assert r.headers["Location"] == f"/v2/team/app/blobs/{sha(layer)}"
    r = client.head(f"/v2/team/app/blobs/{sha(layer)}", headers=headers)
    assert r.status_code == 200 and r.headers["Content-Length"] == "300393"
    assert r.headers["Docker-Content-Digest"] == sha(layer)

    config = b'{"architecture":"amd64","os":"linux","rootfs":{}}'
    upload(client, "team/app", config, headers)
    body = manifest_for(config, [layer])
    r = client.put("/v2/team/app/manifests/v1", data=body, headers={**headers, "Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha(body)  # trap T3

    # pull, anonymously: HEAD by tag, GET by digest, blobs (Datagrok: GET/HEAD need no auth)
    r = client.head("/v2/team/app/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200 and r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.headers["Content-Length"] == str(len(body)) and r.headers["Docker-Content-Digest"] == sha(body)
    assert r.data == b""
    r = client.get(f"/v2/team/app/manifests/{sha(body)}")
    assert r.status_code == 200 and r.data == body and r.headers["Content-Type"] == DOCKER_MANIFEST
    r = client.get(f"/v2/team/app/blobs/{sha(layer)}")
    assert r.status_code == 200 and r.data == layer and "Content-Encoding" not in r.headers
    r = client.get(f"/v2/team/app/blobs/{sha(layer)}", headers={"Range": "bytes=100-"})  # trap T15
    assert r.status_code == 206 and r.headers["Content-Range"] == "bytes 100-300392/300393"
    assert r.data == layer[100:]
    # an anonymous pull token works the same way
    anon = bearer(get_token(client, "repository:team/app:pull", key=None))
    assert client.get("/v2/team/app/manifests/v1", headers=anon).data == body
    assert sorted(p.name for p in blob_files(data_dir)) == sorted(
        d.split(":")[1] for d in (sha(layer), sha(config), sha(body)))


def test_monolithic_single_post_status_and_cancel(client):
    headers = push_token(client, "r")
    data = b"single post"
    r = client.post(f"/v2/r/blobs/uploads/?digest={sha(data)}", data=data, headers=headers)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha(data)
    assert client.head(f"/v2/r/blobs/{sha(data)}").status_code == 200
    loc = client.post("/v2/r/blobs/uploads", headers=headers).headers["Location"]  # no trailing slash either
    r = client.patch(loc, data=b"0123", headers={**headers, "Content-Range": "0-3",
                                                 "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-3"
    r = client.get(loc, headers=headers)
    assert r.status_code == 204 and r.headers["Range"] == "0-3" and r.headers["Location"] == loc
    r = client.patch(loc, data=b"89", headers={**headers, "Content-Range": "8-9"})
    assert_oci_error(r, 416, "BLOB_UPLOAD_INVALID")
    assert r.headers["Range"] == "0-3"
    assert client.delete(loc, headers=headers).status_code == 204
    assert_oci_error(client.get(loc, headers=headers), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(client.patch(loc, data=b"x", headers=headers), 404, "BLOB_UPLOAD_UNKNOWN")


def test_cross_repo_mount(client):
    a = push_token(client, "team/a")
    digest = upload(client, "team/a", b"shared layer", a)
    b = bearer(get_token(client, "repository:team/b:push,pull", "repository:team/a:pull"))
    assert client.head(f"/v2/team/b/blobs/{digest}").status_code == 404  # per-repo, so docker mounts
    r = client.post(f"/v2/team/b/blobs/uploads/?mount={digest}&from=team/a", headers=b)
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/team/b/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.head(f"/v2/team/b/blobs/{digest}").status_code == 200
    # stale candidate: 202 and a usable session (docker then PATCHes it)
    r = client.post(f"/v2/team/b/blobs/uploads/?mount={sha(b'nope')}&from=team/a", headers=b)
    assert r.status_code == 202 and r.headers["Docker-Upload-UUID"]


def test_digest_mismatch_stores_nothing(client, data_dir):
    headers = push_token(client, "r")
    loc = client.post("/v2/r/blobs/uploads/", headers=headers).headers["Location"]
    client.patch(loc, data=b"actual content", headers=headers)
    claimed = sha(b"claimed content")
    r = client.put(f"{loc}?digest={claimed}", headers=headers)
    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert blob_files(data_dir) == []
    assert client.head(f"/v2/r/blobs/{claimed}").status_code == 404
    assert client.get(f"/v2/r/blobs/{claimed}").json["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert client.head(f"/v2/r/blobs/{sha(b'actual content')}").status_code == 404
    # a manifest PUT by digest whose body hashes differently
    push_image(client, "r", "v1", headers)
    body = client.get("/v2/r/manifests/v1").data
    r = client.put(f"/v2/r/manifests/{sha(b'different')}", data=body,
                   headers={**headers, "Content-Type": DOCKER_MANIFEST})
    assert_oci_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("path", [
    "/v2/team/../etc/blobs/uploads/", "/v2/%2e%2e/blobs/uploads/", "/v2/a/%2E%2E/b/blobs/uploads/",
    "/v2/Team/app/blobs/uploads/", "/v2/a..b/blobs/uploads/", "/v2/_hidden/blobs/uploads/", "/v2/a$b/blobs/uploads/",
])
def test_invalid_names_are_refused(client, data_dir, path):
    headers = bearer(get_token(client, "repository:a:push"))
    assert_oci_error(client.post(path, headers=headers), 400, "NAME_INVALID")
    assert not (data_dir / "etc").exists() and not (data_dir / "registry" / "etc").exists()
    r = client.get(path.replace("blobs/uploads/", f"blobs/{sha(b'x')}"))
    assert_oci_error(r, 400, "NAME_INVALID")


def test_digest_with_slashes_matches_no_route(client):
    r = client.get("/v2/r/blobs/sha256:..%2F..%2Fetc")
    assert r.status_code == 404 and r.json["errors"][0]["code"]


@pytest.mark.parametrize("digest", ["sha256:..", "sha256:abc", "md5:" + "0" * 32,
                                    "sha256:" + "Z" * 64])
def test_invalid_digests_are_refused(client, digest):
    assert_oci_error(client.get(f"/v2/r/blobs/{digest}"), 400, "DIGEST_INVALID")
    assert_oci_error(client.get(f"/v2/r/manifests/{digest}"), 400, "DIGEST_INVALID")
    headers = push_token(client, "r")
    loc = client.post("/v2/r/blobs/uploads/", headers=headers).headers["Location"]
    assert_oci_error(client.put(f"{loc}?digest={digest}", headers=headers), 400, "DIGEST_INVALID")
    assert_oci_error(client.post(f"/v2/r/blobs/uploads/?mount={digest}&from=a", headers=headers), 400,
                     "DIGEST_INVALID")


def test_invalid_tag(client):
    assert_oci_error(client.get("/v2/r/manifests/.hidden"), 400, "TAG_INVALID")
    assert client.get("/v2/r/manifests/" + "t" * 129).status_code == 400


# -- manifests, listings, deletes -------------------------------------------------------------------------------------

def test_manifest_errors(client):
    headers = push_token(client, "r")
    assert_oci_error(client.get("/v2/r/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    r = client.put("/v2/r/manifests/v1", data=manifest_for(b"cfg", [b"missing"]),
                   headers={**headers, "Content-Type": DOCKER_MANIFEST})
    assert_oci_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert r.json["errors"][0]["detail"] == {"digest": sha(b"cfg")}
    r = client.put("/v2/r/manifests/v1", data=b"{not json", headers={**headers, "Content-Type": DOCKER_MANIFEST})
    assert_oci_error(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("body", [b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000])
def test_a_manifest_nested_deeper_than_pythons_stack_is_invalid_not_a_crash(client, body):
    headers = push_token(client, "r")
    for content_type in (DOCKER_MANIFEST, OCI_INDEX, ""):  # "": the type is guessed from the body
        r = client.put("/v2/r/manifests/v1", data=body, headers={**headers, "Content-Type": content_type})
        assert_oci_error(r, 400, "MANIFEST_INVALID")
        assert "nested too deeply" in r.json["errors"][0]["message"]
    assert_oci_error(client.get("/v2/r/manifests/v1", headers=headers), 404, "MANIFEST_UNKNOWN")  # nothing kept


def test_oci_manifest_and_index_keep_type_and_bytes(client):
    headers = push_token(client, "r")
    config = b"{}"
    upload(client, "r", config, headers)
    upload(client, "r", b"oci layer", headers)
    manifest = manifest_for(config, [b"oci layer"], OCI_MANIFEST).replace(b'"schemaVersion": 2',
                                                                         b'"schemaVersion":   2')
    r = client.put("/v2/r/manifests/amd64", data=manifest, headers={**headers, "Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    r = client.put("/v2/r/manifests/latest", data=index, headers={**headers, "Content-Type": OCI_INDEX})
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/r/manifests/{sha(index)}"
    r = client.get("/v2/r/manifests/latest")
    assert r.data == index and r.headers["Content-Type"] == OCI_INDEX
    r = client.get(f"/v2/r/manifests/{sha(manifest)}")
    assert r.data == manifest and r.headers["Content-Type"] == OCI_MANIFEST
    assert app_context(client.application).registry.resolve_manifest("r", "latest") == (
        sha(index), OCI_INDEX, len(index))


def test_tags_list_and_catalog_paginate(client):
    headers = push_token(client, "r")
    digest, body = push_image(client, "r", "v1", headers)
    for tag in ("a", "b", "c"):
        r = client.put(f"/v2/r/manifests/{tag}", data=body, headers={**headers, "Content-Type": DOCKER_MANIFEST})
        assert r.status_code == 201
    r = client.get("/v2/r/tags/list")
    assert r.json == {"name": "r", "tags": ["a", "b", "c", "v1"]} and "Link" not in r.headers
    r = client.get("/v2/r/tags/list?n=2")
    assert r.json["tags"] == ["a", "b"] and r.headers["Link"] == '</v2/r/tags/list?n=2&last=b>; rel="next"'
    r = client.get("/v2/r/tags/list?n=2&last=b")
    assert r.json["tags"] == ["c", "v1"]
    assert client.get("/v2/r/tags/list?n=2&last=v1").json["tags"] == []
    assert_oci_error(client.get("/v2/nothing/tags/list"), 404, "NAME_UNKNOWN")
    push_image(client, "a/b", "v1", push_token(client, "a/b"))
    r = client.get("/v2/_catalog")
    assert r.json == {"repositories": ["a/b", "r"]}
    r = client.get("/v2/_catalog?n=1")
    assert r.json == {"repositories": ["a/b"]} and 'last=a%2Fb' in r.headers["Link"]


def test_deletes(client):
    headers = bearer(get_token(client, "repository:r:push,pull,delete"))
    digest, _ = push_image(client, "r", "v1", headers)
    assert client.delete("/v2/r/manifests/v1", headers=headers).status_code == 202  # tag only
    assert client.get("/v2/r/manifests/v1").status_code == 404
    assert client.get(f"/v2/r/manifests/{digest}").status_code == 200
    assert client.delete(f"/v2/r/manifests/{digest}", headers=headers).status_code == 202
    assert_oci_error(client.get(f"/v2/r/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(client.delete(f"/v2/r/manifests/{digest}", headers=headers), 404, "MANIFEST_UNKNOWN")
    layer = sha(b"layer one")
    assert client.delete(f"/v2/r/blobs/{layer}", headers=headers).status_code == 202
    assert client.head(f"/v2/r/blobs/{layer}").status_code == 404
    assert_oci_error(client.delete(f"/v2/r/blobs/{layer}", headers=headers), 404, "BLOB_UNKNOWN")


def test_gc_after_delete(client, clock):
    headers = bearer(get_token(client, "repository:r:push,pull,delete"))
    digest, _ = push_image(client, "r", "v1", headers)
    client.delete(f"/v2/r/manifests/{digest}", headers=headers)
    clock.advance(7200)
    stats = app_context(client.application).registry.gc()
    assert stats["blobs_removed"] == 4 and stats["bytes_freed"] > 0


def test_unknown_registry_route_is_an_oci_error(client):
    r = client.get("/v2/r/nonsense")
    assert r.status_code == 404 and r.json["errors"][0]["code"]
