"""Docker Registry HTTP API v2 under /v2/, the token endpoint (`/token` as Datagrok's registry proxy serves it, and
`/api/docker/token` as Datagrok serves it) and the JWKS at `/api/docker/keys`.

Views parse, call RegistryService / TokenService, serialize. Every error is raised and rendered by web/errors.py as
the OCI envelope (this blueprint's routes, including /token, get the envelope: docker prints its `message`).
Wire facts and trap numbers: docs/registry.md.
"""
from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, jsonify, request, send_file

from grokemu.services.registry import MAX_MANIFEST_BYTES, UploadState, check_name, valid_name
from grokemu.services.tokens import BadCredentials, TokenService
from grokemu.web.context import ctx

blueprint = Blueprint("registry", __name__)

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_WRITE_ACTIONS = {"POST": "push", "PUT": "push", "PATCH": "push", "DELETE": "delete"}


# -- auth -------------------------------------------------------------------------------------------------------------

def _bearer(authorization: str | None) -> str | None:
    scheme, _, rest = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None  # Basic and the rest: docker never sends them to /v2 once it has seen the Bearer challenge
    return rest.strip() or None


def authorize(tokens: TokenService, environ: dict, endpoint: str | None, view_args: Mapping) -> None:
    """The registry's access rule for one /v2 request, called by the guard (web/guard.py) before the view runs and,
    for a request with a body, before the body is read: reads need no token, `GET /v2/` any valid token, writes a
    token granting push (delete for DELETE) on the repository."""
    path = environ.get("PATH_INFO") or ""
    if not (path == "/v2" or path.startswith("/v2/")):
        return
    repo = view_args.get("name")
    if endpoint == "registry.base":
        action = None
    elif endpoint in ("registry.cancel_upload", "registry.upload_status"):
        action = "push"  # an upload is part of pushing (distribution: every blob upload route needs push)
    else:
        action = _WRITE_ACTIONS.get(environ.get("REQUEST_METHOD", "GET"), "pull")
    if repo is not None:
        check_name(repo)  # NAME_INVALID before anything else: `..` and friends never reach auth or storage
    # Trap T9: the realm must be absolute and built from the Host the client used (docker keys credentials by it).
    host = environ.get("HTTP_HOST", "")
    tokens.authorize(_bearer(environ.get("HTTP_AUTHORIZATION")),
                     realm=f"{environ.get('wsgi.url_scheme', 'http')}://{host}/token", service=host, repo=repo,
                     action=action)


@blueprint.after_request
def _api_version(resp: Response) -> Response:
    if request.path == "/v2" or request.path.startswith("/v2/"):
        resp.headers.update(API_VERSION)
    return resp


def _login(user: str | None, password: str | None) -> str:
    login = ctx().auth.login_for_dev_key(password) or ctx().auth.login_for_dev_key(user)
    if login is None:
        raise BadCredentials("bad credentials")
    return login


@blueprint.get("/token")
@blueprint.get("/api/docker/token")
def token():
    """Basic auth with any user name and a dev key as the password (older CLIs sent the key as the user name)
    -> a token granting the requested scopes; no credentials -> an anonymous pull-only token."""
    auth = request.authorization
    login = _login(auth.username, auth.password) if auth is not None and auth.type == "basic" else None
    access = TokenService.grant(request.args.getlist("scope"), authenticated=login is not None, name_ok=valid_name)
    return jsonify(ctx().tokens.token_response(login or "", access, audience=request.args.get("service")))


@blueprint.post("/token")
@blueprint.post("/api/docker/token")
def token_oauth():
    """The OAuth2 form of the token request (distribution token spec `oauth.md`), which containerd-based clients
    try first: `grant_type=password` with username/password. No refresh tokens are issued (trap T10), so
    `grant_type=refresh_token` is refused and the client falls back to GET."""
    form = request.form
    if form.get("grant_type") != "password":
        raise BadCredentials("unsupported grant_type: only `password` (a dev key) is accepted")
    login = _login(form.get("username"), form.get("password"))
    access = TokenService.grant(form.get("scope", "").split(" "), authenticated=True, name_ok=valid_name)
    body = ctx().tokens.token_response(login, access, audience=form.get("service"))
    body["scope"] = form.get("scope", "")
    return jsonify(body)


@blueprint.get("/api/docker/keys")
def keys():
    return jsonify(ctx().tokens.jwks())


# -- base, catalog, tags ----------------------------------------------------------------------------------------------

@blueprint.get("/v2/", endpoint="base")
@blueprint.get("/v2", endpoint="base")
def base():
    return jsonify({})


def _page_args() -> tuple[int | None, str | None]:
    raw, n = request.args.get("n"), None
    if raw is not None:
        try:
            n = int(raw)
        except ValueError:
            n = -1  # PaginationInvalid from the service
    return n, request.args.get("last") or None


def _link(path: str, n: int | None, last: str | None) -> dict[str, str]:
    if last is None or n is None:
        return {}
    from urllib.parse import urlencode
    return {"Link": f'<{path}?{urlencode({"n": n, "last": last})}>; rel="next"'}


@blueprint.get("/v2/_catalog")
def catalog():
    n, last = _page_args()
    page = ctx().registry.catalog(n, last)
    resp = jsonify({"repositories": page.items})
    resp.headers.update(_link("/v2/_catalog", n, page.next_last))
    return resp


@blueprint.get("/v2/<path:name>/tags/list")
def tags_list(name: str):
    n, last = _page_args()
    page = ctx().registry.list_tags(name, n, last)
    resp = jsonify({"name": name, "tags": page.items})
    resp.headers.update(_link(f"/v2/{name}/tags/list", n, page.next_last))
    return resp


# -- manifests --------------------------------------------------------------------------------------------------------

@blueprint.get("/v2/<path:name>/manifests/<reference>")
def get_manifest(name: str, reference: str):
    # Flask answers HEAD through this GET view: Werkzeug sets Content-Length from the body and drops it (trap T7).
    m = ctx().registry.get_manifest(name, reference)
    resp = Response(m.body, status=200, content_type=m.media_type)
    resp.headers["Docker-Content-Digest"] = m.digest
    resp.headers["ETag"] = f'"{m.digest}"'
    return resp


@blueprint.put("/v2/<path:name>/manifests/<reference>")
def put_manifest(name: str, reference: str):
    body = _read_at_most(MAX_MANIFEST_BYTES + 1)  # the service refuses anything longer than the limit
    m = ctx().registry.put_manifest(name, reference, body, request.headers.get("Content-Type"))
    # Trap T3: docker fails the push without Docker-Content-Digest (sha256 of the exact body).
    return _empty(201, {"Location": f"/v2/{name}/manifests/{m.digest}", "Docker-Content-Digest": m.digest})


@blueprint.delete("/v2/<path:name>/manifests/<reference>")
def delete_manifest(name: str, reference: str):
    ctx().registry.delete_manifest(name, reference)
    return _empty(202)


# -- blobs ------------------------------------------------------------------------------------------------------------

@blueprint.get("/v2/<path:name>/blobs/<digest>")
def get_blob(name: str, digest: str):
    info = ctx().registry.stat_blob(name, digest)
    # send_file: Content-Length on HEAD (trap T7), 206 + Content-Range for `Range: bytes=N-` (trap T15), the stored
    # bytes with no Content-Encoding (trap T12), and wsgi.file_wrapper so waitress streams from the file.
    resp = send_file(info.path, mimetype="application/octet-stream", conditional=True, etag=info.digest,
                     max_age=None)
    resp.headers["Docker-Content-Digest"] = info.digest
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers.pop("Content-Disposition", None)  # the file name is the digest; nothing to suggest
    return resp


@blueprint.delete("/v2/<path:name>/blobs/<digest>")
def delete_blob(name: str, digest: str):
    ctx().registry.delete_blob(name, digest)
    return _empty(202)


# -- uploads ----------------------------------------------------------------------------------------------------------

def _body_length() -> int | None:
    """Content-Length when sent; None for a chunked body (waitress de-chunks and sets it anyway, trap T5/T6)."""
    return request.content_length


def _upload_response(state: UploadState, status: int | None = None) -> Response:
    if state.digest:
        return _empty(status or 201, {"Location": state.location, "Docker-Content-Digest": state.digest})
    assert state.upload_id is not None  # an open session always has its id
    return _empty(status or 202, {"Location": state.location, "Range": state.range,
                                  "Docker-Upload-UUID": state.upload_id})


@blueprint.post("/v2/<path:name>/blobs/uploads/")
@blueprint.post("/v2/<path:name>/blobs/uploads", endpoint="start_upload_noslash")
def start_upload(name: str):
    state = ctx().registry.start_upload(name, mount=request.args.get("mount") or None,
                                        from_repo=request.args.get("from") or None,
                                        digest=request.args.get("digest") or None,
                                        stream=request.stream, length=_body_length())
    return _upload_response(state)


@blueprint.get("/v2/<path:name>/blobs/uploads/<upload_id>")
def upload_status(name: str, upload_id: str):
    return _upload_response(ctx().registry.upload_status(name, upload_id), 204)


@blueprint.patch("/v2/<path:name>/blobs/uploads/<upload_id>")
def append_upload(name: str, upload_id: str):
    state = ctx().registry.append_upload(name, upload_id, request.stream, _body_length(),
                                         request.headers.get("Content-Range"))
    return _upload_response(state)


@blueprint.put("/v2/<path:name>/blobs/uploads/<upload_id>")
def finish_upload(name: str, upload_id: str):
    # `digest` from the query string only (trap T5): never request.values/form, which would consume the body.
    state = ctx().registry.finish_upload(name, upload_id, request.args.get("digest", ""), request.stream,
                                         _body_length())
    return _upload_response(state)


@blueprint.delete("/v2/<path:name>/blobs/uploads/<upload_id>")
def cancel_upload(name: str, upload_id: str):
    ctx().registry.cancel_upload(name, upload_id)
    return _empty(204)


def _read_at_most(limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit and (buf := request.stream.read(min(65536, limit - total))):
        chunks.append(buf)
        total += len(buf)
    return b"".join(chunks)


def _empty(status: int, headers: dict[str, str] | None = None) -> Response:
    resp = Response(b"", status=status)
    resp.headers.update(headers or {})
    resp.headers["Content-Length"] = "0"
    return resp
