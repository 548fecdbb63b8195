"""How a body becomes the bounded preview an inspector entry keeps (services/inspector/): at most PREVIEW bytes,
decoded first when the container compressed them (a chunked one is de-chunked by http1.dechunk_preview), shown as
text or hex."""
from __future__ import annotations

import zlib
from typing import Any

PREVIEW = 4096  # bytes of each body kept (after decoding a compressed one)
_DECODERS = frozenset({"gzip", "x-gzip", "deflate"})  # Content-Encodings decoded for the preview


def _preview(data: bytes) -> dict[str, Any]:
    """Text when the bytes are UTF-8 without control characters (a cut multi-byte character at the end is allowed),
    otherwise hex."""
    if not data:
        return {"encoding": None, "data": None}
    for cut in (0, 1, 2, 3):
        try:
            text = (data[:-cut] if cut else data).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not any(ch < " " and ch not in "\t\n\r" for ch in text):
            return {"encoding": "text", "data": text}
        break
    return {"encoding": "hex", "data": data.hex()}


def _decode(data: bytes) -> tuple[bytes | None, bool]:
    """The first PREVIEW bytes of a gzip / zlib / raw deflate body, from its first bytes; (None, False) when it does
    not decode. `complete`: the decoded preview is the whole body."""
    for wbits in (47, -15):  # 32 + 15: a gzip or zlib header, detected; then raw deflate (some servers send it)
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(data, PREVIEW)
            return out, d.eof
        except zlib.error:
            continue
    return None, False


def _bounded_json(value: Any, depth: int = 0) -> bytes:
    """JSON of a call's parameters or result with every long string cut to PREVIEW characters first, so a big
    dataframe parameter is never copied whole."""
    import json

    def cut(v: Any, d: int) -> Any:
        if isinstance(v, str):
            return v[:PREVIEW] + ("…" if len(v) > PREVIEW else "")
        if isinstance(v, (bytes, bytearray, memoryview)):
            return f"<{len(v)} bytes>"
        if d > 8:
            return "…"
        if isinstance(v, dict):
            return {str(k)[:200]: cut(x, d + 1) for k, x in list(v.items())[:100]}
        if isinstance(v, (list, tuple)):
            return [cut(x, d + 1) for x in list(v)[:100]]
        return v

    if value is None:
        return b""
    return json.dumps(cut(value, depth), default=str).encode()
