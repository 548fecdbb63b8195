"""A container's USER_API_KEY lives exactly as long as the container runs; a dev-key session lives `session_ttl`.
Flask test client + SQLite + the fake orchestrator; the token is read from the RunSpec the spawner handed it."""
from __future__ import annotations

import json

import pytest

from tests.helpers import hello_package, package_zip

DEV = {"Authorization": "Dev admin"}
CURRENT = "/api/users/current"


def auth(token):
    return {"Authorization": token}


def publish(client, ctx, token, container=None):
    """Publish a package with one container (via the API, as `grok publish`), validate it, answer its id."""
    resp = client.post("/api/packages/dev/@acme/grokprobe?debug=true&rebuild=false&dropDb=false",
                       data=package_zip(hello_package(container=container or {"on_demand": True})), headers=DEV)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    ctx.scheduler.run_once()
    [container] = client.get("/api/docker/containers", headers=auth(token)).get_json()
    return container["id"]


def start(client, token, cid):
    resp = client.get(f"/api/docker/containers/{cid}/run?awaitStart=true", headers=auth(token))
    assert resp.status_code == 200 and resp.get_json()["status"] == "started", resp.get_data(as_text=True)


def user_api_key(ctx, orchestrator, cid):
    docker_id = ctx.store.get_container(cid).docker_id
    return orchestrator.spec_of(docker_id).env["USER_API_KEY"]


def works(client, key):
    resp = client.get(CURRENT, headers=auth(key))
    return resp.status_code == 200 and resp.get_json()["login"] == "admin"


def refused(client, key):
    resp = client.get(CURRENT, headers=auth(key))
    return resp.status_code == 401


@pytest.fixture
def running(client, ctx, orchestrator, token):
    """(container id, its USER_API_KEY) for a started container that idles out after 1 minute."""
    cid = publish(client, ctx, token, {"on_demand": True, "shutdown_timeout": 1})
    start(client, token, cid)
    key = user_api_key(ctx, orchestrator, cid)
    assert key != token and works(client, key)
    assert ctx.auth.is_container_token(key)
    return cid, key


def test_key_refused_after_user_stop(client, ctx, token, running):
    cid, key = running
    resp = client.get(f"/api/docker/containers/{cid}/stop?awaitStop=true", headers=auth(token))
    assert resp.get_json()["status"] == "stopped by user"
    assert refused(client, key)
    assert works(client, token)  # the user's own session is untouched


def test_key_refused_after_delete(client, ctx, token, running):
    cid, key = running
    assert client.delete(f"/api/docker/containers/{cid}", headers=auth(token)).status_code == 200
    assert refused(client, key)


def test_key_refused_after_idle_shutdown(client, ctx, clock, token, running):
    cid, key = running
    clock.advance(30)
    ctx.scheduler.run_once()
    assert works(client, key)  # not idle yet
    clock.advance(31)
    ctx.scheduler.run_once()
    assert ctx.store.get_container(cid).status.value == "stopped by system"
    assert refused(client, key)


def test_key_refused_after_the_container_crashes(client, ctx, orchestrator, token, running):
    cid, key = running
    orchestrator.crash(ctx.store.get_container(cid).docker_id)
    ctx.scheduler.run_once()
    assert ctx.store.get_container(cid).status.value == "error"
    assert refused(client, key)


def test_key_refused_after_the_container_vanishes(client, ctx, orchestrator, token, running):
    cid, key = running
    orchestrator.remove(ctx.store.get_container(cid).docker_id)  # `docker rm -f` behind grokemu's back
    ctx.scheduler.run_once()
    assert ctx.store.get_container(cid).status.value == "stopped by system"
    assert refused(client, key)


def test_a_restart_mints_a_new_key_and_kills_the_old(client, ctx, orchestrator, token, running):
    cid, key = running
    client.get(f"/api/docker/containers/{cid}/stop?awaitStop=true", headers=auth(token))
    start(client, token, cid)
    new_key = user_api_key(ctx, orchestrator, cid)
    assert new_key != key
    assert works(client, new_key) and refused(client, key)


def test_key_refused_after_reset_but_the_user_session_survives(client, ctx, token, running):
    _, key = running
    resp = client.post("/_grokemu/reset", headers=auth(token))
    assert resp.status_code == 200
    assert refused(client, key)
    assert works(client, token)


def test_container_key_outlives_session_ttl_while_the_container_runs(client, ctx, clock, orchestrator, token):
    cid = publish(client, ctx, token, {"on_demand": True})  # no shutdown_timeout: never idles out
    start(client, token, cid)
    key = user_api_key(ctx, orchestrator, cid)
    clock.advance(ctx.settings.session_ttl + 60)
    ctx.scheduler.run_once()
    assert ctx.store.get_container(cid).status.value == "started"
    assert works(client, key)
    assert refused(client, token)  # while the dev-key session of the same user has expired


def test_key_refused_after_a_failed_start(client, ctx, orchestrator, token, monkeypatch):
    cid = publish(client, ctx, token)
    minted = []

    def run_and_fail(spec):
        minted.append(spec.env["USER_API_KEY"])
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(orchestrator, "run", run_and_fail)
    client.get(f"/api/docker/containers/{cid}/run?awaitStart=true", headers=auth(token))
    assert ctx.store.get_container(cid).status.value == "error"
    assert minted and refused(client, minted[0])


def test_key_refused_when_the_app_dies_before_it_is_ready(client, ctx, orchestrator, token):
    cid = publish(client, ctx, token)
    orchestrator.apps_ready = False  # holds it in `checking`
    client.get(f"/api/docker/containers/{cid}/run", headers=auth(token))
    assert ctx.store.get_container(cid).status.value == "checking"
    key = user_api_key(ctx, orchestrator, cid)
    assert works(client, key)  # a starting app may already call the API
    orchestrator.crash(ctx.store.get_container(cid).docker_id)
    ctx.scheduler.run_once()
    assert ctx.store.get_container(cid).status.value == "error"
    assert refused(client, key)


def test_dev_key_session_expires_after_session_ttl(client, clock, ctx):
    body = client.post("/api/users/login/dev", headers=DEV).get_json()
    token = body["token"]
    clock.advance(ctx.settings.session_ttl - 1)
    assert works(client, token)
    clock.advance(1)
    resp = client.get(CURRENT, headers=auth(token))
    assert resp.status_code == 401
    assert "session expired: log in again" in json.dumps(resp.get_json())
    fresh = client.post("/api/users/login/dev", headers=DEV).get_json()["token"]  # logging in again works
    assert works(client, fresh)
