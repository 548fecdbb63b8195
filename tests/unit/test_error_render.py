"""web/errors.py render, the one error renderer: the ApiError and OCI shapes, the error's own headers, the same
bytes as the Flask handlers answer; and the typed values that replaced private environ keys (ProxiedRequest, the
guard's Caller.package)."""
from __future__ import annotations

import json

from grokemu.domain.errors import Busy, GrokemuError, NotFound, RequestRefused, Unauthorized
from grokemu.domain.upstream import ProxiedRequest, proxied_request
from grokemu.web.errors import domain_error_response, render, render_unexpected


def test_an_api_error_has_the_one_shape():
    status, headers, body = render(Busy("Too many"), "/api/docker/containers/proxy/c/x")
    assert status == "503 SERVICE UNAVAILABLE"
    assert headers == [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("api-error", "true")]
    assert json.loads(body) == {"#type": "ApiError", "message": "Too many", "innerMessage": "", "code": 503,
                                "datagrok-error": "Too many"}


def test_under_v2_the_oci_envelope_with_the_errors_own_headers():
    e = Unauthorized("bad credentials")
    e.headers = {"WWW-Authenticate": 'Bearer realm="x"'}
    status, headers, body = render(e, "/v2/acme/repo/manifests/1")
    assert status == "401 UNAUTHORIZED" and ("WWW-Authenticate", 'Bearer realm="x"') in headers
    assert ("Docker-Distribution-API-Version", "registry/2.0") in headers and ("api-error", "true") not in headers
    assert json.loads(body) == {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials", "detail": None}]}


def test_a_parser_refusal_keeps_its_reason_phrase_and_an_unexpected_error_is_a_500():
    assert render(RequestRefused(431, "Request Header Fields Too Large: x", phrase="Request Header Fields Too Large"),
                  "")[0] == "431 Request Header Fields Too Large"
    status, _, body = render_unexpected(KeyError("k"), "/api/x")
    assert status == "500 INTERNAL SERVER ERROR"
    assert json.loads(body)["message"] == "Internal error: 'k'" and json.loads(body)["innerMessage"] == "KeyError"
    full = render_unexpected(OSError(28, "No space left on device"), "/api/x")
    assert full[0].startswith("507 ")


def test_the_flask_answer_is_the_rendered_one_byte_for_byte(app):
    for e, path in ((NotFound("no such container"), "/api/docker/containers/x"),
                    (GrokemuError("boom", "inner"), "/v2/x/blobs/y")):
        status, headers, body = render(e, path)
        with app.app_context():
            resp = domain_error_response(e, path)
        assert (resp.status, resp.headers.to_wsgi_list(), resp.get_data()) == (status, headers, body)


def test_a_proxied_request_is_read_back_only_through_its_accessor():
    environ: dict = {"REMOTE_ADDR": "127.0.0.1"}
    assert proxied_request(environ) is None
    request = ProxiedRequest(b"Host: x\r\nAccept: */*")
    assert request.carry(environ) is environ and proxied_request(environ) is request
    assert [k for k in environ if k.startswith("grokemu.")] == ["grokemu.proxied"]


def test_the_guard_hands_the_package_name_on_the_caller(app, ctx):
    guard = ctx.guard
    base = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/packages/dev/admin/acme", "HTTP_HOST": "localhost:8080",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    legacy = guard.check(dict(base))  # the grok CLI's `<key>/<name>` path
    assert (legacy.login, legacy.package) == ("admin", "acme")
    header = guard.check({**base, "PATH_INFO": "/api/packages/dev/acme", "HTTP_AUTHORIZATION": "Dev admin"})
    assert (header.login, header.package) == ("admin", "acme")
