"""grok publish's requests, wire-exact (docs/grok-publish.md §1), against the Flask app with a fake
orchestrator: no Docker needed."""
from __future__ import annotations

import json

import pytest

from tests.helpers import hello_package, package_zip

DEV = {"Authorization": "Dev admin"}


def publish(client, name, files, *, debug=True, headers=DEV, duplicates=None, path=None):
    url = path or f"/api/packages/dev/{name}?debug={'true' if debug else 'false'}&rebuild=false&dropDb=false"
    return client.post(url, data=package_zip(files, duplicates), headers=headers)


def images(client, token, text=None):
    q = f"?text={text}" if text else ""
    resp = client.get(f"/api/docker/images{q}", headers={"Authorization": token})
    assert resp.status_code == 200
    return resp.get_json()


def test_timestamps_of_unknown_package_is_empty_200(client):
    # 404 here would make the CLI retry the legacy URL (dev-key.js:69-70)
    resp = client.get("/api/packages/dev/@acme/never/timestamps", headers=DEV)
    assert resp.status_code == 200 and resp.get_json() == {}


def test_login_current_and_info(client):
    resp = client.post("/api/users/login/dev", headers=DEV)
    body = resp.get_json()
    assert resp.status_code == 200 and body["isSuccess"] is True and body["token"]
    for header in (body["token"], f"Bearer {body['token']}"):
        assert client.get("/api/users/current", headers={"Authorization": header}).get_json()["login"] == "admin"
    client.set_cookie("auth", body["token"])
    assert client.get("/api/users/current").get_json()["login"] == "admin"
    legacy = client.post("/api/users/login/dev/k2").get_json()
    assert client.get("/api/users/current", headers={"Authorization": legacy["token"]}).get_json()["login"] == "alice"
    version = client.get("/api/info/server").get_json()["Version"]
    assert tuple(int(x) for x in version.split(".")[:2]) >= (1, 28)


@pytest.mark.parametrize("path", ["/api/users/current", "/api/docker/images", "/api/docker/containers",
                                  "/api/docker/images/count"])
def test_api_requires_auth_with_api_error(client, path):
    resp = client.get(path)
    assert resp.status_code == 401
    assert resp.get_json()["#type"] == "ApiError" and resp.get_json()["message"]
    assert client.get(path, headers={"Authorization": "not-a-token"}).status_code == 401


def test_bad_dev_key_is_rejected(client):
    resp = client.post("/api/users/login/dev", headers={"Authorization": "Dev wrong"})
    assert resp.status_code == 401 and resp.get_json()["#type"] == "ApiError"
    resp = publish(client, "@acme/grokprobe", hello_package(), headers={"Authorization": "Dev wrong"})
    assert resp.status_code == 401


def test_publish_scoped_package_creates_image_and_container(client, token, ctx):
    resp = publish(client, "@acme/grokprobe", hello_package(container={"cpu": 0.5, "on_demand": True}))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["#type"] != "ApiError"
    [image] = images(client, token)
    assert image["name"] == "grokprobe-hello" and image["dockerName"] == "grokprobe-hello"
    assert image["status"] == "pending validation" and image["version"] == "1.0.0"
    [container] = client.get("/api/docker/containers", headers={"Authorization": token}).get_json()
    assert container["name"] == "grokprobe-hello"
    assert container["status"] == "stopped by user" and container["desiredInstances"] == 0
    assert container["dockerfile"] == {"id": image["id"]}
    assert container["cpu"] == 0.5 and container["onDemand"] is True and container["memory"] == 512

    ctx.scheduler.run_once()  # the validator builds it with the fake orchestrator
    [image] = images(client, token)
    assert image["status"] == "ready", image["logs"]
    assert image["dockerFullName"] == "datagrok/grokprobe-hello:1.0.0" and image["port"] == 8000
    assert "Successfully built" in image["logs"]
    built = ctx.orchestrator.inspect_image("datagrok/grokprobe-hello:1.0.0")
    assert built.labels["grokemu.managed"] == "true" and built.labels["grokemu.package"] == "@acme/grokprobe"


def test_container_name_is_kebab_of_package_name(client, token):
    publish(client, "CvmTests", hello_package(name="CvmTests", folder="cvmtests-docker-test1"))
    [c] = client.get("/api/docker/containers", headers={"Authorization": token}).get_json()
    assert c["name"] == "cvm-tests-cvmtests-docker-test1"
    [i] = images(client, token)
    assert i["name"] == "cvmtests-cvmtests-docker-test1"


def test_root_dockerfile_gets_package_name(client, token):
    files = {"package.json": json.dumps({"name": "@datagrok/moltrack", "version": "2.0.0"}),
             "dockerfiles/Dockerfile": "FROM scratch\nEXPOSE 18000\n"}
    assert publish(client, "@datagrok/moltrack", files).status_code == 200
    [image] = images(client, token)
    assert image["name"] == "moltrack" and image["dockerfilePath"] == "dockerfiles/Dockerfile"


def test_image_json_names_image_and_tag(client, token, ctx, orchestrator):
    orchestrator.add_image("datagrok/grokprobe-hello:admin", [8000])
    publish(client, "@acme/grokprobe",
            hello_package(image_json={"image": "datagrok/grokprobe-hello:admin", "fallback": False}))
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["version"] == "admin" and image["status"] == "ready"
    assert "Found image datagrok/grokprobe-hello:admin" in image["logs"]
    assert image["dockerFullName"] == "datagrok/grokprobe-hello:admin"


def test_image_json_null_means_grokemu_builds(client, token, ctx):
    publish(client, "@acme/grokprobe",
            hello_package(image_json={"image": None, "fallback": True, "requestedVersion": "admin"}))
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["status"] == "ready" and "Successfully built" in image["logs"]


def test_debug_delta_upload_merges_onto_kept_files(client, ctx):
    files = hello_package()
    files["timestamps.json"] = json.dumps({"package.json": "Mon, 01 Jan 2026 00:00:00 GMT"})
    publish(client, "@acme/grokprobe", files)
    assert client.get("/api/packages/dev/@acme/grokprobe/timestamps", headers=DEV).get_json() == {
        "package.json": "Mon, 01 Jan 2026 00:00:00 GMT"}
    # the CLI skips unchanged files: only the changed one and timestamps.json arrive
    delta = {"dockerfiles/hello/hello.txt": "changed\n", "timestamps.json": json.dumps({"x": "y"})}
    assert publish(client, "@acme/grokprobe", delta).status_code == 200
    kept = ctx.packages.files_dir("@acme/grokprobe")
    assert (kept / "package.json").exists() and (kept / "dockerfiles/hello/Dockerfile").exists()
    assert (kept / "dockerfiles/hello/hello.txt").read_text() == "changed\n"


def test_release_upload_replaces_files_and_drops_removed_images(client, token, ctx):
    files = hello_package()
    files["dockerfiles/other/Dockerfile"] = "FROM scratch\nEXPOSE 9000\n"
    publish(client, "@acme/grokprobe", files)
    assert len(images(client, token)) == 2
    publish(client, "@acme/grokprobe", hello_package(), debug=False)
    kept = ctx.packages.files_dir("@acme/grokprobe")
    assert not (kept / "dockerfiles/other").exists()
    assert [i["name"] for i in images(client, token)] == ["grokprobe-hello"]
    assert len(client.get("/api/docker/containers", headers={"Authorization": token}).get_json()) == 1


def test_duplicate_zip_entries_are_accepted_last_wins(client, ctx):
    files = hello_package()
    files["dist/package.js"] = "first"
    assert publish(client, "@acme/grokprobe", files, duplicates={"dist/package.js": "second"}).status_code == 200
    assert (ctx.packages.files_dir("@acme/grokprobe") / "dist/package.js").read_text() == "second"


def test_legacy_key_in_path_forms(client):
    resp = client.get("/api/packages/dev/admin/@acme/grokprobe/timestamps")
    assert resp.status_code == 200 and resp.get_json() == {}
    resp = publish(client, None, hello_package(),
                   path="/api/packages/dev/admin/@acme/grokprobe?debug=true&rebuild=false&dropDb=false", headers={})
    assert resp.status_code == 200 and resp.get_json()["name"] == "@acme/grokprobe"
    # no header and an unknown key in the path: 401, which the CLI prints
    assert client.get("/api/packages/dev/@acme/grokprobe/timestamps").status_code == 401


def _assert_rejected_without_state(client, token, ctx, resp, fragment):
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["#type"] == "ApiError" and fragment in body["message"]
    assert images(client, token) == []
    assert client.get("/api/docker/containers", headers={"Authorization": token}).get_json() == []
    assert client.get("/api/packages/dev/@acme/grokprobe/timestamps", headers=DEV).get_json() == {}
    packages_root = ctx.settings.data_dir / "packages"
    assert list(packages_root.iterdir()) == []  # no staging folder, no half-written package


def test_not_a_zip(client, token, ctx):
    resp = client.post("/api/packages/dev/@acme/grokprobe?debug=true", data=b"this is not a zip", headers=DEV)
    _assert_rejected_without_state(client, token, ctx, resp, "not a ZIP")


def test_package_json_without_name(client, token, ctx):
    files = hello_package()
    files["package.json"] = json.dumps({"version": "1.0.0"})
    _assert_rejected_without_state(client, token, ctx, publish(client, "@acme/grokprobe", files), "no 'name'")


@pytest.mark.parametrize("container, fragment", [
    ("{not json", "not valid JSON"),
    ({"cpu": "lots"}, "'cpu' must be a number"),
    ({"memory": -5}, "'memory' must be"),
    ({"on_demand": "yes"}, "'on_demand' must be true or false"),
    ({"env": ["A=b"]}, "'env' must be an object"),
    ({"gpu": 0.5}, "'gpu' must be a whole number"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_container_json(client, token, ctx, container, fragment):
    resp = publish(client, "@acme/grokprobe", hello_package(container=container))
    _assert_rejected_without_state(client, token, ctx, resp, fragment)


def test_bad_upload_keeps_previous_state(client, token, ctx):
    publish(client, "@acme/grokprobe", hello_package(container={"cpu": 1}))
    before = images(client, token)
    resp = publish(client, "@acme/grokprobe", hello_package(container={"cpu": "x"}), debug=False)
    assert resp.status_code == 400
    assert images(client, token) == before
    assert (ctx.packages.files_dir("@acme/grokprobe") / "dockerfiles/hello/Dockerfile").exists()


def test_unsafe_zip_path_is_rejected(client, token, ctx):
    files = hello_package()
    files["../escape.txt"] = "x"
    _assert_rejected_without_state(client, token, ctx, publish(client, "@acme/grokprobe", files), "unsafe path")


def test_failed_build_ends_in_error_with_build_output(client, token, ctx):
    publish(client, "@acme/grokprobe", hello_package(dockerfile="FROM scratch\nCOPY missing.txt /\nEXPOSE 8000\n"))
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["status"] == "error"
    assert "missing.txt" in image["logs"] and "failed" in image["logs"]


@pytest.mark.parametrize("dockerfile, container, fragment", [
    ("FROM scratch\nEXPOSE 8000\nEXPOSE 9000\n", None, "exactly one EXPOSE"),
    ("FROM scratch\n", None, "no EXPOSE port"),
])
def test_port_rules(client, token, ctx, dockerfile, container, fragment):
    publish(client, "@acme/grokprobe", hello_package(dockerfile=dockerfile, container=container))
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["status"] == "error" and fragment in image["logs"]


def test_port_from_container_json_when_no_expose(client, token, ctx):
    publish(client, "@acme/grokprobe", hello_package(dockerfile="FROM scratch\n", container={"port": 5353}))
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["status"] == "ready" and image["port"] == 5353


def test_revalidate_puts_image_back_to_pending(client, token, ctx):
    publish(client, "@acme/grokprobe", hello_package())
    ctx.scheduler.run_once()
    [image] = images(client, token)
    resp = client.get(f"/api/docker/images/{image['id']}/revalidate", headers={"Authorization": token})
    assert resp.status_code == 200 and resp.get_json()["status"] == "pending validation"
    ctx.scheduler.run_once()
    assert images(client, token)[0]["status"] == "ready"
    assert client.get("/api/docker/images/nope/revalidate", headers={"Authorization": token}).status_code == 404


def test_docker_unreachable_keeps_images_pending(client, token, ctx, orchestrator):
    orchestrator.reachable = False
    publish(client, "@acme/grokprobe", hello_package())
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["status"] == "pending validation" and "Docker daemon" in image["logs"]
    orchestrator.reachable = True
    ctx.scheduler.run_once()
    assert images(client, token)[0]["status"] == "ready"


def test_latest_compatible(client, token, ctx):
    url = "/api/docker/images/grokprobe-hello/latest-compatible?version=admin&contentHash="
    auth = {"Authorization": token}
    assert client.get(url + "abc", headers=auth).status_code == 404  # nothing yet → the CLI builds locally
    publish(client, "@acme/grokprobe", hello_package())
    ctx.scheduler.run_once()
    [image] = images(client, token)
    found = client.get(url + image["contentHash"], headers=auth)
    assert found.status_code == 200
    assert found.get_json() == {"image": "datagrok/grokprobe-hello:1.0.0", "version": "1.0.0", "hashMatch": True}
    # another hash: only a ready image of the same major version is offered (and the CLI rebuilds)
    assert client.get(url + "0" * 64, headers=auth).status_code == 404  # 'admin' has no major version
    other = client.get("/api/docker/images/grokprobe-hello/latest-compatible?version=1.2.0&contentHash=" + "0" * 64,
                       headers=auth)
    assert other.status_code == 200 and other.get_json()["hashMatch"] is False


def test_content_hash_matches_the_cli_algorithm(client, token):
    # Value computed by datagrok-tools 6.7.5 calculateFolderHash for this folder (see tests/unit/test_folder_hash.py)
    publish(client, "@acme/grokprobe", hello_package(image_json={"image": None}))
    [image] = images(client, token)
    from grokemu.services.packages import folder_hash
    expected = folder_hash({"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\nEXPOSE 8000\n".encode(),
                            "hello.txt": b"hello\n"}, "", set())
    assert image["contentHash"] == expected


def test_reset_drops_entities_and_what_grokemu_created(client, token, ctx, orchestrator):
    publish(client, "@acme/grokprobe", hello_package())  # not on_demand: starts once ready
    ctx.scheduler.run_once()
    [container] = client.get("/api/docker/containers", headers={"Authorization": token}).get_json()
    assert container["status"] == "started"
    assert orchestrator.list_labelled({"grokemu.managed": "true"}) and orchestrator.images
    result = client.post("/_grokemu/reset", headers={"Authorization": token}).get_json()
    assert result["entities"] == 2 and result["containers"] == 1 and result["images"] == 1
    assert images(client, token) == []
    assert client.get("/api/docker/containers", headers={"Authorization": token}).get_json() == []
    assert orchestrator.list_labelled({"grokemu.managed": "true"}) == []
    assert client.get("/api/packages/dev/@acme/grokprobe/timestamps", headers=DEV).get_json() == {}
    assert client.get("/api/users/current", headers={"Authorization": token}).status_code == 200  # sessions kept


def test_referenced_image_without_dockerfile(client, token, ctx, orchestrator):
    """container.json `image`: run a published image, nothing to build (the CLI's referencedImageDirs)."""
    files = {"package.json": json.dumps({"name": "@acme/refpkg", "version": "1.0.0"}),
             "dockerfiles/svc/container.json": json.dumps({"image": "acme/service:2.1", "port": 9000,
                                                           "on_demand": True})}
    publish(client, "@acme/refpkg", files)
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["status"] == "error" and "no Dockerfile" in image["logs"]  # not in the daemon, nothing to build
    orchestrator.add_image("acme/service:2.1", [])
    client.get(f"/api/docker/images/{image['id']}/revalidate", headers={"Authorization": token})
    ctx.scheduler.run_once()
    [image] = images(client, token)
    assert image["status"] == "ready" and image["dockerFullName"] == "acme/service:2.1" and image["port"] == 9000
    [c] = client.get("/api/docker/containers", headers={"Authorization": token}).get_json()
    started = client.get(f"/api/docker/containers/{c['id']}/run?awaitStart=true", headers={"Authorization": token})
    assert started.status_code == 200 and started.get_json()["status"] == "started"
    assert started.get_json()["dockerImage"] == "acme/service:2.1"


def test_files_live_in_one_version_folder_named_by_the_package_row(client, ctx):
    publish(client, "@acme/grokprobe", hello_package())
    first = ctx.store.get_package("@acme/grokprobe")["filesVersion"]
    home = ctx.settings.data_dir / "packages" / "%40acme%2Fgrokprobe"
    assert [p.name for p in home.iterdir()] == [first]
    publish(client, "@acme/grokprobe", {"dockerfiles/hello/hello.txt": "v2\n"})  # a debug delta
    second = ctx.store.get_package("@acme/grokprobe")["filesVersion"]
    assert second != first and [p.name for p in home.iterdir()] == [second]
    assert ctx.packages.files_dir("@acme/grokprobe") == home / second
    assert (home / second / "package.json").is_file()  # kept from the first upload
    assert (home / second / "dockerfiles/hello/hello.txt").read_text() == "v2\n"


def test_bad_package_name_is_400_for_publish_and_timestamps(client, token, ctx):
    resp = client.post("/api/packages/dev/..?debug=true", data=package_zip(hello_package(name="..")), headers=DEV)
    assert resp.status_code == 400 and "'.'" in resp.get_json()["message"]
    assert client.get("/api/packages/dev/%2e%2e/timestamps", headers=DEV).status_code == 400
    assert list((ctx.settings.data_dir / "packages").iterdir()) == []
