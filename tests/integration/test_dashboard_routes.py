"""The dashboard's own routes (web/dashboard.py, services/dashboard.py) with the Flask test client and the fake
orchestrator; the page itself is driven in Chromium by tests/e2e/test_dashboard.py."""
from __future__ import annotations

import io
import zipfile

from tests.helpers import hello_package, package_zip


def _publish(client, ctx, name="@acme/dash", **kw):
    r = client.post(f"/api/packages/dev/{name}?debug=true", data=package_zip(hello_package(name, **kw)),
                    headers={"Authorization": "Dev admin"})
    assert r.status_code == 200, r.get_json()
    ctx.scheduler.run_once()


def test_snapshot_has_cards_without_the_heavy_texts(client, ctx, token):
    _publish(client, ctx)
    snap = client.get("/_grokemu/dashboard/snapshot", headers={"Authorization": token}).get_json()
    [c] = snap["containers"]
    [i] = snap["images"]
    assert c["status"] == "started" and i["status"] == "ready"
    assert "lastLogs" not in c and "logs" not in i and "dockerfile" not in i
    assert c["grokemu"]["requests"] == 0 and c["grokemu"]["idleAt"] is None  # no shutdown_timeout
    assert i["grokemu"]["hasBuildContext"] is True


def test_idle_countdown_for_a_shutdown_timeout_container(client, ctx, token, clock):
    _publish(client, ctx, container={"shutdown_timeout": 2})
    [c] = client.get("/_grokemu/dashboard/snapshot", headers={"Authorization": token}).get_json()["containers"]
    assert c["grokemu"]["idleAt"] == c["grokemu"]["statusSince"] + 120


def test_download_context_is_a_zip_of_the_dockerfile_folder(client, ctx, token):
    _publish(client, ctx)
    [image] = ctx.store.list_images()
    r = client.get(f"/_grokemu/images/{image.id}/context.zip", headers={"Authorization": token})
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert "attachment" in r.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(r.data)) as z:
        assert sorted(z.namelist()) == ["Dockerfile", "hello.txt"]
        assert z.read("Dockerfile").startswith(b"FROM scratch")
    assert client.get("/_grokemu/images/nope/context.zip", headers={"Authorization": token}).status_code == 404


def test_rebuild_builds_from_the_dockerfile_again(client, ctx, token):
    _publish(client, ctx)
    [image] = ctx.store.list_images()
    r = client.post(f"/_grokemu/images/{image.id}/rebuild", headers={"Authorization": token})
    assert r.status_code == 200 and r.get_json()["status"] == "pending validation"
    ctx.scheduler.run_once()
    again = ctx.store.get_image(image.id)
    assert again.status.value == "ready" and "Building datagrok/" in again.logs


def test_subscribers_hear_container_and_image_changes(client, ctx):
    heard = []
    unsubscribe = ctx.activity.subscribe(heard.append)
    _publish(client, ctx)
    unsubscribe()
    assert "image" in heard and "container" in heard
    ctx.activity.record_request("x", 200, 12.5)
    assert ctx.activity.stats("x").requests == 1 and ctx.activity.stats("x").last_cold_start_ms == 12.5
