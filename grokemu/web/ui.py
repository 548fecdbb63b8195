"""The dashboard at `/`: Datagrok's Docker management view in miniature (containers on top, images below), behind a
login form: the dev key is exchanged for a session in the `auth` cookie (HttpOnly, SameSite=Strict), and no page ever
shows a key (the terminal banner does)."""
from __future__ import annotations

from flask import Blueprint, Response, g, redirect, render_template_string, request

from grokemu import __version__
from grokemu.web.context import ctx

blueprint = Blueprint("ui", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>grokemu</title>
<style>
 body{font:14px system-ui,sans-serif;margin:2em;color:#222} h1{font-size:20px} h2{font-size:16px;margin-top:2em}
 table{border-collapse:collapse;width:100%} th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}
 .dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px}
 .green{background:#2a2} .red{background:#d22} .grey{background:#999;animation:blink 1s infinite}
 .details{color:#a33;font-size:12px;max-width:28em} @keyframes blink{50%{opacity:.2}} code{background:#f4f4f4;padding:1px 4px}
</style></head><body>
<h1>grokemu {{ version }}</h1>
<p>API <code>{{ api }}</code> &middot; Docker {{ 'reachable' if docker else 'unreachable' }} &middot;
 point the grok CLI here: <code>grok config add --alias grokemu --server {{ api }} --key &lt;your dev key&gt; --default</code>
 &middot; signed in as {{ login }} <form method="post" action="/_grokemu/logout" style="display:inline">
 <button type="submit">Sign out</button></form></p>
<h2>Containers</h2>
<table id="containers"><tr><th>Name</th><th>Status</th><th>Package</th><th>Image</th><th>Address</th><th>Last active</th><th>Details</th></tr>
{% for c in containers %}<tr><td>{{ dot(c.status) | safe }}{{ c.name }}</td><td>{{ c.status }}</td><td>{{ c.namespace }}</td>
<td>{{ c.dockerImage }}</td><td>{{ c.address or '' }}{{ ':' ~ c.port if c.port else '' }}</td><td>{{ c.lastActive or '' }}</td>
<td class="details">{{ c.errorMessage or '' }}{% for w in c.warnings %}<div>{{ w }}</div>{% endfor %}</td></tr>
{% else %}<tr><td colspan="7">No containers yet: publish a package with a dockerfiles/ folder.</td></tr>{% endfor %}
</table>
<h2>Images</h2>
<table id="images"><tr><th>Name</th><th>Status</th><th>Version</th><th>Image</th><th>Package</th></tr>
{% for i in images %}<tr><td>{{ dot(i.status) | safe }}{{ i.name }}</td><td>{{ i.status }}</td><td>{{ i.version }}</td>
<td>{{ i.dockerFullName }}</td><td>{{ i.namespace }}</td></tr>
{% else %}<tr><td colspan="5">No images yet.</td></tr>{% endfor %}
</table></body></html>"""


def _dot(status: str) -> str:
    # Datagrok's status dots: green running/ready, red error, blinking grey pending, none for stopped.
    if status in ("started", "ready", "checking"):
        return '<span class="dot green"></span>'
    if status == "error":
        return '<span class="dot red"></span>'
    if status.startswith("stopped"):
        return ""
    return '<span class="dot grey"></span>'


_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>grokemu: sign in</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222} .error{color:#a33}</style></head><body>
<h1>grokemu {{ version }}</h1>
<form method="post" action="/_grokemu/login">
 <label for="key">Developer key</label> <input id="key" name="key" type="password" autocomplete="current-password" autofocus>
 <button type="submit">Sign in</button>
</form>{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<p>The key is the one grokemu printed when it started (<code>--dev-key</code>; <code>admin</code> by default).</p>
</body></html>"""

AUTH_COOKIE = "auth"  # Datagrok's session cookie name: the JS client and fetchProxy calls from the page send it


def _page(html: str, status: int = 200) -> Response:
    resp = Response(html, status=status, mimetype="text/html")
    # no framing (clickjacking), no caching of entity data, no referrer leaking ids to other sites
    resp.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cache-Control"] = "no-store"
    # same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null` on the login form's POST
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


def _login_page(error: str = "", status: int = 200) -> Response:
    return _page(render_template_string(_LOGIN, version=__version__, error=error), status)


@blueprint.get("/")
def dashboard():
    if not g.login:
        return _login_page()
    c = ctx()
    return _page(render_template_string(
        _PAGE, version=__version__, api=c.settings.api_url, login=g.login,
        docker=bool(c.orchestrator and c.orchestrator.ping()), dot=_dot,
        containers=sorted((x.to_wire() for x in c.store.list_containers()), key=lambda x: x["name"]),
        images=sorted((x.to_wire() for x in c.store.list_images()), key=lambda x: x["name"])))


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
