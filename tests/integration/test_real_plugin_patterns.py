"""Issue 13 with the Flask test client, SQLite and the in-memory orchestrator: the caller's identity reaches the
container, a started container whose port never accepts answers 502, and the client's docker methods that had no
route (image save/delete, container save by id, rebuild, services and their logs, `include`)."""
from __future__ import annotations

import dataclasses
import json
import logging

from grokemu.app import create_app
from grokemu.web.context import app_context
from tests.fake_upstream import add_container, proxy_url


def test_the_callers_session_token_reaches_the_container_as_x_user_api_key(ctx, client, token, upstream):
    cid = add_container(ctx, {})
    ctx.spawner.run(cid, "admin", await_start=True)
    client.get(proxy_url(cid, "/"), headers={"Authorization": token, "X-User-Api-Key": "spoofed"})
    assert upstream.header("X-User-Api-Key") == token
    assert upstream.header("Authorization") is None
    client.set_cookie("auth", token)
    client.get(proxy_url(cid, "/"))  # a browser: the cookie only
    assert upstream.header("X-User-Api-Key") == token and upstream.header("Cookie") is None
    assert token not in json.dumps(ctx.settings.dev_keys)  # a session token, never a dev key


def test_the_token_passed_is_revoked_with_the_session(ctx, client, token, upstream):
    cid = add_container(ctx, {})
    ctx.spawner.run(cid, "admin", await_start=True)
    client.get(proxy_url(cid, "/"), headers={"Authorization": token})
    passed = upstream.header("X-User-Api-Key")
    assert client.get("/api/users/current", headers={"Authorization": passed}).status_code == 200
    ctx.auth.revoke(passed)  # what logout does
    assert client.get("/api/users/current", headers={"Authorization": passed}).status_code == 401


def test_a_started_container_nobody_listens_on_answers_502(settings, orchestrator, clock, upstream):
    app = create_app(dataclasses.replace(settings, listen_timeout=5), orchestrator=orchestrator, clock=clock,
                     background=False)
    context = app_context(app)
    client = app.test_client()
    token = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"}).get_json()["token"]
    cid = add_container(context, {})
    orchestrator.apps_ready = False  # a queue worker: nothing listens, no HEALTHCHECK
    context.spawner.run(cid, "admin")
    clock.advance(6)
    context.spawner.tick()
    c = client.get(f"/api/docker/containers/{cid}", headers={"Authorization": token}).get_json()
    assert c["status"] == "started" and any(w.startswith("nothing listens on port") for w in c["warnings"])
    resp = client.get(proxy_url(cid, "/"), headers={"Authorization": token})
    assert resp.status_code == 502 and "nothing listens on port" in resp.get_json()["datagrok-error"]
    orchestrator.apps_ready = True  # it came up late: requests go through, the warning goes
    assert client.get(proxy_url(cid, "/"), headers={"Authorization": token}).status_code == 200
    c = client.get(f"/api/docker/containers/{cid}", headers={"Authorization": token}).get_json()
    assert not any(w.startswith("nothing listens") for w in c["warnings"])


def test_image_save_rebuild_and_delete(ctx, client, token):
    cid = add_container(ctx, {})
    image_id = ctx.store.get_container(cid).image_id
    auth = {"Authorization": token}
    body = {"#type": "DockerImage", "id": image_id, "friendlyName": "Renamed", "status": "error"}
    saved = client.post(f"/api/docker/images/{image_id}", json=body, headers=auth)
    assert saved.status_code == 200 and saved.get_json()["friendlyName"] == "Renamed"
    assert saved.get_json()["status"] == "ready"  # the server's field, not the client's
    assert client.get(f"/api/docker/images/{image_id}/rebuild", headers=auth).get_json()["status"] in (
        "pending validation", "validating", "ready")
    assert client.get(f"/api/docker/images/{image_id}?include=package", headers=auth).status_code == 200
    assert client.delete(f"/api/docker/images/{image_id}", headers=auth).get_json() == {"id": image_id,
                                                                                       "isDeleted": True}
    assert client.get(f"/api/docker/images/{image_id}", headers=auth).status_code == 404
    assert client.get(f"/api/docker/containers/{cid}", headers=auth).status_code == 404  # its container went too
    assert client.delete(f"/api/docker/images/{image_id}", headers=auth).status_code == 404


def test_container_save_by_id(ctx, client, token):
    cid = add_container(ctx, {})
    auth = {"Authorization": token}
    resp = client.post(f"/api/docker/containers/{cid}", json={"#type": "DockerContainer", "id": cid,
                                                               "desiredInstances": 1}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["desiredInstances"] == 1
    other = client.post(f"/api/docker/containers/{cid}", json={"id": "another"}, headers=auth)
    assert other.status_code == 400


def test_services_and_their_logs(ctx, client, token, monkeypatch):
    monkeypatch.setattr(logging.getLogger("grokemu"), "level", logging.INFO)  # as `grokemu up` configures it
    monkeypatch.setattr(logging.getLogger("grokemu.services.spawner"), "disabled", False)  # other tests' dictConfig
    monkeypatch.setattr(logging.getLogger("grokemu.services.spawner"), "level", logging.NOTSET)
    auth = {"Authorization": token}
    services = client.get("/api/docker/services", headers=auth).get_json()
    assert services == ["grok_spawner", "grok_registry_proxy", "datlas"]
    cid = add_container(ctx, {})
    ctx.spawner.run(cid, "admin", await_start=True)  # logs "container ...: started"
    logs = client.get("/api/docker/services/grok_spawner/logs?limit=50", headers=auth)
    assert logs.status_code == 200 and isinstance(logs.get_json(), str) and "started" in logs.get_json()
    assert client.get("/api/docker/services/nope/logs", headers=auth).status_code == 404
    assert client.get("/api/docker/services/datlas/logs?limit=x", headers=auth).status_code == 400
