"""The rings, one per container, and the fetchProxy exchanges recorded into them (services/inspector/).

Recording shares the module with RequestInspector because it goes into the ring itself: its common case inlines
RequestInspector.add (an Entry would be one more object per request on the relay loop)."""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from itertools import count
from typing import TYPE_CHECKING, Any

from grokemu.domain.redaction import Redactor
from grokemu.domain.upstream import ProxiedRequest
from grokemu.http1 import dechunk_preview
from grokemu.services.inspector.entry import Entry
from grokemu.services.inspector.preview import _DECODERS, PREVIEW, _bounded_json, _decode, _preview
from grokemu.services.inspector.websocket import WebSocketTap

if TYPE_CHECKING:
    from grokemu.domain.clock import Clock

_mono = time.monotonic


class Recording:
    """One fetchProxy exchange being recorded: the proxy and the relay loop hand it the bytes as they pass. It keeps
    at most PREVIEW bytes each way and counts the rest; `finish` scrubs and decodes the previews, drops the secrets
    it was given and goes into the ring itself (an Entry would be one more object per request on the relay loop)."""

    __slots__ = ("_inspector", "seq", "time", "container", "method", "path", "status", "_t0", "_t1",
                 "cold_start_ms", "request_headers", "response_headers", "request_body", "request_size",
                 "response_body", "response_size", "response_decoded", "_encoding", "_chunked", "_cuts", "error",
                 "_secrets", "_token", "_finished")

    kind = "http"
    seq: int  # set when it goes into the ring
    _t1: float
    response_headers: tuple
    cold_start_ms: float | None
    response_decoded: str | None
    _encoding: str | None
    _chunked: bool
    error: str | None

    def __init__(self, inspector: RequestInspector, container: str, method: str, path: str,
                 request_headers: tuple, secrets: tuple[bytes, ...], token: str | None, now: float):
        # the fields every exchange sets; the rest (seq, _t1, response_headers, _encoding, _chunked, cold_start_ms,
        # response_decoded, error) are set when they happen and read with a default: fewer stores per request
        self._inspector = inspector
        self.time = now
        self.container = container
        self.method = method
        self.path = path
        self.status: int | None = None
        self._t0 = _mono()
        self.request_headers = request_headers
        self.request_body: bytes | bytearray = b""
        self.request_size = 0
        self.response_body: bytes | bytearray | None = b""  # None: an encoding not decoded (no preview)
        self.response_size = 0
        self._cuts = 0  # 1: the request preview is not the whole body, 2: the answer's
        self._secrets: tuple[bytes, ...] | None = secrets
        self._token = token
        self._finished = False

    # -- the request ----------------------------------------------------------------------------------------------
    def request_body_bytes(self, data: bytes) -> None:
        """Request body bytes as they go to the container."""
        self.request_size += len(data)
        have = len(self.request_body)
        if have < PREVIEW:
            if have:
                if not isinstance(self.request_body, bytearray):
                    self.request_body = bytearray(self.request_body)
                self.request_body += data[:PREVIEW - have]
            else:
                self.request_body = data[:PREVIEW]

    # -- the answer -----------------------------------------------------------------------------------------------
    def response_meta(self, headers: Iterable[tuple[str, str]], chunked: bool = False) -> tuple:
        """The redacted answer headers and what the preview needs of them (Content-Encoding; `chunked`: the body
        bytes come still chunk-framed). The relay loop keeps the result with its shaped head, so a repeated head is
        redacted once."""
        return self._inspector.response_meta(headers, chunked)

    def answered(self, status: int, meta: tuple, cold_start_ms: float | None = None) -> None:
        self.status = status
        headers, self._encoding, self._chunked, values = meta
        token = self._token
        if token and token in values and self._secrets:  # the container echoed the caller's token in a header
            headers = self._inspector.redactor.headers(headers, self._secrets)
        self.response_headers = headers
        if cold_start_ms is not None:
            self.cold_start_ms = round(cold_start_ms, 1)

    def body(self, data: bytes) -> None:
        """Answer body bytes as they pass to the caller (as the container framed them)."""
        self.response_size += len(data)
        preview = self.response_body
        if not preview:
            self.response_body = data if len(data) <= PREVIEW else data[:PREVIEW]
        elif len(preview) < PREVIEW:
            if not isinstance(preview, bytearray):
                preview = self.response_body = bytearray(preview)
            preview += data[:PREVIEW - len(preview)]

    def discard(self) -> None:
        """Nothing of the exchange happened here (the relay loop hands the request on, which records it)."""
        self._finished = True
        self._secrets = self._token = None
        self.request_body = self.response_body = b""

    def finish(self, status: int | None = None, error: str | None = None) -> None:
        """The exchange is over (status None with no error: it broke off). Called once; later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        self._t1 = _mono()
        secrets = self._secrets or ()
        self._secrets = self._token = None  # nothing secret stays on an entry in the ring
        if status is not None:
            self.status = status
        raw = self.response_body
        if (error is None and not self.request_body and type(raw) is bytes and self.response_size == len(raw)
                and getattr(self, "_encoding", None) is None and not getattr(self, "_chunked", False)
                and self.status is not None):
            # the relay loop's common case: a small, whole, plain answer and no request body
            inspector = self._inspector
            for secret in secrets:
                if secret in raw:
                    self.response_body = inspector.redactor.scrub(raw, secrets)
                    break
            # RequestInspector.add, inlined
            self.seq = seq = next(inspector._seq)
            ring = inspector._rings.get(self.container)
            if ring is None:
                inspector.add(self)
                return
            ring.append(self)
            inspector._versions[self.container] = seq
            return
        self._finish_slowly(secrets, error)

    def _finish_slowly(self, secrets: tuple[bytes, ...], error: str | None) -> None:
        redactor = self._inspector.redactor
        if error is not None:
            self.error = redactor.text(error, secrets)
        elif self.status is None:
            self.error = "the exchange broke off before an answer"
        request = self.request_body
        if request:
            cut = self.request_size > len(request)
            self._cuts |= cut
            self.request_body = redactor.scrub(bytes(request), secrets, cut)
        raw = self.response_body
        if raw:
            cut = self.response_size > len(raw)
            encoding = getattr(self, "_encoding", None)
            if getattr(self, "_chunked", False):  # the relay loop passes chunks through framed: the preview is of the data
                raw = dechunk_preview(bytes(raw))
            if encoding is None:
                if cut:
                    self._cuts |= 2
                if type(raw) is not bytes:
                    raw = bytes(raw)
                for secret in secrets:  # Redactor.scrub, inlined for the common small answer
                    if secret in raw:
                        raw = redactor.scrub(raw, secrets, cut)
                        break
                else:
                    if cut:
                        raw = redactor.scrub(raw, secrets, cut)
                self.response_body = raw
            elif encoding in _DECODERS:
                decoded, complete = _decode(bytes(raw))
                self.response_decoded = encoding
                if not complete:
                    self._cuts |= 2
                self.response_body = redactor.scrub(decoded, secrets, not complete) if decoded is not None \
                    else None
            else:  # br, zstd, ...: not decoded, so not shown (a secret could hide in it)
                self._cuts |= 2
                self.response_body = None
        self._inspector.add(self)

    def to_wire(self) -> dict[str, Any]:
        request = _preview(bytes(self.request_body))
        response = _preview(bytes(self.response_body)) if self.response_body is not None else \
            {"encoding": None, "data": None}
        return {
            "id": self.seq, "time": self.time, "container": self.container, "kind": "http",
            "method": self.method, "path": self.path, "status": self.status,
            "durationMs": round((self._t1 - self._t0) * 1000, 3),
            "coldStartMs": getattr(self, "cold_start_ms", None),
            "requestHeaders": [list(h) for h in self.request_headers],
            "responseHeaders": [list(h) for h in getattr(self, "response_headers", ())],
            "requestBody": request["data"], "requestBodyEncoding": request["encoding"],
            "requestSize": self.request_size,
            "responseBody": response["data"], "responseBodyEncoding": response["encoding"],
            "responseSize": self.response_size, "responseDecoded": getattr(self, "response_decoded", None),
            "truncated": bool(self._cuts), "error": getattr(self, "error", None),
        }


class RequestInspector:
    """The rings, one per container, and the redaction every entry goes through. Thread-safe: the relay loop,
    stream threads, WebSocket pumps and call threads add entries; the page and the API read them."""

    def __init__(self, size: int, dev_keys: Iterable[str], clock: Clock):
        self.size = max(0, int(size))
        self.enabled = self.size > 0
        self.redactor = Redactor(dev_keys)
        self._clock = clock
        self._rings: dict[str, deque[Entry | Recording]] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._seq = count(1)
        self._now = clock.now
        # worked out once, then looked up (the relay loop repeats them): the values to cut out per caller token,
        # redacted request targets and header blocks, answer heads
        self._secrets: dict[str | None, tuple[bytes, ...]] = {}
        self._relayed: dict[tuple, tuple] = {}  # (raw header block, target, token) -> (path, headers, secrets)
        self._request_heads: dict[tuple, tuple] = {}  # (raw header block, token) -> redacted headers
        self._response_heads: dict[tuple, tuple] = {}

    # -- recording ------------------------------------------------------------------------------------------------
    def begin(self, cid: str, method: str, target: str, environ: dict, token: str | None,
              relayed: ProxiedRequest | None = None) -> Recording | None:
        """A Recording for one request to the (known) container `cid`, or None when the inspector is off."""
        if not self.enabled:
            return None
        raw = None if relayed is None else relayed.header_block
        if raw is not None:  # the relay loop: one lookup for what its repeated requests share
            key = (raw, target, token)
            known = self._relayed.get(key)
            if known is None:
                secrets = self._secrets_of(token)
                known = (self.redactor.target(target, secrets),
                         self.request_headers(environ, token, secrets, raw), secrets)
                if len(self._relayed) >= 1024:  # bounded: paths and callers come and go
                    self._relayed.clear()
                self._relayed[key] = known
            return Recording(self, cid, method, known[0], known[1], known[2], token, self._now())
        secrets = self._secrets_of(token)
        return Recording(self, cid, method, self.redactor.target(target, secrets),
                         self.request_headers(environ, token, secrets), secrets, token, self._now())

    def _secrets_of(self, token: str | None) -> tuple[bytes, ...]:
        secrets = self._secrets.get(token)
        if secrets is not None:
            return secrets
        secrets = self.redactor.secrets(token)
        if len(self._secrets) >= 1024:
            self._secrets.clear()
        self._secrets[token] = secrets
        return secrets

    def websocket(self, cid: str, target: str, environ: dict, token: str | None) -> WebSocketTap | None:
        """A session's tap, its entry in the ring at once (open), or None when the inspector is off."""
        if not self.enabled:
            return None
        secrets = self.redactor.secrets(token)
        entry = Entry(next(self._seq), self._clock.now(), cid, "websocket", "GET",
                      self.redactor.target(target, secrets))
        entry.request_headers = self.request_headers(environ, token, secrets)
        entry.status = 101
        tap = WebSocketTap(self, entry, secrets)
        entry.ws = tap
        self.add(entry)
        return tap

    def call(self, cid: str, function: str, started: float, status: str, duration_ms: float,
             request: Any, response: Any, error: str | None, token: str | None) -> None:
        """A finished queue-function call (services/calls.py): kind `call`, method CALL, the function as path."""
        if not self.enabled:
            return
        secrets = self.redactor.secrets(token)
        entry = Entry(next(self._seq), started, cid, "call", "CALL", function)
        entry.status, entry.duration_ms = status, duration_ms
        for name, value in (("request", request), ("response", response)):
            data = _bounded_json(value)
            body = self.redactor.scrub(data[:PREVIEW], secrets, cut=len(data) > PREVIEW)
            if name == "request":
                entry.request_body, entry.request_size = body, len(data)
            else:
                entry.response_body, entry.response_size = body, len(data)
        if error:
            entry.error = self.redactor.text(error, secrets)
        self.add(entry)

    def request_headers(self, environ: dict, token: str | None, secrets: tuple[bytes, ...],
                        raw: bytes | None = None) -> tuple:
        """The caller's headers, redacted: worked out once per header block `raw` the relay loop saw (its header
        lines as they came, ProxiedRequest.header_block), from the WSGI environ otherwise."""
        if raw is not None:
            key = (raw, token)
            found = self._request_heads.get(key)
            if found is None:
                pairs = []
                for line in raw.split(b"\r\n"):
                    name, sep, value = line.partition(b":")
                    if sep:
                        pairs.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
                found = self.redactor.headers(pairs, secrets)
                if len(self._request_heads) >= 1024:  # bounded: callers come and go
                    self._request_heads.clear()
                self._request_heads[key] = found
            return found
        pairs = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                pairs.append((key[5:].replace("_", "-").title(), str(value)))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                pairs.append((key.replace("_", "-").title(), str(value)))
        return self.redactor.headers(pairs, secrets)

    def response_meta(self, headers: Iterable[tuple[str, str]], chunked: bool = False) -> tuple:
        """(redacted headers, Content-Encoding or None, chunked) of an answer head. Dev keys are cut out of the
        values here too; a caller's token in an answer header (a container echoing it) is not known here, so
        header values naming no credential are kept, and the token search runs on the bodies."""
        pairs = tuple(headers)
        key = (pairs, chunked)
        found = self._response_heads.get(key)
        if found is None:
            encoding = None
            for name, value in pairs:
                if name.lower() == "content-encoding" and value.strip().lower() not in ("", "identity"):
                    encoding = value.strip().lower()
            redacted = self.redactor.headers(pairs, self.redactor.secrets(None))
            found = (redacted, encoding, chunked, "\n".join(v for _, v in redacted))
            if len(self._response_heads) >= 1024:
                self._response_heads.clear()
            self._response_heads[key] = found
        return found

    def add(self, entry: Entry | Recording) -> None:
        entry.seq = seq = next(self._seq)
        cid = entry.container
        ring = self._rings.get(cid)
        if ring is None:
            with self._lock:
                ring = self._rings.setdefault(cid, deque(maxlen=self.size))
        ring.append(entry)
        self._versions[cid] = seq

    def touched(self, cid: str) -> None:
        """An entry already in the ring changed (a WebSocket frame or close): live readers look again."""
        self._versions[cid] = next(self._seq)

    # -- reading --------------------------------------------------------------------------------------------------
    def entries(self, cid: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first, at most `limit`."""
        ring = self._rings.get(cid)
        if not ring:
            return []
        items = list(ring)
        items.reverse()
        return [e.to_wire() for e in items[:limit]]

    def version(self, cid: str) -> int:
        """Changes whenever the container's ring does (for the live feed)."""
        return self._versions.get(cid, 0)

    def forget(self, cid: str) -> None:
        with self._lock:
            self._rings.pop(cid, None)
            self._versions.pop(cid, None)

    def reset(self) -> None:
        with self._lock:
            self._rings.clear()
            self._versions.clear()
            self._request_heads.clear()
            self._response_heads.clear()
            self._secrets.clear()
            self._relayed.clear()
