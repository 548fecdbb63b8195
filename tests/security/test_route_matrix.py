"""Every route of the app × every kind of credential an attacker has, built from the app's URL map: a route added
later without protection fails here. The guard (grokemu/web/guard.py) answers before any view runs, so the
containers and packages named in the URLs need not exist."""
from __future__ import annotations

import io
import re

import pytest

from tests.helpers import hello_package, package_zip

# Routes anyone may call (after the Host and Origin rules), each for a wire reason given in web/guard.py.
PUBLIC = {"admin.health", "api.server_info", "api.login_dev", "api.login_dev_legacy", "registry.token",
          "registry.token_oauth", "registry.keys", "ui.dashboard", "ui.login", "static"}
# Registry reads: public as on Datagrok's registry proxy (GET/HEAD); `GET /v2/` needs a registry token.
REGISTRY_READ_PUBLIC = {"registry.catalog", "registry.tags_list", "registry.get_manifest", "registry.get_blob"}
# Publish routes authenticate with a dev key: the matrix's "dev key" column is a pass for them.
DEV_KEY_ROUTES = {"api.publish_package", "api.package_timestamps"}
# What containers get on the bridge-gateway listener with a token.
BRIDGE_WITH_TOKEN = "api."

SAMPLE = {"path": "x/y", "rest": "acme/pkg", "name": "acme/repo", "reference": "latest",
          "digest": "sha256:" + "0" * 64, "upload_id": "00000000-0000-0000-0000-000000000000",
          "image_id": "00000000-0000-0000-0000-000000000001", "container_id": "00000000-0000-0000-0000-000000000002",
          "image_name": "img", "key": "not-a-key"}


def routes(app):
    """(endpoint, method, url) for every rule and method of the app; websocket rules are upgraded GETs."""
    out = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: SAMPLE.get(m.group(1), "x"), rule.rule)
        methods = sorted((rule.methods or {"GET"}) - {"HEAD", "OPTIONS"}) or ["OPTIONS"]
        for method in methods:
            out.append((rule.endpoint, method, url, bool(rule.websocket)))
    return out


def call(client, method, url, websocket=False, **kw):
    headers = kw.pop("headers", {})
    if websocket:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                   "Sec-WebSocket-Version": "13", **headers}
    return client.open(url, method=method, headers=headers, **kw)


def refused(resp) -> bool:
    return resp.status_code in (401, 403)


def must_refuse(endpoint: str, method: str) -> bool:
    if endpoint in PUBLIC:
        return False
    if endpoint in REGISTRY_READ_PUBLIC and method == "GET":
        return False
    return True


@pytest.fixture
def container_token(client, ctx, orchestrator):
    """A container's USER_API_KEY, then the container stopped: the token must be revoked with it."""
    r = client.post("/api/packages/dev/@acme/matrix?debug=true", data=package_zip(hello_package("@acme/matrix")),
                    headers={"Authorization": "Dev admin"})
    assert r.status_code == 200, r.get_json()
    ctx.scheduler.run_once()  # validates the image; the container (not on_demand) starts
    [c] = ctx.store.list_containers()
    assert c.status.value == "started", c
    token = orchestrator.spec_of(c.docker_id).env["USER_API_KEY"]
    assert client.get("/api/users/current", headers={"Authorization": token}).status_code == 200
    ctx.spawner.stop(c.id)
    return token


def test_the_matrix_covers_the_app(app):
    endpoints = {e for e, *_ in routes(app)}
    # a sanity check that the walk sees the routes that matter, so the matrix cannot pass by seeing nothing
    for expected in ("admin.reset", "api.publish_package", "proxy.fetch_proxy", "proxy_ws.websocket_proxy",
                     "registry.put_manifest", "api.run_container", "ui.dashboard",
                     "admin.container_logs"):
        assert expected in endpoints
    assert len(routes(app)) > 40


@pytest.mark.parametrize("credential", ["none", "bad token", "dev key as token", "expired token",
                                        "revoked container token"])
def test_every_protected_route_refuses_bad_credentials(app, client, ctx, clock, credential, request):
    headers = {}
    if credential == "bad token":
        headers = {"Authorization": "Bearer not-a-session"}
    elif credential == "dev key as token":
        headers = {"Authorization": "admin"}
    elif credential == "expired token":
        token = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"}).get_json()["token"]
        clock.advance(ctx.settings.session_ttl + 1)
        headers = {"Authorization": token}
    elif credential == "revoked container token":
        headers = {"Authorization": request.getfixturevalue("container_token")}
    let_through = []
    for endpoint, method, url, ws in routes(app):
        if not must_refuse(endpoint, method):
            continue
        if credential == "dev key as token" and endpoint in DEV_KEY_ROUTES:
            continue  # `Authorization: admin` is not `Dev admin`: still refused below, checked separately
        resp = call(client, method, url, ws, headers=headers)
        if resp.status_code != 401:  # not authenticated: the one answer for a missing or bad credential
            let_through.append((method, url, resp.status_code))
    assert let_through == []


def test_publish_routes_refuse_a_raw_key_and_a_wrong_dev_key(client):
    for headers in ({"Authorization": "admin"}, {"Authorization": "Dev wrong"}, {}):
        r = client.post("/api/packages/dev/@acme/p?debug=true", data=b"PK", headers=headers)
        assert r.status_code == 401, headers
        assert r.get_json()["#type"] == "ApiError"


def test_a_valid_session_passes_every_session_route(app, client, token):
    """The other side of the matrix: the guard lets the right caller through (404/400 from the view are fine)."""
    for endpoint, method, url, ws in routes(app):
        if endpoint in PUBLIC or endpoint.startswith("registry.") or ws:
            continue
        if endpoint in ("admin.reset", "ui.logout"):
            continue  # would drop what the other rows use; reset is exercised with a session elsewhere
        resp = call(client, method, url, headers={"Authorization": token})
        assert not refused(resp), (method, url, resp.status_code, resp.get_data()[:200])


@pytest.mark.parametrize("attack", ["foreign origin", "null origin", "same-site cookie", "cross-site cookie",
                                    "foreign host"])
def test_every_route_refuses_requests_from_elsewhere(app, client, token, attack):
    """A page on another origin (or another port of localhost, which is same-site) holding the user's cookie, and
    a DNS-rebinding page (foreign Host): every route refuses, public ones included for Origin and Host."""
    client.set_cookie("auth", token, domain="localhost")
    headers = {"foreign origin": {"Origin": "http://evil.example"},
               "null origin": {"Origin": "null"},
               "same-site cookie": {"Sec-Fetch-Site": "same-site"},
               "cross-site cookie": {"Sec-Fetch-Site": "cross-site"},
               "foreign host": {"Host": "evil.example:8080"}}[attack]
    let_through = []
    for endpoint, method, url, ws in routes(app):
        cookie_only = attack in ("same-site cookie", "cross-site cookie")
        if cookie_only and not must_refuse(endpoint, method) and endpoint != "ui.dashboard":
            continue  # public routes need no cookie; a cross-site request to them learns nothing
        if cookie_only and endpoint in ("ui.login",):
            continue
        resp = call(client, method, url, ws, headers=headers)
        # the registry takes no cookie: there a cookie-only caller is simply not authenticated (401)
        if resp.status_code != 403 and not (cookie_only and endpoint.startswith("registry.")
                                            and resp.status_code == 401):
            let_through.append((method, url, resp.status_code))
    assert let_through == []
    # and the refusal is Datagrok's ApiError JSON (the OCI envelope under /v2)
    r = client.post("/_grokemu/reset", headers=headers)
    assert r.status_code == 403 and r.get_json()["#type"] == "ApiError"
    if attack not in ("same-site cookie", "cross-site cookie"):
        r = client.get("/v2/acme/repo/tags/list", headers=headers)
        assert r.status_code == 403 and r.get_json()["errors"][0]["code"] == "DENIED"


def test_own_origin_and_allowed_origins_pass(client, token, settings, app):
    client.set_cookie("auth", token, domain="localhost")
    own = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.get("/api/docker/containers", headers=own).status_code == 200
    assert client.get("/api/docker/containers", headers={"Sec-Fetch-Site": "none"}).status_code == 200


def test_allowed_origins_setting(tmp_path, orchestrator, clock):
    from grokemu.app import create_app
    from grokemu.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "d", allowed_origins=("http://localhost:3000",),
                              allowed_hosts=("devbox.lan",)), orchestrator=orchestrator, clock=clock,
                     background=False)
    client = app.test_client()
    token = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"}).get_json()["token"]
    client.set_cookie("auth", token, domain="localhost")
    ok = {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}
    assert client.get("/api/docker/containers", headers=ok).status_code == 200
    assert client.get("/api/docker/containers", headers={"Origin": "http://localhost:3001"}).status_code == 403
    assert client.get("/api/docker/containers", headers={"Host": "devbox.lan:8080",
                                                         "Authorization": token}).status_code == 200


BRIDGE = {"grokemu.listener": "bridge"}


def test_bridge_listener_serves_containers_only(app, client, token):
    """On the Docker bridge gateway: token-authenticated /api calls and /v2 reads; no dashboard, no admin routes,
    no dev-key login, no registry token endpoint, no publish, no pushes."""
    gateway = {"Host": "host.docker.internal:8080"}
    refused_there = [
        ("GET", "/", {}), ("GET", "/_grokemu/health", {}), ("POST", "/_grokemu/reset", {"Authorization": token}),
        ("POST", "/_grokemu/login", {}), ("POST", "/api/users/login/dev", {"Authorization": "Dev admin"}),
        ("POST", "/api/users/login/dev/admin", {}), ("GET", "/token", {}), ("GET", "/api/docker/token", {}),
        ("GET", "/api/packages/dev/@acme/p/timestamps", {"Authorization": "Dev admin"}),
        ("POST", "/api/packages/dev/admin/@acme/p", {}),
        ("POST", "/v2/acme/repo/blobs/uploads/", {"Authorization": token}),
    ]
    for method, url, headers in refused_there:
        r = client.open(url, method=method, headers={**gateway, **headers}, environ_base=BRIDGE)
        assert r.status_code == 403, (method, url, r.status_code)
    r = client.get("/api/users/current", headers={**gateway, "Authorization": token}, environ_base=BRIDGE)
    assert r.status_code == 200 and r.get_json()["login"] == "admin"
    r = client.get("/api/docker/containers", headers={**gateway, "Authorization": token}, environ_base=BRIDGE)
    assert r.status_code == 200
    assert client.get("/api/docker/containers", headers=gateway, environ_base=BRIDGE).status_code == 401
    assert client.get("/v2/acme/repo/tags/list", headers=gateway, environ_base=BRIDGE).status_code == 404


def test_health_reveals_only_liveness_without_a_session(client, token):
    assert client.get("/_grokemu/health").get_json().keys() == {"status", "version"}
    assert "docker" in client.get("/_grokemu/health", headers={"Authorization": token}).get_json()


def test_dashboard_is_a_login_form_and_never_shows_a_key(client, settings):
    page = client.get("/")
    assert page.status_code == 200 and b'name="key"' in page.data and b"containers" not in page.data
    bad = client.post("/_grokemu/login", data={"key": "wrong"})
    assert bad.status_code == 401 and b"not a developer key" in bad.data
    ok = client.post("/_grokemu/login", data={"key": "admin"})
    assert ok.status_code == 303
    cookie = ok.headers["Set-Cookie"]
    assert "auth=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/")
    assert page.status_code == 200 and b'id="containers"' in page.data
    for key in settings.dev_keys:  # neither the form nor the page nor any header carries a dev key
        assert f"--key {key}".encode() not in page.data and f'value="{key}"'.encode() not in page.data
    assert page.headers["X-Frame-Options"] == "DENY"
    out = client.post("/_grokemu/logout")
    assert out.status_code == 303
    assert client.get("/api/docker/containers").status_code == 401  # the cookie's session was revoked


def test_key_in_path_publish_is_refused_to_browsers(client):
    """The CLI's legacy `<key>/<name>` URL with a text/plain body is a CORS simple request: a web page could send it.
    It is served only to callers that send no Origin and no Sec-Fetch-* header."""
    body = package_zip(hello_package("@acme/pathkey"))
    for headers in ({"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"},
                    {"Sec-Fetch-Mode": "no-cors"}):
        r = client.post("/api/packages/dev/admin/@acme/pathkey?debug=true", data=body,
                        headers={**headers, "Content-Type": "text/plain"})
        assert r.status_code == 401, headers  # the key in the path is not read: no credential at all
    assert client.get("/api/packages/dev/@acme/pathkey/timestamps",
                      headers={"Authorization": "Dev admin"}).get_json() == {}  # nothing was published
    r = client.post("/api/packages/dev/admin/@acme/pathkey?debug=true", data=body)
    assert r.status_code == 200, r.get_json()


def test_body_limits_answer_413_before_reading(tmp_path, orchestrator, clock):
    from grokemu.app import create_app
    from grokemu.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "d", max_api_body_bytes=1000, max_package_bytes=5000),
                     orchestrator=orchestrator, clock=clock, background=False)
    client = app.test_client()
    token = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"}).get_json()["token"]
    r = client.post("/api/docker/containers", data=b"{" * 1001,
                    headers={"Authorization": token, "Content-Type": "application/json"})
    assert r.status_code == 413 and "max_api_body_bytes" in r.get_json()["message"]
    r = client.post("/api/packages/dev/@acme/p?debug=true", data=b"x" * 5001, headers={"Authorization": "Dev admin"})
    assert r.status_code == 413 and "max_package_bytes" in r.get_json()["message"]
    # auth first: a stranger learns nothing about limits
    r = client.post("/api/docker/containers", data=b"x" * 5001)
    assert r.status_code == 401
    # a body of unknown length where the size must be known first
    r = client.post("/api/docker/containers", input_stream=io.BytesIO(b"{}"),
                    headers={"Authorization": token, "Transfer-Encoding": "chunked"})
    assert r.status_code == 411


def test_preflight_refuses_before_the_body(app, ctx):
    """What the server calls once a request head is in: a refusal it can write without reading the body."""
    guard = ctx.guard
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/packages/dev/@acme/p", "HTTP_HOST": "localhost:8080",
               "CONTENT_LENGTH": str(2**40), "wsgi.url_scheme": "http", "SERVER_NAME": "localhost",
               "SERVER_PORT": "8080", "QUERY_STRING": ""}
    status, headers, body = guard.preflight(dict(environ))
    assert status.startswith("401") and b"ApiError" in body
    status, headers, body = guard.preflight({**environ, "HTTP_AUTHORIZATION": "Dev admin"})
    assert status.startswith("413")
    assert guard.preflight({**environ, "HTTP_AUTHORIZATION": "Dev admin", "CONTENT_LENGTH": "100"}) is None
    status, headers, body = guard.preflight({**environ, "PATH_INFO": "/v2/acme/repo/blobs/uploads/"})
    assert status.startswith("401") and b"UNAUTHORIZED" in body
    assert any(k == "WWW-Authenticate" for k, _ in headers)


def test_the_guard_answers_any_header_with_a_clear_4xx(app, client):
    """Whatever an attacker puts in the headers the guard reads, it answers 4xx (or lets a valid caller on): never
    a 500."""
    from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

    text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300)
    paths = st.sampled_from(["/", "/_grokemu/reset", "/api/docker/containers", "/v2/a/b/blobs/uploads/",
                             "/api/packages/dev/admin/@a/b", "/api/docker/containers/proxy/x/y", "/token"])

    hosts = st.one_of(st.sampled_from(["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:80", "[::1"]), text)
    origins = st.one_of(st.sampled_from(["http://localhost", "http://localhost:8080", "null", "http://[::1"]), text)

    @hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(path=paths, method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]), host=hosts, origin=origins,
           cookie=text, authorization=text, length=text, fetch_site=text)
    def probe(path, method, host, origin, cookie, authorization, length, fetch_site):
        headers = {"Host": host or "localhost", "Origin": origin, "Cookie": cookie, "Authorization": authorization,
                   "Sec-Fetch-Site": fetch_site}
        environ = {"CONTENT_LENGTH": length} if length else {}
        resp = client.open(path, method=method, headers=headers, environ_overrides=environ)
        assert resp.status_code < 500, (path, headers, resp.get_data()[:300])

    probe()
