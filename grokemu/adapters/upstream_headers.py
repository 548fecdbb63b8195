"""What grokemu sends to a plugin container and takes from it: the container's address, the caller's headers shaped
for it (credentials and hop-by-hop headers dropped, X-Forwarded-* and the caller's identity added), the head of a
body-less request built once, and the container's answer headers without the hop's own.

The container is only ever reached on 127.0.0.1 and the port the spawner published (docs/design.md decision 4), or,
with the `docker_network` setting, at the address Docker gave it on that network (`upstream_address`); the request
path is sent as a request target, never parsed for a host.
"""
from __future__ import annotations

from collections.abc import Iterable

from grokemu.domain.model import DockerContainer
from grokemu.domain.upstream import ProxiedRequest, UpstreamFailed
from grokemu.http1 import HOP_BY_HOP

LOOPBACK = "127.0.0.1"


def upstream_address(c: DockerContainer) -> str:
    """127.0.0.1 (the published port), or the container's address on the shared Docker network when grokemu runs
    with the `docker_network` setting (e.g. inside the compose stand, where 127.0.0.1 is grokemu's own container)."""
    return c.address or LOOPBACK


def upstream_port(c: DockerContainer) -> int:
    """The port the proxy connects to: a started container always has one."""
    if c.port is None:
        raise UpstreamFailed(f"Container {c.name} has no port: it is not started")
    return c.port


# Never forwarded to a container: grokemu's credentials (the session token is the user's API key), the hop's own
# framing (Content-Length is re-sent from the body grokemu holds), and Expect (waitress already answered 100).
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "content-length", "expect", "x-user-api-key"}
# The caller's identity for the container: datagrok-api's Node runtime reads the user's token from `Authorization`,
# the `auth` cookie or `x-user-api-key`; grokemu sends the caller's session token in the last one, never a dev key
# and never its own Authorization/cookie (docs/real-plugins.md, "Caller identity"). A caller's own x-user-api-key
# is replaced, so the container always sees who grokemu authenticated.
IDENTITY_HEADER = "X-User-Api-Key"
_HEADER_NAMES: dict[str, str] = {}  # environ key -> header name, as forwarded_headers spells it


# -- request / response shapes -------------------------------------------------------------------------------------
def forwarded_headers(environ: dict, upstream_host: str, identity: str | None = None) -> dict[str, str]:
    """The caller's headers for the container, from the WSGI environ: hop-by-hop headers, Authorization and
    grokemu's `auth` cookie removed, Host set to the container, X-Forwarded-* added, and the caller's session
    token in x-user-api-key when `identity` is given."""
    headers: dict[str, str] = {"Host": upstream_host}
    connection_named = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",") if t.strip()}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = _HEADER_NAMES.get(key)
            if name is None:
                name = key[5:].replace("_", "-").title()
                if len(_HEADER_NAMES) < 4096:  # the names seen, bounded against callers that invent names
                    _HEADER_NAMES[key] = name
        elif key == "CONTENT_TYPE" and value:
            name = "Content-Type"
        else:
            continue
        lower = name.lower()
        if lower in NOT_FORWARDED or lower in connection_named:
            continue
        if lower == "cookie":
            value = strip_auth_cookie(value)
            if not value:
                continue
        headers[name] = value
    client = environ.get("REMOTE_ADDR")
    if client:
        prior = environ.get("HTTP_X_FORWARDED_FOR")
        headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    if environ.get("HTTP_HOST"):
        headers.setdefault("X-Forwarded-Host", environ["HTTP_HOST"])
    headers.setdefault("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http"))
    if identity:
        headers[IDENTITY_HEADER] = identity
    return headers


def strip_auth_cookie(cookie_header: str) -> str:
    kept = [part.strip() for part in cookie_header.split(";")
            if part.strip() and part.split("=", 1)[0].strip() != "auth"]
    return "; ".join(kept)


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The container's headers, in order, repeated ones (Set-Cookie) kept, hop-by-hop ones dropped (waitress
    frames the answer itself and refuses hop-by-hop headers from an app)."""
    items = list(headers)
    named = {t.strip().lower() for k, v in items if k.lower() == "connection" for t in v.split(",")}
    return [(k, v) for k, v in items if k.lower() not in HOP_BY_HOP and k.lower() not in named]


_EXPECT_BODY = frozenset({"POST", "PUT", "PATCH"})


def bodyless_request_head(address: tuple[str, int], method: str, target: str, environ: dict,
                          identity: str | None, relayed: ProxiedRequest | None = None) -> bytes:
    """The head of a body-less request to the container at `address`, built once: the caller's headers shaped by
    forwarded_headers, and Content-Length: 0 where http.client would send it (an empty POST / PUT / PATCH).

    On a relayed connection `relayed` has the caller's header lines as they came (server/relay_loop.py); the shaped
    header lines depend on nothing else but the container's address, the identity and the caller's address, so they
    are kept and reused for the next request with the same lines."""
    raw = None if relayed is None else relayed.header_block
    key = None if raw is None else (raw, address, identity, environ.get("REMOTE_ADDR"), method in _EXPECT_BODY)
    block = _HEAD_BLOCKS.get(key) if key is not None else None
    if block is None:
        headers = forwarded_headers(environ, f"{address[0]}:{address[1]}", identity)
        if method in _EXPECT_BODY:
            headers["Content-Length"] = "0"
        block = ("".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode("latin-1")
        if key is not None:
            if len(_HEAD_BLOCKS) >= 1024:  # bounded: callers and containers come and go
                _HEAD_BLOCKS.clear()
            _HEAD_BLOCKS[key] = block
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + block


_HEAD_BLOCKS: dict[tuple, bytes] = {}
