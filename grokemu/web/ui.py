"""The dashboard at `/`: Datagrok's Docker management view in miniature (containers on top, images below)."""
from __future__ import annotations

from flask import Blueprint, render_template_string

from grokemu import __version__

blueprint = Blueprint("ui", __name__)

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>grokemu</title>
<style>
 body{font:14px system-ui,sans-serif;margin:2em;color:#222} h1{font-size:20px} h2{font-size:16px;margin-top:2em}
 table{border-collapse:collapse;width:100%} th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}
 .dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px}
 .green{background:#2a2} .red{background:#d22} .grey{background:#999;animation:blink 1s infinite}
 .details{color:#a33;font-size:12px;max-width:28em} @keyframes blink{50%{opacity:.2}} code{background:#f4f4f4;padding:1px 4px}
</style></head><body>
<h1>grokemu {{ version }}</h1>
<p>API <code>{{ api }}</code> &middot; Docker {{ 'reachable' if docker else 'unreachable' }} &middot;
 point the grok CLI here: <code>grok config add --alias grokemu --server {{ api }} --key {{ key }} --default</code></p>
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


@blueprint.get("/")
def dashboard():
    from grokemu.app import ctx

    c = ctx()
    return render_template_string(
        _PAGE, version=__version__, api=c.settings.api_url, key=next(iter(c.settings.dev_keys)),
        docker=bool(c.orchestrator and c.orchestrator.ping()), dot=_dot,
        containers=sorted((x.to_wire() for x in c.store.list_containers()), key=lambda x: x["name"]),
        images=sorted((x.to_wire() for x in c.store.list_images()), key=lambda x: x["name"]))
