"""Attacks on `POST /_grokemu/containers/<id>/replace` (`grokemu dev`'s live replacement, web/admin.py): it changes
what runs, so it needs a session and our origin like every state-changing call, and any body, however strange, gets
a clear 4xx ApiError and leaves the container as it was."""
from __future__ import annotations

import json

import pytest

from tests.helpers import hello_package, package_zip

NAME = "@acme/replaceprobe"


@pytest.fixture
def started(client, ctx, orchestrator, token):
    """A published, started container, and a new build of its image in the (fake) daemon."""
    r = client.post(f"/api/packages/dev/{NAME}?debug=true", data=package_zip(hello_package(NAME)),
                    headers={"Authorization": "Dev admin"})
    assert r.status_code == 200, r.get_json()
    ctx.scheduler.run_once()
    [c] = ctx.store.list_containers()
    assert c.status.value == "started"
    image = ctx.store.get_image(c.image_id)
    orchestrator.add_image(f"datagrok/{image.name}:admin", [8000])
    return c, f"datagrok/{image.name}:admin"


def url(cid: str) -> str:
    return f"/_grokemu/containers/{cid}/replace"


def test_no_session_no_other_origin_no_cookie_from_another_site(client, started):
    c, image = started
    body = json.dumps({"image": image})
    assert client.post(url(c.id), data=body, content_type="application/json").status_code == 401
    assert client.post(url(c.id), data=body, content_type="application/json",
                       headers={"Authorization": "not-a-token"}).status_code == 401
    assert client.post(url(c.id), data=body, content_type="application/json",
                       headers={"Authorization": "Dev admin"}).status_code == 401  # a dev key is no session here


def test_cross_origin_is_refused(client, started, token):
    c, image = started
    r = client.post(url(c.id), data=json.dumps({"image": image}), content_type="application/json",
                    headers={"Authorization": token, "Origin": "http://evil.example"})
    assert r.status_code == 403
    assert r.get_json()["#type"] == "ApiError"


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b"null", b'"datagrok/x:y"', b'{"image": 5}', b'{"image": ""}', b'{"image": ["a"]}',
    b'{"other": "x"}', b"[" * 5000 + b"]" * 5000, json.dumps({"image": "x" * 100_000}).encode(),
    b'{"image": "datagrok/someone-else:admin"}', b'{"image": "datagrok/../../etc:passwd"}', b"\xff\xfe\x00",
])
def test_strange_bodies_get_a_clear_4xx_and_change_nothing(client, started, token, ctx, body):
    c, _ = started
    r = client.post(url(c.id), data=body, content_type="application/json", headers={"Authorization": token})
    assert 400 <= r.status_code < 500, (r.status_code, r.data[:300])
    assert r.get_json()["#type"] == "ApiError"
    after = ctx.store.get_container(c.id)
    assert after.docker_id == c.docker_id and after.status.value == "started"


def test_unknown_container_is_404(client, token, started):
    _, image = started
    r = client.post(url("00000000-0000-0000-0000-000000000009"), data=json.dumps({"image": image}),
                    content_type="application/json", headers={"Authorization": token})
    assert r.status_code == 404 and r.get_json()["#type"] == "ApiError"


def test_the_real_thing_keeps_the_entity(client, started, token, ctx):
    c, image = started
    r = client.post(url(c.id), data=json.dumps({"image": image}), content_type="application/json",
                    headers={"Authorization": token})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["id"] == c.id and r.get_json()["status"] == "started"
    assert ctx.store.get_container(c.id).docker_id != c.docker_id
