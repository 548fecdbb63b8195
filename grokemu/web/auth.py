"""Authentication for /api: one guard for every route (Datagrok answers 401 with ApiError JSON), with the few
public routes listed, each for a wire reason."""
from __future__ import annotations

from flask import Flask, g, request

from grokemu.services.auth import token_from_headers

PUBLIC_API_PREFIXES = (
    "/api/users/login/",  # dev key → session token
    "/api/info/",  # the CLI reads /info/server without auth (publish.js R7)
    "/api/packages/dev/",  # grok publish authenticates with `Dev <key>` or the key in the path (web/api.py)
    "/api/docker/token",  # registry token endpoint: Basic auth with the dev key
    "/api/docker/keys",  # public JWKS for the registry proxy
)


def current_token() -> str | None:
    return token_from_headers(request.headers.get("Authorization"), request.cookies.get("auth"))


def authenticate() -> str:
    from grokemu.app import ctx

    token = current_token()
    g.login = ctx().auth.authenticate(token)
    g.token = token
    return g.login


def install(app: Flask) -> None:
    @app.before_request
    def _guard_api():
        path = request.path
        if (path == "/api" or path.startswith("/api/")) and not path.startswith(PUBLIC_API_PREFIXES):
            authenticate()
