"""HTTP to plugin containers (the HttpUpstream port of domain/upstream.py): one urllib3 pool per container port for
requests with a body, kept-alive raw sockets for body-less ones (the small-GET hot path, adapters/lean_upstream.py),
the caller's headers shaped for the container (adapters/upstream_headers.py), the container's answer passed back as
it is.

Wire facts (docs/datagrok-api.md §1.2):
- The container's answer comes back "as it is": status, headers and body bytes unchanged (Chemprop checks 201, Bio
  checks the exact Content-Type; gzip stays gzip).
- Request bodies are forwarded as bytes with the caller's Content-Type (MolTrack sends multipart FormData).

The container is only ever reached on 127.0.0.1 and the port the spawner published (docs/design.md decision 4), or,
with the `docker_network` setting, at the address Docker gave it on that network (`upstream_address`): the pools are
keyed by that address and port, and the request path is sent as a request target, never parsed for a host.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import IO

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, ReadTimeoutError
from urllib3.util import SKIP_HEADER

from grokemu.adapters.lean_upstream import SMALL_BODY, STREAM_CHUNK, LeanPool
from grokemu.adapters.upstream_headers import (
    bodyless_request_head,
    forwarded_headers,
    response_headers,
    upstream_address,
    upstream_port,
)
from grokemu.domain.errors import GatewayTimeout
from grokemu.domain.model import DockerContainer
from grokemu.domain.upstream import Forwarded, ProxiedRequest, UpstreamFailed, UpstreamRefused

log = logging.getLogger(__name__)

UPLOAD_BLOCK = 1024 * 1024  # http.client's default 16 KiB blocks cost ~25% on a 1 GiB upload


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


class HttpUpstreamPools:
    """HttpUpstream over urllib3: one pool per container, reused across requests, replaced when the container
    comes back on another port. `threads` sizes each pool; `timeout` is the read timeout (proxy_request_timeout)."""

    def __init__(self, threads: int, timeout: float):
        self._threads = threads
        self._timeout = timeout
        self._pools: dict[str, tuple[tuple[str, int], urllib3.HTTPConnectionPool]] = {}  # id -> ((addr, port), pool)
        self._pools_lock = threading.Lock()
        self._lean_pools: dict[str, LeanPool] = {}  # id -> kept-alive sockets for body-less requests

    def pool(self, c: DockerContainer) -> urllib3.HTTPConnectionPool:
        port = (upstream_address(c), upstream_port(c))  # the pool key: address and port
        entry = self._pools.get(c.id)
        if entry is not None and entry[0] == port:
            return entry[1]
        with self._pools_lock:
            entry = self._pools.get(c.id)
            if entry is not None and entry[0] == port:
                return entry[1]
            pool = urllib3.HTTPConnectionPool(
                port[0], port[1], maxsize=max(self._threads, 4), block=False,
                timeout=urllib3.Timeout(connect=5.0, read=self._timeout), blocksize=UPLOAD_BLOCK)
            old = self._pools.get(c.id)
            self._pools[c.id] = (port, pool)
        if old is not None:  # the container was restarted on another port
            old[1].close()
        return pool

    def kept_alive(self, cid: str, address: tuple[str, int]) -> LeanPool:
        entry = self._lean_pools.get(cid)
        if entry is not None and entry.key == address:
            return entry
        with self._pools_lock:
            entry = self._lean_pools.get(cid)
            if entry is None or entry.key != address:
                old, entry = entry, LeanPool(address, max(self._threads, 32), self._timeout)
                self._lean_pools[cid] = entry
                if old is not None:  # the container moved: its old sockets go
                    old.close()
        return entry

    def _lean(self, c: DockerContainer) -> LeanPool:
        return self.kept_alive(c.id, (upstream_address(c), upstream_port(c)))

    def request_head(self, c: DockerContainer, method: str, target: str, environ: dict,
                     identity: str | None = None,
                     relayed: ProxiedRequest | None = None) -> tuple[tuple[str, int], bytes]:
        address = (upstream_address(c), upstream_port(c))
        return address, bodyless_request_head(address, method, target, environ, identity, relayed)

    def forget(self, cid: str) -> None:
        with self._pools_lock:
            entry = self._pools.pop(cid, None)
            lean = self._lean_pools.pop(cid, None)
        if entry is not None:
            entry[1].close()
        if lean is not None:
            lean.close()

    def close(self) -> None:
        with self._pools_lock:
            entries, self._pools = list(self._pools.values()), {}
            leans, self._lean_pools = list(self._lean_pools.values()), {}
        for _, pool in entries:
            pool.close()
        for lean in leans:
            lean.close()

    def send(self, c: DockerContainer, method: str, target: str, environ: dict, body: IO[bytes] | None,
             length: int, release: Callable[[], None], identity: str | None = None) -> Forwarded:
        if body is None:  # the hot path (small GETs): kept-alive raw sockets, no urllib3 / http.client
            return self._lean(c).send(c, method, target, environ, release, identity)
        upstream = self._urlopen(c, method, target, environ, body, length, identity)
        headers = response_headers(upstream.headers.items())
        declared = upstream.headers.get("Content-Length")
        if method == "HEAD" or upstream.status in (204, 304) or (
                declared is not None and declared.isdigit() and int(declared) <= SMALL_BODY):
            data = upstream.read(decode_content=False)
            upstream.release_conn()
            release()
            return Forwarded(upstream.status, upstream.reason or "", headers, [data] if data else [])
        return Forwarded(upstream.status, upstream.reason or "", headers, _StreamedBody(upstream, release))

    def _urlopen(self, c: DockerContainer, method: str, target: str, environ: dict, body: IO[bytes] | None,
                 length: int, identity: str | None = None) -> urllib3.BaseHTTPResponse:
        pool = self.pool(c)
        headers = forwarded_headers(environ, f"{upstream_address(c)}:{c.port}", identity)
        if body is not None:
            headers["Content-Length"] = str(length)
        for name in ("Accept-Encoding", "User-Agent"):  # http.client / urllib3 would add their own
            headers.setdefault(name, SKIP_HEADER)
        try:
            return pool.urlopen(method, target, body=body, headers=headers,
                                retries=False, redirect=False,  # a body is never replayed (http1.retry_on_stale)
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
            raise UpstreamFailed(f"Container {c.name} did not answer on {upstream_address(c)}:{c.port}: "
                                 f"{reason}") from None


