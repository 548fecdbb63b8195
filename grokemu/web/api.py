"""The Datagrok API under /api: users, server info, package publish, docker images and containers.

Views parse the request, call one service and serialize (house rule 1). Wire facts are in docs/.
"""
from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from grokemu import __version__
from grokemu.domain.container_config import load_json
from grokemu.domain.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from grokemu.domain.query import apply_query, decode_text
from grokemu.services.service_logs import service_logs
from grokemu.web.context import ctx
from grokemu.web.guard import current_caller

blueprint = Blueprint("api", __name__, url_prefix="/api")

# Datagrok 1.28 is the first server the 6.7.5 CLI treats as current (docs/grok-publish.md R7 compares against 1.28).
SERVER_VERSION = "1.28.0"


# -- users --------------------------------------------------------------------------------------------------------
def _login_response(key: str | None):
    token, login = ctx().auth.login_with_dev_key(key)
    # `isSuccess` is checked by older test utils; the CLI reads `token`.
    return jsonify({"token": token, "isSuccess": True, "login": login})


@blueprint.post("/users/login/dev")
def login_dev():
    scheme, _, key = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "dev":
        raise Unauthorized("Send the developer key as 'Authorization: Dev <key>'")
    return _login_response(key.strip())


@blueprint.post("/users/login/dev/<key>")
def login_dev_legacy(key: str):
    return _login_response(key)


@blueprint.get("/users/current")
def current_user():
    login = g.login
    return jsonify({"#type": "User", "id": login, "login": login, "name": login, "friendlyName": login,
                    "firstName": login, "lastName": "", "email": f"{login}@localhost", "status": "active"})


@blueprint.get("/info/server")
def server_info():
    return jsonify({"Version": SERVER_VERSION, "version": SERVER_VERSION, "emulator": "grokemu",
                    "emulatorVersion": __version__})


# -- packages (grok publish) --------------------------------------------------------------------------------------
def _package_caller() -> tuple[str, str]:
    """(login, package name): the guard (web/guard.py) authenticated the caller by `Dev <key>`, a session token or
    the CLI's legacy `<key>/<name>` path, and took the package name out of the path."""
    caller = current_caller()
    if not caller.login or not caller.package:
        raise Unauthorized("Not authenticated: send 'Authorization: Dev <key>'")
    return caller.login, caller.package


@blueprint.get("/packages/dev/<path:rest>/timestamps")
def package_timestamps(rest: str):  # noqa: ARG001  (Flask passes the URL part; _package_caller reads the path)
    _, name = _package_caller()
    return jsonify(ctx().packages.timestamps(name))


def _flag(name: str) -> bool:
    return (request.args.get(name) or "false").lower() == "true"


@blueprint.post("/packages/dev/<path:rest>")
def publish_package(rest: str):  # noqa: ARG001  (Flask passes the URL part; _package_caller reads the path)
    login, name = _package_caller()
    packages = ctx().packages
    packages.check_name(name)  # before a byte of the body is read
    # The body goes to a temporary file (at most max_package_bytes, however it is framed), not into memory.
    with packages.spool(request.stream) as body:
        result = packages.publish(name, body, debug=_flag("debug"), rebuild=_flag("rebuild"),
                                  drop_db=_flag("dropDb"), suffix=request.args.get("suffix"), login=login)
    return jsonify(result.to_wire())


# -- docker images ------------------------------------------------------------------------------------------------
MAX_LOG_LINES = 1_000_000  # `limit` of a container's logs


def _list(entities):
    items = apply_query((e.to_wire() for e in entities), text=decode_text(request.args.get("text")),
                        limit=request.args.get("limit"), page=request.args.get("page"),
                        order=request.args.get("order"))
    return items


def _count(entities) -> Response:
    items = apply_query((e.to_wire() for e in entities), text=decode_text(request.args.get("text")))
    return Response(str(len(items)), mimetype="text/plain")


@blueprint.get("/docker/images")
def list_images():
    return jsonify(_list(ctx().store.list_images()))


@blueprint.get("/docker/images/count")
def count_images():
    return _count(ctx().store.list_images())


def _image(image_id: str):
    image = ctx().store.get_image(image_id)
    if image is None:
        raise NotFound(f"Docker image {image_id} not found")
    return image


@blueprint.get("/docker/images/<image_id>")
def get_image(image_id: str):
    return jsonify(_image(image_id).to_wire())


@blueprint.get("/docker/images/<image_id>/revalidate")
def revalidate_image(image_id: str):
    return jsonify(ctx().images.revalidate(image_id).to_wire())


@blueprint.get("/docker/images/<image_id>/rebuild")
def rebuild_image(image_id: str):
    """Older clients' name for revalidate (`grok_Dapi_DockerImagesDataSource_Rebuild`, docs/datagrok-api.md §0)."""
    return jsonify(ctx().images.revalidate(image_id).to_wire())


def _entity_body(kind: str) -> dict:
    limit = ctx().settings.max_api_body_bytes
    raw = request.stream.read(limit + 1)  # the guard checked Content-Length; this bounds any other framing
    if len(raw) > limit:
        raise PayloadTooLarge(f"Body is bigger than {limit} bytes (setting max_api_body_bytes)")
    body = load_json(raw, f"{kind} body") if raw.strip() else None
    if not isinstance(body, dict):
        raise BadRequest(f"Expected a {kind} entity as a JSON object")
    return body


@blueprint.post("/docker/images")
@blueprint.post("/docker/images/<image_id>")
def save_image(image_id: str | None = None):
    """`dockerImages.save(image)` posts the entity to `/docker/images/<id>` (datagrok-api 1.27.9, run against
    grokemu: docs/datagrok-api.md §0); the collection form is taken too."""
    body = _entity_body("DockerImage")
    image_id = image_id or body.get("id")
    if not isinstance(image_id, str) or not image_id:
        raise BadRequest("Saving a DockerImage needs its 'id' (images are created by publishing)")
    return jsonify(ctx().images.save(image_id, body).to_wire())


@blueprint.delete("/docker/images/<image_id>")
def delete_image(image_id: str):
    ctx().images.delete(image_id)
    return jsonify({"id": image_id, "isDeleted": True})


@blueprint.get("/docker/images/<image_name>/latest-compatible")
def latest_compatible(image_name: str):
    found = ctx().images.latest_compatible(image_name, request.args.get("version"), request.args.get("contentHash"))
    if found is None:
        # 404 tells the 6.7.5 CLI 'no fallback': it builds locally (docs/grok-publish.md §2.3).
        raise NotFound(f"No ready image {image_name} is compatible with version {request.args.get('version')}")
    return jsonify(found)


# -- docker containers --------------------------------------------------------------------------------------------
@blueprint.get("/docker/containers")
def list_containers():
    return jsonify(_list(ctx().store.list_containers()))


@blueprint.get("/docker/containers/count")
def count_containers():
    return _count(ctx().store.list_containers())


@blueprint.get("/docker/containers/<container_id>")
def get_container(container_id: str):
    container = ctx().store.get_container(container_id)
    if container is None:
        raise NotFound(f"Docker container {container_id} not found")
    return jsonify(container.to_wire())


def _bool_arg(name: str) -> bool:
    return (request.args.get(name) or "false").lower() == "true"


@blueprint.delete("/docker/containers/<container_id>")
def delete_container(container_id: str):
    spawner = ctx().spawner
    spawner.forget(spawner.get(container_id))
    return jsonify({"id": container_id, "isDeleted": True})


@blueprint.get("/docker/containers/<container_id>/run")
def run_container(container_id: str):
    return jsonify(ctx().spawner.run(container_id, g.login, await_start=_bool_arg("awaitStart")).to_wire())


@blueprint.get("/docker/containers/<container_id>/stop")
def stop_container(container_id: str):
    return jsonify(ctx().spawner.stop(container_id, await_stop=_bool_arg("awaitStop")).to_wire())


def _log_limit() -> int:
    """`limit` of a logs request: how many last lines, 10000 when not given."""
    try:
        limit = int(request.args.get("limit") or 10000)
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 0 <= limit <= MAX_LOG_LINES:
        raise BadRequest(f"limit must be between 0 and {MAX_LOG_LINES}")
    return limit


@blueprint.get("/docker/containers/<container_id>/logs")
def container_logs(container_id: str):
    limit = _log_limit()
    return Response(ctx().spawner.logs(container_id, limit), mimetype="text/plain")


@blueprint.post("/docker/containers")
@blueprint.post("/docker/containers/<container_id>")
def save_container(container_id: str | None = None):
    """`dockerContainers.save(c)` of an entity with an id posts to `/docker/containers/<id>` (datagrok-api 1.27.9,
    docs/datagrok-api.md §0)."""
    body = _entity_body("DockerContainer")
    if container_id is not None:
        if body.get("id") not in (None, container_id):
            raise BadRequest(f"The body's id {body.get('id')!r} is not the path's {container_id}")
        body["id"] = container_id
    return jsonify(ctx().spawner.save(body, g.login).to_wire())


# `docker.getAvailableServices()` / `docker.getServiceLogs(name, limit)` (docs/datagrok-api.md §0): grokemu's own
# parts as Datagrok's services, with their recent log records (services/service_logs.py).
_service_logs = service_logs()  # attached now, so records from startup on are kept


@blueprint.get("/docker/services")
def docker_services():
    return jsonify(service_logs().services())


@blueprint.get("/docker/services/<service>/logs")
def docker_service_logs(service: str):
    limit = _log_limit()
    # the Dart client json-decodes this answer: a JSON string of the log text
    return jsonify(service_logs().logs(service, limit))
