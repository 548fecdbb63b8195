"""The dashboard at `/`: Datagrok's Manage → Dockers view (docs/real-plugins.md: containers on top, images below, as
cards with a status dot; Logs / Build logs in the context pane; a context menu), live, behind a login form: the dev
key is exchanged for a session in the `auth` cookie (HttpOnly, SameSite=Strict), and no page ever shows a key (the
terminal banner does; docs/security.md "Rules elsewhere").

The page is a template (web/templates/) and two static files (web/static/dashboard.js, dashboard.css), shipped in
the package: no build step, no CDN, and a CSP of `default-src 'self'` with no inline script or style. The first
snapshot is embedded as a JSON data block (not executed), so the cards are on the page when it has loaded; the
script then follows the live feed of web/dashboard.py.
"""
from __future__ import annotations

from flask import Blueprint, Response, g, redirect, render_template, request

from grokemu import __version__
from grokemu.web.context import ctx
from grokemu.web.dashboard import service

blueprint = Blueprint("ui", __name__, template_folder="templates")

AUTH_COOKIE = "auth"  # Datagrok's session cookie name: the JS client and fetchProxy calls from the page send it


def _page(html: str, status: int = 200) -> Response:
    resp = Response(html, status=status, mimetype="text/html")
    # no framing (clickjacking), no caching of entity data, no referrer leaking ids to other sites
    resp.headers["Content-Security-Policy"] = ("default-src 'self'; base-uri 'none'; form-action 'self'; "
                                               "frame-ancestors 'none'")
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cache-Control"] = "no-store"
    # same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null` on the login form's POST
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


def _login_page(error: str = "", status: int = 200) -> Response:
    return _page(render_template("login.html", version=__version__, error=error), status)


@blueprint.get("/")
def dashboard():
    if not g.login:
        return _login_page()
    c = ctx()
    return _page(render_template(
        "dashboard.html", version=__version__, api=c.settings.api_url, login=g.login,
        docker=c.orchestrator.ping(), snapshot=service().snapshot()))


@blueprint.post("/_grokemu/login", endpoint="login")
def login():
    from grokemu.domain.errors import Unauthorized

    try:
        token, _ = ctx().auth.login_with_dev_key(request.form.get("key", ""))
    except Unauthorized:
        return _login_page("That is not a developer key of this grokemu.", 401)
    resp = redirect("/", code=303)
    resp.set_cookie(AUTH_COOKIE, token, max_age=int(ctx().settings.session_ttl), path="/", httponly=True,
                    samesite="Strict")
    return resp


@blueprint.post("/_grokemu/logout")
def logout():
    ctx().auth.revoke(g.token)
    resp = redirect("/", code=303)
    resp.delete_cookie(AUTH_COOKIE, path="/", httponly=True, samesite="Strict")
    return resp
