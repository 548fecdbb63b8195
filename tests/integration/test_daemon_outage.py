"""The Docker daemon going away and coming back (docs/faults.md §4), through HTTP, on the in-memory orchestrator: the
API and fetchProxy answer 503 ApiError at once (never a 500, never a hang), health and the dashboard say "Docker
unreachable", and when the daemon is back the container that should run runs again, once. The real daemon killed
with SIGTERM is tests/e2e/test_daemon_restart.py."""
from __future__ import annotations

import time

import pytest
import requests

from grokemu.domain.errors import DOCKER_UNREACHABLE
from grokemu.web.dashboard import service as dashboard
from tests.fake_upstream import Upstream, add_container, proxy_url, status
from tests.integration.test_proxy import close_frame, live_upstream  # noqa: F401  (a fixture)


def outage(ctx, orchestrator, upstream):
    """dockerd on SIGTERM: its containers stop (the app is gone from its port), then the daemon itself."""
    upstream.kill()
    orchestrator.daemon_down()
    ctx.scheduler.run_once()


def test_during_the_outage_everything_answers_503_at_once_and_health_says_so(app, client, token, ctx, orchestrator,
                                                                             upstream):
    cid = add_container(ctx, {"on_demand": True})
    ctx.spawner.run(cid, "admin", await_start=True)
    assert client.get(proxy_url(cid, "/x"), headers={"Authorization": token}).status_code == 200
    outage(ctx, orchestrator, upstream)

    began = time.monotonic()
    resp = client.get(proxy_url(cid, "/x"), headers={"Authorization": token})
    took = time.monotonic() - began
    body = resp.get_json()
    assert resp.status_code == 503 and body["#type"] == "ApiError" and resp.headers["api-error"] == "true", body
    assert body["message"].startswith("Container probe-app did not answer: Docker unreachable"), body
    assert body["datagrok-error"] == body["message"]
    assert took < 10, f"{took:.1f} s"  # bounded by the explain poll (2 s), never by proxy_request_timeout

    run = client.get(f"/api/docker/containers/{cid}/run", headers={"Authorization": token})
    assert run.status_code == 503 and run.get_json()["message"] == DOCKER_UNREACHABLE
    health = client.get("/_grokemu/health", headers={"Authorization": token}).get_json()
    assert health["status"] == "ok"  # grokemu itself is up
    assert health["docker"] == {"reachable": False, "message": DOCKER_UNREACHABLE,
                                "unreachableSince": ctx.clock.now()}
    page = client.get("/", headers={"Authorization": token}).get_data(as_text=True)
    assert '<span id="docker-state">Docker unreachable</span>' in page and DOCKER_UNREACHABLE in page
    with app.app_context():
        assert dashboard().snapshot()["docker"]["reachable"] is False  # what the live feed pushes
    # the rest of the API keeps working
    assert client.get("/api/docker/containers", headers={"Authorization": token}).status_code == 200


def test_when_the_daemon_is_back_the_container_runs_again_and_answers(client, token, ctx, orchestrator, upstream):
    cid = add_container(ctx, {"on_demand": True})
    old = ctx.spawner.run(cid, "admin", await_start=True).docker_id
    outage(ctx, orchestrator, upstream)
    assert client.get(proxy_url(cid, "/x"), headers={"Authorization": token}).status_code == 503

    again = Upstream()  # the app of the new container
    try:
        orchestrator.fixed_host_port = again.port
        orchestrator.daemon_up()
        ctx.scheduler.run_once()  # the watcher sees it back and reconciles
        assert status(ctx, cid) == "started"
        c = ctx.spawner.get(cid)
        assert c.docker_id != old and [r.id for r in orchestrator.list_labelled({"grokemu.container": cid})] == \
            [c.docker_id]
        resp = client.get(proxy_url(cid, "/y"), headers={"Authorization": token})
        assert resp.status_code == 200 and again.last()["path"] == "/y"
        health = client.get("/_grokemu/health", headers={"Authorization": token}).get_json()
        assert health["docker"] == {"reachable": True, "message": "ok", "unreachableSince": None}
    finally:
        again.close()


@pytest.fixture
def warm(live, live_upstream):  # noqa: F811  (fixtures imported above)
    """A started container served by the real server, its connection kept alive: the relay loop's fast path."""
    up, cid = live_upstream
    session = requests.Session()
    session.headers["Authorization"] = live.token
    url = f"http://{live.host}/api/docker/containers/proxy/{cid}"
    assert session.get(f"{url}/a", timeout=30).status_code == 200  # the cold start
    assert session.get(f"{url}/b", timeout=30).status_code == 200  # warm
    return live, up, cid, session, url


def test_the_relay_loop_and_websockets_answer_503_too(warm):
    server, up, cid, session, url = warm
    up.kill()
    server.ctx.orchestrator.daemon_down()
    server.ctx.scheduler.run_once()  # the watcher's tick (the live fixture runs no scheduler thread)
    assert server.ctx.spawner.docker_state()["reachable"] is False
    began = time.monotonic()
    resp = session.get(f"{url}/c", timeout=30)  # on the kept-alive connection
    took = time.monotonic() - began
    assert resp.status_code == 503 and resp.json()["#type"] == "ApiError", resp.text
    assert "Docker unreachable" in resp.json()["message"]
    assert took < 10, f"{took:.1f} s"
    ws = server.ws(cid)
    code, reason = close_frame(ws)
    assert code == 4503 and "Docker unreachable" in reason, (code, reason)
    ws.close()


def test_a_request_the_container_drops_while_the_daemon_is_gone_is_answered_503(live, live_upstream):  # noqa: F811
    up, cid = live_upstream
    h = {"Authorization": live.token}
    url = f"http://{live.host}/api/docker/containers/proxy/{cid}"
    assert requests.get(f"{url}/a", headers=h, timeout=30).status_code == 200
    live.ctx.orchestrator.daemon_down(stop_containers=False)
    # the request reaches the app (a started container is not asked about), which drops it without an answer:
    # grokemu asks the daemon why, cannot, and says so
    resp = requests.get(f"{url}/hangup", headers=h, timeout=30)
    assert up.last()["path"] == "/hangup"
    assert resp.status_code == 503 and resp.json()["message"].startswith(
        "Container probe-app did not answer: Docker unreachable"), resp.text
