"""HTTP to plugin containers (the HttpUpstream port of domain/upstream.py): one urllib3 pool per container port,
the caller's headers shaped for the container, the container's answer passed back as it is.

Wire facts (docs/datagrok-api.md §1.2):
- The container's answer comes back "as it is": status, headers and body bytes unchanged (Chemprop checks 201, Bio
  checks the exact Content-Type; gzip stays gzip).
- Request bodies are forwarded as bytes with the caller's Content-Type (MolTrack sends multipart FormData).

The container is only ever reached on 127.0.0.1 and the port the spawner published (docs/design.md decision 4): the
pools are keyed by that port and the request path is sent as a request target, never parsed for a host.
"""
from __future__ import annotations

import logging
import threading
from typing import BinaryIO, Callable, Iterable, Iterator

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.util import SKIP_HEADER
from urllib3.util.retry import Retry

from grokemu.domain.errors import GatewayTimeout
from grokemu.domain.model import DockerContainer
from grokemu.domain.upstream import Forwarded, UpstreamFailed, UpstreamRefused

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy Proxy-Connection; Host is set for the upstream hop.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "proxy-connection"})
# Never forwarded to a container: grokemu's credentials (the session token is the user's API key), the hop's own
# framing (Content-Length is re-sent from the body grokemu holds), and Expect (waitress already answered 100).
NOT_FORWARDED = HOP_BY_HOP | {"host", "authorization", "content-length", "expect"}
SMALL_BODY = 256 * 1024  # answers up to this size are read at once; bigger or unsized ones are streamed
STREAM_CHUNK = 1024 * 1024
UPLOAD_BLOCK = 1024 * 1024  # http.client's default 16 KiB blocks cost ~25% on a 1 GiB upload


# -- request / response shapes -------------------------------------------------------------------------------------
def forwarded_headers(environ: dict, upstream_host: str) -> dict[str, str]:
    """The caller's headers for the container, from the WSGI environ: hop-by-hop headers, Authorization and
    grokemu's `auth` cookie removed, Host set to the container, X-Forwarded-* added."""
    headers: dict[str, str] = {"Host": upstream_host}
    connection_named = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",") if t.strip()}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
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


class _StreamedBody:
    """The body of a big or unsized answer, read from the container as the caller takes it. Iteration ends at the
    container's EOF; close() (waitress calls it when the answer is done or the caller went away) gives the
    connection back to the pool only when the body was read to the end, then calls `release`."""

    def __init__(self, upstream: urllib3.BaseHTTPResponse, release: Callable[[], None]):
        self._upstream = upstream
        self._release = release
        self._done = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        try:
            data = self._upstream.read1(STREAM_CHUNK, decode_content=False)  # what arrived: streams stay live
        except (Urllib3Error, OSError) as e:
            # Headers are gone already: all that can be done is to cut the caller's connection (waitress does).
            log.warning("container answer broke off mid-body: %s", e)
            self.close()
            raise
        if not data:
            self._done = True
            raise StopIteration
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._done:
                self._upstream.close()  # unread bytes left: the connection cannot be reused
            self._upstream.release_conn()
        finally:
            self._release()


class _StaleConnectionRetry(Retry):
    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)  # a dropped connection, not a ReadTimeoutError


class HttpUpstreamPools:
    """HttpUpstream over urllib3: one pool per container, reused across requests, replaced when the container
    comes back on another port. `threads` sizes each pool; `timeout` is the read timeout (proxy_request_timeout)."""

    def __init__(self, threads: int, timeout: float):
        self._threads = threads
        self._timeout = timeout
        self._pools: dict[str, tuple[int, urllib3.HTTPConnectionPool]] = {}  # container id -> (port, pool)
        self._pools_lock = threading.Lock()
        # Idempotent body-less requests may be retried once when a kept-alive connection turns out dead (the
        # container closed it while it sat in the pool); a timeout is never replayed, nor anything with a body.
        self._retries = _StaleConnectionRetry(total=1, connect=1, read=1, status=0, other=0, redirect=False,
                                              allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}),
                                              raise_on_redirect=False, raise_on_status=False)

    def pool(self, c: DockerContainer) -> urllib3.HTTPConnectionPool:
        port = int(c.port)
        entry = self._pools.get(c.id)
        if entry is not None and entry[0] == port:
            return entry[1]
        with self._pools_lock:
            entry = self._pools.get(c.id)
            if entry is not None and entry[0] == port:
                return entry[1]
            pool = urllib3.HTTPConnectionPool(
                LOOPBACK, port, maxsize=max(self._threads, 4), block=False,
                timeout=urllib3.Timeout(connect=5.0, read=self._timeout), blocksize=UPLOAD_BLOCK)
            old = self._pools.get(c.id)
            self._pools[c.id] = (port, pool)
        if old is not None:  # the container was restarted on another port
            old[1].close()
        return pool

    def forget(self, cid: str) -> None:
        with self._pools_lock:
            entry = self._pools.pop(cid, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        with self._pools_lock:
            entries, self._pools = list(self._pools.values()), {}
        for _, pool in entries:
            pool.close()

    def send(self, c: DockerContainer, method: str, target: str, environ: dict, body: BinaryIO | None,
             length: int, release: Callable[[], None]) -> Forwarded:
        upstream = self._urlopen(c, method, target, environ, body, length)
        headers = response_headers(upstream.headers.items())
        declared = upstream.headers.get("Content-Length")
        if method == "HEAD" or upstream.status in (204, 304) or (
                declared is not None and declared.isdigit() and int(declared) <= SMALL_BODY):
            data = upstream.read(decode_content=False)
            upstream.release_conn()
            release()
            return Forwarded(upstream.status, upstream.reason, headers, [data] if data else [])
        return Forwarded(upstream.status, upstream.reason, headers, _StreamedBody(upstream, release))

    def _urlopen(self, c: DockerContainer, method: str, target: str, environ: dict, body: BinaryIO | None,
                 length: int) -> urllib3.BaseHTTPResponse:
        pool = self.pool(c)
        headers = forwarded_headers(environ, f"{LOOPBACK}:{c.port}")
        if body is not None:
            headers["Content-Length"] = str(length)
        for name in ("Accept-Encoding", "User-Agent"):  # http.client / urllib3 would add their own
            headers.setdefault(name, SKIP_HEADER)
        try:
            return pool.urlopen(method, target, body=body, headers=headers,
                                retries=self._retries if body is None else False, redirect=False,
                                assert_same_host=True, preload_content=False, decode_content=False,
                                release_conn=False, chunked=False)
        except NewConnectionError as e:
            raise UpstreamRefused(str(e)) from e
        except ReadTimeoutError:
            raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                 f"{self._timeout:g} s") from None
        except Urllib3Error as e:
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, NewConnectionError):
                raise UpstreamRefused(str(reason)) from reason
            if isinstance(reason, ReadTimeoutError):
                raise GatewayTimeout(f"Container {c.name} did not answer {method} {target} within "
                                     f"{self._timeout:g} s") from None
            raise UpstreamFailed(f"Container {c.name} did not answer on {LOOPBACK}:{c.port}: {reason}") from None
