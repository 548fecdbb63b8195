"""Admin reset resets every stateful service: after `POST /_grokemu/reset`, nothing from before is served.

The bug this holds: the proxy cached a started container keyed on the spawner's generation, and reset never moved
that generation on, so a proxied request to a deleted container id was still answered by the old upstream (which
the in-memory orchestrator, like a container Docker is slow to remove, leaves listening)."""
from __future__ import annotations


from tests.fake_upstream import add_container, proxy_url


def test_a_deleted_container_is_404_after_reset_and_its_upstream_is_never_reached(client, ctx, token, upstream):
    cid = add_container(ctx, {"shutdown_timeout": 1})
    ctx.spawner.run(cid, "admin", await_start=True)
    resp = client.get(proxy_url(cid, "/before"), headers={"Authorization": token})
    assert resp.status_code == 200 and resp.get_json() == {"path": "/before"}
    assert ctx.activity.last_active(cid) is not None
    reached = len(upstream.seen)

    resp = client.post("/_grokemu/reset", headers={"Authorization": token})
    assert resp.status_code == 200 and resp.get_json()["entities"] == 2

    for path in ("/before", "/after"):
        resp = client.get(proxy_url(cid, path), headers={"Authorization": token})
        assert resp.status_code == 404, resp.get_data()
        assert cid in resp.get_json()["datagrok-error"]
    assert len(upstream.seen) == reached  # the old upstream got nothing after the reset
    assert ctx.activity.last_active(cid) is None and ctx.activity.active(cid) == 0
    assert ctx.store.get_container(cid) is None


def test_reset_gives_running_containers_their_stop_timeout_grace(tmp_path, orchestrator, clock):

    from grokemu.app import create_app
    from grokemu.config import Settings
    from grokemu.web.context import app_context

    settings = Settings(data_dir=tmp_path / "data", port=8080, stop_timeout=3)
    context = app_context(create_app(settings, orchestrator=orchestrator, clock=clock, background=False))
    running = [context.spawner.run(add_container(context, name=f"app{i}"), "admin", await_start=True).docker_id
               for i in range(2)]
    context.admin.reset()
    assert sorted(orchestrator.stops) == sorted((docker_id, 3) for docker_id in running)
    assert all(orchestrator.inspect(docker_id) is None for docker_id in running)
