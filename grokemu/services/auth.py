"""Datagrok's dev-key auth: a dev key logs in as a user and gets a session token; the token then comes raw in
`Authorization`, as `Bearer <token>`, or in the `auth` cookie (research/datagrok-docker-api.md §3.3)."""
from __future__ import annotations

import hmac
import secrets
from typing import Mapping

from grokemu.domain.clock import Clock
from grokemu.domain.errors import Unauthorized
from grokemu.domain.ports import Store


class AuthService:
    def __init__(self, dev_keys: Mapping[str, str], store: Store, clock: Clock):
        self._dev_keys = dict(dev_keys)
        self._store = store
        self._clock = clock
        # token -> login. Sessions are never revoked (a reset keeps them), so a hit stays true; it spares every API
        # request (each proxied one included) a database read.
        self._known: dict[str, str] = {}

    def login_for_dev_key(self, key: str | None) -> str | None:
        """The user a dev key belongs to, or None. Constant-time compare: the key is a password."""
        if not key:
            return None
        for known, login in self._dev_keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return login
        return None

    def login_with_dev_key(self, key: str | None) -> tuple[str, str]:
        """(token, login) for a valid dev key; Unauthorized otherwise."""
        login = self.login_for_dev_key(key)
        if login is None:
            raise Unauthorized("Invalid developer key")
        token = secrets.token_urlsafe(32)
        self._store.put_session(token, login, self._clock.now())
        return token, login

    def authenticate(self, token: str | None) -> str:
        """The login behind a session token; Unauthorized when missing or unknown."""
        if not token:
            raise Unauthorized("Not authenticated: send the session token in Authorization or the auth cookie")
        login = self._known.get(token)
        if login is None:
            login = self._store.get_session(token)
            if login is None:
                raise Unauthorized("Invalid or expired session token")
            if len(self._known) < 100_000:
                self._known[token] = login
        return login

    def token_for(self, login: str) -> str:
        """A fresh session token for a user (USER_API_KEY for containers that user starts)."""
        token = secrets.token_urlsafe(32)
        self._store.put_session(token, login, self._clock.now())
        return token


def token_from_headers(authorization: str | None, cookie_auth: str | None) -> str | None:
    """Accept `Authorization: <token>`, `Authorization: Bearer <token>`, or the `auth` cookie."""
    if authorization:
        value = authorization.strip()
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "bearer" and rest:
            return rest.strip()
        if scheme.lower() in ("dev", "basic"):
            return None
        return value
    return cookie_auth or None
