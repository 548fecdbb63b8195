"""What the request inspector (services/inspector/) must never keep: credentials. Applied when an entry is recorded,
so a secret never sits in the ring, the page, a copied curl line or a test's assertion message.

Three rules, each cheap enough for the relay loop (issue 20):
1. A header whose name says it carries a credential (Authorization, Cookie, Set-Cookie, X-User-Api-Key, anything
   naming a token, key, secret, session, password or auth) keeps its name; its value becomes `[redacted]`.
2. A query parameter named like that keeps its name; its value becomes `[redacted]`.
3. The caller's session token and every dev key are cut out wherever they appear: the path, any header value, a body
   preview, a WebSocket frame, an error message. A preview that ends inside one (it was cut at its size limit)
   loses that partial secret too. A dev key shorter than MIN_SECRET characters is not searched for (it would
   blank ordinary text, and is no secret).
"""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

REDACTED = "[redacted]"
_REDACTED_BYTES = REDACTED.encode()
MIN_SECRET = 3
PARTIAL = 4  # the shortest tail of a secret cut off at a preview's end that is removed
MAX_HEADERS = 100  # headers listed per entry
MAX_VALUE = 2048  # characters of one header value
# words in a header or query-parameter name that mark a credential (lower case; `-` and `_` are the same)
CREDENTIAL_WORDS = ("authorization", "cookie", "token", "secret", "session", "password", "passwd", "apikey", "api-key",
                    "dev-key", "pipe-key", "credential", "auth", "key", "jwt", "signature")
NOT_CREDENTIALS = frozenset({"www-authenticate", "keep-alive", "sec-websocket-accept", "sec-websocket-extensions",
                             "sec-websocket-version", "sec-websocket-protocol"})


def is_credential_name(name: str) -> bool:
    lower = name.strip().lower().replace("_", "-")
    if lower in NOT_CREDENTIALS:
        return False
    return any(word in lower for word in CREDENTIAL_WORDS)


class Redactor:
    """Redaction with the dev keys of this grokemu; the caller's token comes per request (`secrets`)."""

    def __init__(self, dev_keys: Iterable[str]):
        keys = sorted({k for k in dev_keys if len(k) >= MIN_SECRET}, key=len, reverse=True)
        self._keys = tuple(k.encode("utf-8") for k in keys)
        self._names: dict[str, bool] = {}

    def secrets(self, token: str | None) -> tuple[bytes, ...]:
        """The values to cut out of one request's entry: the caller's token, then the dev keys."""
        if token and len(token) >= MIN_SECRET:
            return (token.encode("utf-8"),) + self._keys
        return self._keys

    def _credential(self, name: str) -> bool:
        found = self._names.get(name)
        if found is None:
            found = is_credential_name(name)
            if len(self._names) < 4096:  # bounded against callers that invent names
                self._names[name] = found
        return found

    def headers(self, pairs: Iterable[tuple[str, str]], secrets: tuple[bytes, ...]) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for name, value in pairs:
            if len(out) >= MAX_HEADERS:
                out.append(("…", "more headers not listed"))
                break
            name = name[:200]
            if self._credential(name):
                out.append((name, REDACTED))
            else:
                out.append((name, self.text(value[:MAX_VALUE], secrets)))
        return tuple(out)

    def target(self, target: str, secrets: tuple[bytes, ...]) -> str:
        """A request target with credential query values replaced and every secret cut out."""
        path, sep, query = target.partition("?")
        if sep:
            parts = []
            for part in query.split("&"):
                name, eq, _value = part.partition("=")
                parts.append(f"{name}={REDACTED}" if eq and self._credential(unquote(name)) else part)
            target = f"{path}?{'&'.join(parts)}"
        return self.text(target, secrets)

    @staticmethod
    def text(value: str, secrets: tuple[bytes, ...]) -> str:
        for secret in secrets:
            s = secret.decode("utf-8", "replace")
            if s in value:
                value = value.replace(s, REDACTED)
        return value

    @staticmethod
    def scrub(data: bytes, secrets: tuple[bytes, ...], cut: bool = False) -> bytes:
        """`data` without any of `secrets`; `cut`: `data` is the start of something longer, so a secret's start at
        its end is removed as well."""
        for secret in secrets:
            if secret in data:
                data = data.replace(secret, _REDACTED_BYTES)
        if cut and data:
            for secret in secrets:
                for k in range(min(len(secret) - 1, len(data)), PARTIAL - 1, -1):
                    if data.endswith(secret[:k]):
                        data = data[:-k] + _REDACTED_BYTES
                        break
        return data
