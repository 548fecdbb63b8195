"""The one gate every request passes before a view runs: who may drive grokemu, from where, with how big a body.

grokemu drives the host's Docker daemon, which is root on the user's machine, and its port is reachable by every web
page the user has open (browsers send cross-site requests to localhost) and by every container on the machine (the
bridge-gateway listener). So, in this order:

1. `Host` must be one of grokemu's own names (DNS rebinding: a page on attacker.example resolved to 127.0.0.1 sends
   `Host: attacker.example`).
2. An `Origin` that is not grokemu's own (the origin the request's `Host` names, or one the user allows in the
   `allowed_origins` setting) is refused, WebSocket upgrades included.
3. The route's policy (POLICIES, by Flask endpoint; an endpoint not listed needs a session): a session token
   (`Authorization: <token>` / `Bearer <token>` or the `auth` cookie), a dev key (publish, login), a registry token
   (pushes under /v2), or nothing (liveness, server info, registry reads, token endpoints).
4. A request authenticated by the cookie alone that the browser marks `Sec-Fetch-Site: cross-site` or `same-site`
   (another port on localhost is same-site, and SameSite cookies go there) is refused.
5. The bridge-gateway listener serves containers only: token-authenticated /api calls and /v2 reads.
6. A body over the route's limit is refused with 413 before it is read (server/channel.py calls `preflight` as soon as the
   request head is in, so an unauthenticated or oversized body is never spooled).

Every refusal is a GrokemuError rendered by web/errors.py: ApiError JSON, or the OCI envelope under /v2.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from grokemu.config import Settings
from grokemu.domain.errors import BadRequest, Forbidden, GrokemuError, LengthRequired, PayloadTooLarge, Unauthorized
from grokemu.services.auth import AuthService, token_from_headers

SESSION = "session"  # a valid session token, in a header or the `auth` cookie
PUBLIC = "public"  # anyone who passes the Host / Origin rules
DEV_LOGIN = "dev-login"  # public, but a dev key is a password: never on the bridge listener
PUBLISH = "publish"  # `Dev <key>`, a session token, or the CLI's legacy key-in-path form
REGISTRY = "registry"  # /v2: reads public, writes need a registry token granting push/delete on the repository
PIPE = "pipe"  # a worker's pipe: its DATAGROK_PIPE_KEY, checked by the view against the call (web/functions.py)
PAGE = "page"  # the dashboard: a login form without a session, the page with one; never on the bridge


@dataclass(frozen=True)
class Policy:
    auth: str
    bridge: bool = False  # served on the bridge-gateway listener (to containers)
    body_limit: str = "max_api_body_bytes"  # the setting that caps this route's body
    chunked: bool = False  # a body without Content-Length is allowed (docker push sends chunked PATCHes)


# Endpoint → policy. Not listed: Policy(SESSION) — a route added later is protected until someone says otherwise,
# and tests/security/test_route_matrix.py walks the URL map to prove it.
POLICIES: dict[str, Policy] = {
    "admin.health": Policy(PUBLIC),  # liveness and version only, unless the caller has a session
    "ui.login": Policy(PAGE),
    "ui.dashboard": Policy(PAGE),
    "static": Policy(PUBLIC),
    "api.login_dev": Policy(DEV_LOGIN),
    "api.login_dev_legacy": Policy(DEV_LOGIN),
    # the grok CLI reads the server version without credentials (datagrok-tools publish.js, docs/grok-publish.md R7): a wire need
    "api.server_info": Policy(PUBLIC),
    "api.package_timestamps": Policy(PUBLISH, body_limit="max_package_bytes"),
    "api.publish_package": Policy(PUBLISH, body_limit="max_package_bytes"),
    "proxy.fetch_proxy": Policy(SESSION, bridge=True, body_limit="max_request_body_size", chunked=True),
    "proxy_ws.websocket_proxy": Policy(SESSION, bridge=True),
    # queue functions (docs/queue-functions.md): the JS client's lookup and call socket are the Datagrok API, which
    # containers may call too; the pipe is for the worker a call was sent to
    "functions.entities": Policy(SESSION, bridge=True),
    "functions_ws.call_stream": Policy(SESSION, bridge=True),
    "functions_ws.pipe": Policy(PIPE, bridge=True),
    "registry.token": Policy(DEV_LOGIN),
    "registry.token_oauth": Policy(DEV_LOGIN),
    "registry.keys": Policy(DEV_LOGIN),
    # `grokemu logs`: a container's output is as private as the API's logs route; never on the bridge listener
    "admin.container_logs": Policy(SESSION),
}
# Every other /api route is the Datagrok API: token-authenticated calls from containers are what the bridge is for.
API_ON_BRIDGE = "api."


def policy_for(endpoint: str | None, path: str = "") -> Policy:
    if endpoint in POLICIES:
        return POLICIES[endpoint]
    if (endpoint and endpoint.startswith("registry.")) or (endpoint is None and (path == "/v2" or path.startswith("/v2/"))):
        return Policy(REGISTRY, bridge=True, body_limit="max_request_body_size", chunked=True)
    if endpoint and endpoint.startswith(API_ON_BRIDGE):
        return Policy(SESSION, bridge=True)
    return Policy(SESSION)


@dataclass
class Caller:
    """Who the guard let through: `login` (None: nobody signed in, a public route), the session `token` it came with,
    and on the publish routes the `package` the path names (the grok CLI's `<key>/<name>` form taken apart)."""

    login: str | None = None
    token: str | None = None
    via_cookie: bool = False
    package: str | None = None


def _strip_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8080
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin_key(origin: str) -> str | None:
    """`scheme://host:port` with the default port spelled out, or None for an origin that is not a URL (`null`)."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or (443 if parts.scheme == 'https' else 80)}"


def auth_cookie(environ: Mapping) -> str | None:
    raw = environ.get("HTTP_COOKIE")
    if not raw:
        return None
    try:
        jar = SimpleCookie()
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get("auth")
    return morsel.value if morsel is not None and morsel.value else None


class Guard:
    def __init__(self, settings: Settings, auth: AuthService, url_map: Map,
                 registry_authorize: Callable[[dict, str | None, Mapping], None],
                 bridge_addresses: Iterable[str] = ()):
        self._settings = settings
        self._auth = auth
        self._url_map = url_map
        self._registry_authorize = registry_authorize
        names = {"localhost", "127.0.0.1", "[::1]", "host.docker.internal"}
        for extra in (settings.host, *settings.allowed_hosts, *bridge_addresses,
                      urlsplit(settings.container_api_url).hostname or ""):
            if extra and extra not in ("0.0.0.0", "::"):
                names.add(self._bracketed(extra.lower()))
        self.host_names = frozenset(names)
        self.allowed_origins = frozenset(k for k in map(_origin_key, settings.allowed_origins) if k)

    @staticmethod
    def _bracketed(host: str) -> str:
        try:
            if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
                return f"[{host}]"
        except ValueError:
            pass
        return host

    # -- the checks ---------------------------------------------------------------------------------------------
    def check(self, environ: dict, *, matched: tuple[str | None, Mapping | None] | None = None) -> Caller:
        """Raise a GrokemuError for a request that must not go on; otherwise the authenticated caller (login None
        on public routes). Needs only the request head, so the server calls it before the body is read (`preflight`).
        `matched`: the (endpoint, view args) Flask already found for this request, so the URL map is not walked
        twice."""
        host = environ.get("HTTP_HOST") or ""
        if _strip_port(host) not in self.host_names:
            raise Forbidden(f"Host '{host[:100]}' is not one of grokemu's names; add it to the allowed_hosts setting "
                            f"if you reach grokemu by that name")
        origin = environ.get("HTTP_ORIGIN")
        origin_allowed_by_user = False
        if origin is not None:
            key = _origin_key(origin)
            origin_allowed_by_user = key in self.allowed_origins
            if not origin_allowed_by_user and key != _origin_key(f"{environ.get('wsgi.url_scheme', 'http')}://{host}"):
                raise Forbidden(f"Requests from {origin[:100]} are refused: grokemu only serves its own pages "
                                f"(add an origin to the allowed_origins setting to allow it)")

        endpoint, view_args = matched if matched is not None else self._match(environ)
        policy = policy_for(endpoint, environ.get("PATH_INFO") or "")
        if environ.get("grokemu.listener") == "bridge" and not self._on_bridge(policy, environ):
            raise Forbidden("Not served on the Docker bridge address: containers may call the API with their "
                            "USER_API_KEY and pull from the registry, nothing else")

        caller = self._authenticate(policy, environ, view_args or {}, endpoint)
        if caller.via_cookie and not origin_allowed_by_user and \
                environ.get("HTTP_SEC_FETCH_SITE", "").lower() in ("cross-site", "same-site"):
            raise Forbidden("A cookie-authenticated request from another site is refused")
        self._check_body(policy, environ)
        return caller

    def _match(self, environ: dict) -> tuple[str | None, Mapping | None]:
        try:
            adapter = self._url_map.bind_to_environ(environ)
            endpoint, args = adapter.match(environ.get("PATH_INFO") or "/", method=environ.get("REQUEST_METHOD"),
                                           websocket=environ.get("HTTP_UPGRADE", "").lower() == "websocket")
            return endpoint, args
        except HTTPException:
            # 404 / 405 / a redirect: Flask answers it after the guard, for a caller who passes the default policy
            return None, None

    @staticmethod
    def _on_bridge(policy: Policy, environ: dict) -> bool:
        if not policy.bridge:
            return False
        if policy.auth == REGISTRY:
            return environ.get("REQUEST_METHOD") in ("GET", "HEAD")
        return True

    def _authenticate(self, policy: Policy, environ: dict, view_args: Mapping, endpoint: str | None) -> Caller:
        if policy.auth == PIPE:
            return Caller()
        if policy.auth in (PUBLIC, DEV_LOGIN):
            return self._optional_session(environ) if policy.auth == PUBLIC else Caller()
        if policy.auth == REGISTRY:
            self._registry_authorize(environ, endpoint, view_args)
            return Caller()
        if policy.auth == PAGE:
            return self._optional_session(environ)
        if policy.auth == PUBLISH:
            return self._publisher(environ, view_args.get("rest", ""))
        return self._session(environ)

    def _session(self, environ: dict) -> Caller:
        header = environ.get("HTTP_AUTHORIZATION")
        cookie = auth_cookie(environ)
        token = token_from_headers(header, cookie)
        login = self._auth.authenticate(token)
        return Caller(login=login, token=token, via_cookie=not header)

    def _optional_session(self, environ: dict) -> Caller:
        try:
            return self._session(environ)
        except Unauthorized:
            return Caller()

    def _publisher(self, environ: dict, rest: str) -> Caller:
        """The grok CLI sends `Authorization: Dev <key>`, and after a 401/404 retries with the key as the first path
        segment (datagrok-tools dev-key.js). A browser never needs the key-in-path form: it is served only to
        callers that send no Origin and no Sec-Fetch-* header, so a web page cannot publish with a guessed key."""
        header = environ.get("HTTP_AUTHORIZATION")
        if header:
            scheme, _, key = header.partition(" ")
            if scheme.lower() == "dev":
                login = self._auth.login_for_dev_key(key.strip())
                if login is None:
                    raise Unauthorized("Invalid developer key")
                return Caller(login=login, package=rest)
            return replace(self._session(environ), package=rest)
        from_browser = "HTTP_ORIGIN" in environ or any(k.startswith("HTTP_SEC_FETCH_") for k in environ)
        key, _, name = rest.partition("/")
        login = None if from_browser else self._auth.login_for_dev_key(key)
        if login is not None and name:
            return Caller(login=login, package=name)
        if auth_cookie(environ):
            return replace(self._session(environ), package=rest)
        raise Unauthorized("Not authenticated: send 'Authorization: Dev <key>'")

    def _check_body(self, policy: Policy, environ: dict) -> None:
        limit = int(getattr(self._settings, policy.body_limit))
        raw_length = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not policy.chunked:
            raise LengthRequired("Send this body with a Content-Length (chunked bodies are not taken here)")
        if not raw_length:
            return
        try:
            length = int(raw_length)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length > limit:
            raise PayloadTooLarge(f"The body is {length} bytes; this route takes at most {limit} "
                                  f"(setting {policy.body_limit})")


    # -- the two ways in ----------------------------------------------------------------------------------------
    def preflight(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """Called by the server once a request head is in and before its body is read: None to go on, or the
        refusal to write (status line, headers, body) before the connection is closed."""
        from grokemu.web import errors

        try:
            self.check(environ)
        except GrokemuError as e:
            return errors.render(e, environ.get("PATH_INFO") or "")
        return None

    def install(self, app) -> None:
        """Every request of the Flask app passes `check` before its view; the caller lands in `g` (read it with
        current_caller)."""
        from flask import g, request

        @app.before_request
        def _guard():
            caller = self.check(request.environ, matched=(request.endpoint, request.view_args))
            g.login, g.token = caller.login, caller.token
            g.caller = caller


def current_caller() -> Caller:
    """The Caller the guard let through for the Flask request being served (Guard.install)."""
    from flask import g

    return g.caller
